// Microbenchmarks of the CPU kernels at K-Adapter's shapes, and of whole steps.
//
//   build/bench/bench_kernels [--benchmark_filter=REGEX]
//
// Each benchmark reports GFLOP/s for its matrix products (counter "GFLOPS", counted as
// 2·m·n·k per product) next to the time, so kernels can be compared with the GEMM ceiling
// measured by BM_Gemm in the same run.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kadapter/kadapter.hpp"

using namespace kadapter;

namespace {

std::vector<float> random_vector(std::size_t n, std::uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

void set_flops(benchmark::State& state, double flops_per_iteration) {
  state.counters["GFLOPS"] = benchmark::Counter(flops_per_iteration * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

// y (M, N) = x (M, K) · W^T, W (N, K): the shape of every Linear layer.
void BM_Gemm(benchmark::State& state) {
  const index_t m = state.range(0), n = state.range(1), k = state.range(2);
  auto x = random_vector(static_cast<std::size_t>(m * k), 1), w = random_vector(static_cast<std::size_t>(n * k), 2);
  std::vector<float> y(static_cast<std::size_t>(m * n));
  LinearParams<float> p;
  p.weight = MatrixView<const float>(w.data(), n, k);
  for (auto _ : state) {
    linear_forward(Cpu{}, MatrixView<float>(y.data(), m, n), MatrixView<const float>(x.data(), m, k), p);
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(state, 2.0 * m * n * k);
}
BENCHMARK(BM_Gemm)->Args({1024, 768, 768})->Args({1024, 3072, 768})->Args({1024, 768, 3072})
    ->Args({1024, 1024, 1024})->Args({2048, 2048, 2048})->Unit(benchmark::kMillisecond);

// The same product with Eigen's own (multi-threaded) product, for comparison with the
// backend's kernel (include/kadapter/backend/eigen/gemm.hpp).
void BM_GemmEigen(benchmark::State& state) {
  const index_t m = state.range(0), n = state.range(1), k = state.range(2);
  auto x = random_vector(static_cast<std::size_t>(m * k), 1), w = random_vector(static_cast<std::size_t>(n * k), 2);
  std::vector<float> y(static_cast<std::size_t>(m * n));
  using Mat = detail::RowMajorMatrix<float>;
  Eigen::Map<const Mat> xm(x.data(), m, k), wm(w.data(), n, k);
  Eigen::Map<Mat> ym(y.data(), m, n);
  for (auto _ : state) {
    ym.noalias() = xm * wm.transpose();
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(state, 2.0 * m * n * k);
}
BENCHMARK(BM_GemmEigen)->Args({1024, 768, 768})->Args({1024, 3072, 768})->Args({1024, 768, 3072})
    ->Args({2048, 2048, 2048})->Unit(benchmark::kMillisecond);

void BM_LayerNorm(benchmark::State& state) {
  const index_t n = state.range(0), h = state.range(1);
  auto x = random_vector(static_cast<std::size_t>(n * h), 3), g = random_vector(h, 4), b = random_vector(h, 5);
  std::vector<float> y(x.size());
  LayerNormParams<float> p{VectorView<const float>(g.data(), h), VectorView<const float>(b.data(), h)};
  for (auto _ : state) {
    add_layernorm_forward(Cpu{}, MatrixView<float>(y.data(), n, h), nullptr,
                          MatrixView<const float>(x.data(), n, h), MatrixView<const float>(x.data(), n, h), p, 1e-5f);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * n * h * 3 * static_cast<std::int64_t>(sizeof(float)));
}
BENCHMARK(BM_LayerNorm)->Args({1024, 768})->Args({1024, 1024})->Unit(benchmark::kMicrosecond);

void BM_Gelu(benchmark::State& state) {
  const index_t n = state.range(0);
  auto x = random_vector(static_cast<std::size_t>(n), 6);
  auto y = x;
  for (auto _ : state) {
    y = x;
    gelu_inplace(Cpu{}, std::span<float>(y));
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_Gelu)->Arg(1024 * 3072)->Unit(benchmark::kMillisecond);

// Multi-head attention core (scores, softmax, context) over projected Q, K, V.
// Row softmax of the attention scores: B·heads·T rows of T (one attention layer's worth).
void BM_Softmax(benchmark::State& state) {
  const index_t rows = state.range(0), cols = state.range(1);
  auto x0 = random_vector(static_cast<std::size_t>(rows * cols), 9, 3.0f);
  std::vector<float> x(x0.size());
  for (auto _ : state) {
    std::copy(x0.begin(), x0.end(), x.begin());
    softmax_rows(MatrixView<float>(x.data(), rows, cols));
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * rows * cols);
}
BENCHMARK(BM_Softmax)->Args({16 * 12 * 64, 64})->Args({16 * 12 * 128, 128})->Unit(benchmark::kMicrosecond);

void BM_Attention(benchmark::State& state) {
  const index_t b = state.range(0), t = state.range(1), h = state.range(2), a = state.range(3);
  const index_t n = b * t;
  auto q = random_vector(static_cast<std::size_t>(n * h), 7), k = random_vector(static_cast<std::size_t>(n * h), 8),
       v = random_vector(static_cast<std::size_t>(n * h), 9);
  std::vector<float> ctx(q.size()), scratch(attention_scratch(t));
  for (auto _ : state) {
    attention_forward(Cpu{}, MatrixView<float>(ctx.data(), n, h), nullptr, MatrixView<const float>(q.data(), n, h),
                      MatrixView<const float>(k.data(), n, h), MatrixView<const float>(v.data(), n, h),
                      std::span<const float>(), b, t, a, scratch.data());
    benchmark::DoNotOptimize(ctx.data());
  }
  set_flops(state, 2.0 * 2.0 * static_cast<double>(b) * t * t * h);
}
BENCHMARK(BM_Attention)->Args({16, 64, 768, 12})->Unit(benchmark::kMillisecond);

// One adapter transformer layer (width 768, FFN 3072, 12 heads), forward and backward.
void BM_AdapterLayerStep(benchmark::State& state) {
  const index_t b = 16, t = 64, h = 768, f = 3072, a = 12, n = b * t;
  ParameterStore<float> store;
  EncoderLayerGrads<float> g;
  EncoderLayerParams<float> p = store.build([&](ParamLayout<float>& lay) {
    return lay.encoder_layer("layer.", h, f, &g);
  });
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.03f);
  for (const auto& s : store.table())  // tensor by tensor: the padding between them stays zero
    for (index_t i = 0; i < s.size(); ++i) s.data[i] = normal(rng);
  const LayerDims d{b, t, h, a, f, 1e-5};
  auto x = random_vector(static_cast<std::size_t>(n * h), 10), dy = random_vector(static_cast<std::size_t>(n * h), 11);
  std::vector<float> y(x.size()), dx(x.size());
  Workspace<float> ws;
  ws.reserve(EncoderLayerCache<float>::elements(d) + encoder_layer_forward_scratch<float>(d, true) +
             encoder_layer_backward_scratch<float>(d));
  for (auto _ : state) {
    ws.reset();
    EncoderLayerCache<float> cache;
    cache.bind(ws, d);
    const std::size_t mark = ws.used();
    encoder_layer_forward(Cpu{}, MatrixView<float>(y.data(), n, h), &cache, MatrixView<const float>(x.data(), n, h),
                          std::span<const float>(), p, d, nullptr, ws);
    ws.rewind(mark);
    encoder_layer_backward(Cpu{}, MatrixView<float>(dx.data(), n, h), GradientMode::Overwrite, &g,
                           MatrixView<const float>(dy.data(), n, h), cache, p, d, nullptr, ws);
    benchmark::DoNotOptimize(dx.data());
  }
  // forward 4·N·H·H + 2·N·H·F (x2 flops) + attention; backward twice the products
  const double linear = 2.0 * n * (4.0 * h * h + 2.0 * h * f);
  const double attention = 4.0 * b * t * t * h;
  set_flops(state, 3.0 * (linear + attention));
}
BENCHMARK(BM_AdapterLayerStep)->Unit(benchmark::kMillisecond)->MinTime(2.0);

// The frozen encoder's forward pass (RoBERTa-base sizes, random weights), batch 16 x 64.
void BM_EncoderForward(benchmark::State& state) {
  FrozenEncoder<roberta_base, float> enc;
  std::mt19937_64 rng(2);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (auto& x : enc.parameters()) x = normal(rng);
  const index_t b = 16, t = 64;
  std::vector<std::int64_t> ids(static_cast<std::size_t>(b * t), 5), mask(ids.size(), 1);
  HiddenStates<float> states(roberta_base.layers, {0, 5, 11, 12});
  for (auto _ : state) {
    enc.forward(states, TokenBatch{b, t, ids, mask, {}});
    benchmark::DoNotOptimize(states[12].data());
  }
  const double n = static_cast<double>(b * t), h = 768, f = 3072;
  set_flops(state, roberta_base.layers * (2.0 * n * (4 * h * h + 2 * h * f) + 4.0 * b * t * t * h));
}
BENCHMARK(BM_EncoderForward)->Unit(benchmark::kMillisecond)->MinTime(2.0);

// A whole factual-adapter training step of the `base` configuration: RoBERTa-base hidden
// states (H = 768, random), adapters at 0, 5, 11 with N = 2 layers of width 768, batch 16 x 64.
void BM_FacTrainingStep(benchmark::State& state) {
  const index_t b = 16, t = 64, h = 768, L = 12;
  const AdapterConfig ac{h, 768, 2, 12, 3072, 0, 3, {0, 5, 11}, 1e-5};
  TaskConfig tc;
  tc.task = Task::fac;
  tc.num_labels = 430;
  tc.adapters = {"fac"};
  TaskModel<dynamic_adapter, float> model(tc, ac);
  init_parameters(model.parameters(), 1);
  TrainConfig cfg;
  cfg.schedule = WarmupLinearSchedule{0, 1000000};
  Trainer<dynamic_adapter, float> trainer(model, cfg);
  HiddenStates<float> states(L, {0, 5, 11, 12});
  states.prepare(b, t, h);
  for (index_t k : states.kept()) {
    auto v = random_vector(static_cast<std::size_t>(b * t * h), 20 + static_cast<std::uint64_t>(k));
    std::copy(v.begin(), v.end(), states.slot(k));
  }
  std::vector<std::int64_t> mask(static_cast<std::size_t>(b * t), 1), labels(static_cast<std::size_t>(b));
  std::vector<float> subj(mask.size(), 0.0f), obj(mask.size(), 0.0f);
  for (index_t i = 0; i < b; ++i) {
    labels[i] = i % 430;
    subj[i * t + 1] = 1.0f;
    obj[i * t + 5] = 1.0f;
  }
  TaskBatch<float> batch{b, t, &states, L, mask, labels, {}, subj, obj, {}};
  for (auto _ : state) {
    auto r = trainer.step(std::span<const TaskBatch<float>>(&batch, 1));
    benchmark::DoNotOptimize(r.loss);
  }
  const double n = static_cast<double>(b * t), H = 768, F = 3072;
  const double per_layer = 2.0 * n * (4 * H * H + 2 * H * F) + 4.0 * b * t * t * H;
  const double projections = 2.0 * n * 2 * H * 768;  // down and up
  const double head = 2.0 * n * 2 * H * H;            // com_dense
  const double forward = 3 * (2 * per_layer + projections) + head;
  set_flops(state, 3.0 * forward);
}
BENCHMARK(BM_FacTrainingStep)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
