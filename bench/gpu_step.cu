// One K-Adapter training step on the GPU, timed: the factual-adapter pre-training step of
// bench_train_step (adapters, com_dense and the head, forward and backward, clipping, AdamW)
// on random backbone states, with the Cuda backend.
//
//   bench_gpu_step --config small|base|large [--steps N] [--warmup N] [--tf32]
//
// The adapters are the library's adapter_forward / adapter_backward templates with B = Cuda;
// the head is the same sequence of kernel calls TaskModel makes for Task::fac (TaskModel
// itself is not yet generic over the backend). First it measures the card's fp32 GEMM
// ceiling: cuBLASLt at the three shapes of the base model's linear layers (1024 rows) and
// at 8192^3, best of 20 each. Prints one line per step and the summary lines
//   gpu device="NAME" ceiling_gflops=... ceiling_8192_gflops=...
//   kadapter_gpu median_ms=... tokens_per_s=... gflop=... gflops=... ceiling_fraction=...
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kadapter/kadapter.hpp"
#include "kadapter/kadapter_cuda.hpp"
#include "step_config.hpp"

using namespace kadapter;
using cuda::DeviceBuffer;

namespace {

/// Best GFLOP/s of cuBLASLt's fp32 y (m, n) = x (m, k) · W^T over @p runs timed products.
double gemm_gflops(index_t m, index_t n, index_t k, int runs) {
  DeviceBuffer<float> x(static_cast<std::size_t>(m * k)), w(static_cast<std::size_t>(n * k)), y(static_cast<std::size_t>(m * n));
  std::vector<float> host(std::max(x.size(), w.size()));
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (float& v : host) v = normal(rng);
  x.upload(std::span<const float>(host.data(), x.size()));
  w.upload(std::span<const float>(host.data(), w.size()));
  LinearParams<float> p;
  p.weight = MatrixView<const float>(w.data(), n, k);
  cudaEvent_t start, stop;
  cuda::check(cudaEventCreate(&start), "cudaEventCreate");
  cuda::check(cudaEventCreate(&stop), "cudaEventCreate");
  const cudaStream_t s = cuda::context().stream();
  double best = 0;
  for (int r = 0; r <= runs; ++r) {
    cuda::check(cudaEventRecord(start, s), "cudaEventRecord");
    linear_forward(Cuda{}, MatrixView<float>(y.data(), m, n), MatrixView<const float>(x.data(), m, k), p);
    cuda::check(cudaEventRecord(stop, s), "cudaEventRecord");
    cuda::check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    cuda::check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    if (r > 0) best = std::max(best, 2.0 * static_cast<double>(m) * n * k / (ms * 1e-3) * 1e-9);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return best;
}

std::vector<float> normal_values(std::size_t n, std::uint64_t seed) {
  std::vector<float> v(n);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : v) x = normal(rng);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string name = "base";
    int steps = 20, warmup = 3;
    bool tf32 = false;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw Error(a + " needs a value");
        return argv[++i];
      };
      if (a == "--config") name = value();
      else if (a == "--steps") steps = std::max(1, std::atoi(value().c_str()));
      else if (a == "--warmup") warmup = std::max(0, std::atoi(value().c_str()));
      else if (a == "--tf32") tf32 = true;
      else throw Error("unknown option " + a + " (expected --config, --steps, --warmup, --tf32)");
    }
    if (!cuda::device_available()) {
      std::fprintf(stderr, "bench_gpu_step: no CUDA device\n");
      return 2;
    }
    cudaDeviceProp prop{};
    cuda::check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    cuda::context().allow_tf32 = tf32;

    const double ceiling = std::max({gemm_gflops(1024, 768, 768, 20), gemm_gflops(1024, 3072, 768, 20),
                                     gemm_gflops(1024, 768, 3072, 20)});
    const double ceiling_big = gemm_gflops(8192, 8192, 8192, 5);
    std::printf("gpu device=\"%s\" precision=%s ceiling_gflops=%.0f ceiling_8192_gflops=%.0f\n", prop.name,
                tf32 ? "tf32" : "fp32", ceiling, ceiling_big);

    const bench::BenchConfig c = bench::config_named(name);
    const index_t B = c.batch, S = c.seq, N = B * S, H = c.hidden, R = bench::kRelations;
    AdapterConfig ac{c.hidden, c.adapter, 2, c.heads, c.ffn, 0, static_cast<index_t>(c.plug.size()), {}, 1e-5};
    for (std::size_t k = 0; k < c.plug.size(); ++k) ac.plug_in[k] = c.plug[k];
    const LayerDims inner{B, S, ac.size, ac.heads, ac.ffn, ac.layer_norm_eps};

    // Parameters: declared on the host (names, initial values, the AdamW mask), then bound
    // to device memory in the same order.
    const auto declare = [&](ParamLayout<float>& l) {
      struct Views {
        AdapterParams<float> adapter;
        LinearParams<float> com_dense, dense, out_proj;
        LinearGrads<float> com_dense_grad, dense_grad, out_proj_grad;
      } v;
      v.adapter = declare_adapter(l, "adapter.", ac, true);
      v.com_dense = l.linear("com_dense", H, 2 * H, &v.com_dense_grad);
      v.dense = l.linear("dense", H, 2 * H, &v.dense_grad);
      v.out_proj = l.linear("out_proj", R, H, &v.out_proj_grad);
      return v;
    };
    ParameterStore<float> host;
    host.build(declare);
    init_parameters(host, 1);
    const std::size_t count = host.values().size();
    DeviceBuffer<float> values{std::span<const float>(host.values())}, grads(count), m(count), v(count);
    cuda::check(cudaMemset(m.data(), 0, count * sizeof(float)), "cudaMemset");
    cuda::check(cudaMemset(v.data(), 0, count * sizeof(float)), "cudaMemset");
    const std::vector<std::uint8_t> mask_host = cuda::adamw_mask(host);
    DeviceBuffer<std::uint8_t> mask{std::span<const std::uint8_t>(mask_host)};
    ParamLayout<float> layout(values.data(), grads.data(), nullptr);
    const auto P = declare(layout);

    // The backbone's states at the plug-in points and the last one, and the head's inputs.
    std::vector<DeviceBuffer<float>> states(static_cast<std::size_t>(c.layers + 1));
    for (index_t p : c.plug) states[static_cast<std::size_t>(p)] = DeviceBuffer<float>(std::span<const float>(normal_values(static_cast<std::size_t>(N * H), 7 + p)));
    states[static_cast<std::size_t>(c.layers)] = DeviceBuffer<float>(std::span<const float>(normal_values(static_cast<std::size_t>(N * H), 99)));
    std::vector<float> subj(static_cast<std::size_t>(N), 0.0f), obj(static_cast<std::size_t>(N), 0.0f);
    std::vector<std::int64_t> labels(static_cast<std::size_t>(B));
    for (index_t b = 0; b < B; ++b) {
      labels[static_cast<std::size_t>(b)] = (b * 37) % R;
      subj[static_cast<std::size_t>(b * S + 1)] = 1.0f;
      obj[static_cast<std::size_t>(b * S + 7)] = 1.0f;
    }
    DeviceBuffer<float> d_subj{std::span<const float>(subj)}, d_obj{std::span<const float>(obj)};
    const auto hidden = [&](index_t p) { return MatrixView<const float>(states[static_cast<std::size_t>(p)].data(), N, H); };
    const MatrixView<const float> h_last = hidden(c.layers);

    // Activations and scratch: device workspaces sized once.
    Workspace<float, Cuda> acts, scratch;
    acts.reserve(AdapterCache<float>::elements(ac, inner, true) + Workspace<float>::padded(static_cast<std::size_t>(N * H)) * 2 +
                 8 * Workspace<float>::padded(static_cast<std::size_t>(B * std::max(H, R))));
    // The head's gradients stay taken while adapter_backward takes its own scratch.
    scratch.reserve(adapter_scratch<float, Cuda>(ac, inner, true) + 2 * Workspace<float>::padded(static_cast<std::size_t>(N * H)) +
                    3 * Workspace<float>::padded(static_cast<std::size_t>(B * H)));
    AdamWConfig adam;
    adam.lr = 5e-5;

    const double flop = bench::step_flops(c, R);
    std::vector<double> times;
    for (int step = 0; step < warmup + steps; ++step) {
      cuda::context().synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      const auto drop = [&](std::uint64_t site) { return Dropout{0.1f, 42, dropout_stream(static_cast<std::uint64_t>(step), 0, site)}; };
      const auto adapter_drops = [&](index_t k, index_t j) {
        const auto base = static_cast<std::uint64_t>(3 * (k * ac.layers + j));
        return LayerDropouts{drop(base), drop(base + 1), drop(base + 2)};
      };
      cuda::check(cudaMemsetAsync(grads.data(), 0, count * sizeof(float), cuda::context().stream()), "cudaMemsetAsync");
      acts.reset();
      scratch.reset();
      auto take = [&](index_t r, index_t cols) { return MatrixView<float>(acts.take(static_cast<std::size_t>(r * cols)), r, cols); };
      // forward
      AdapterCache<float> cache;
      cache.bind(acts, ac, inner, true);
      adapter_forward(Cuda{}, cache, hidden, std::span<const float>(), P.adapter, ac, SkipRule::standard, inner, adapter_drops,
                      true, scratch);
      scratch.reset();
      MatrixView<float> features = take(N, H), rows_a = take(B, H), rows_b = take(B, H), dense_out = take(B, H),
                        logits = take(B, R), d_logits = take(B, R);
      const MatrixView<const float> fin[2] = {h_last, MatrixView<const float>(cache.result)};
      linear_concat_forward(Cuda{}, features, std::span<const MatrixView<const float>>(fin), P.com_dense);
      weighted_rows_forward(Cuda{}, rows_a, MatrixView<const float>(d_subj.data(), B, S), MatrixView<const float>(features));
      weighted_rows_forward(Cuda{}, rows_b, MatrixView<const float>(d_obj.data(), B, S), MatrixView<const float>(features));
      const MatrixView<const float> din[2] = {rows_a, rows_b};
      linear_concat_forward(Cuda{}, dense_out, std::span<const MatrixView<const float>>(din), P.dense);
      const Dropout head_drop = drop(1u << 20);
      dropout_inplace(Cuda{}, dense_out, head_drop, 1);
      linear_forward(Cuda{}, logits, MatrixView<const float>(dense_out), P.out_proj);
      const float loss = cross_entropy(Cuda{}, d_logits, MatrixView<const float>(logits), std::span<const std::int64_t>(labels));
      // backward
      auto stake = [&](index_t r, index_t cols) { return MatrixView<float>(scratch.take(static_cast<std::size_t>(r * cols)), r, cols); };
      MatrixView<float> dz = stake(B, H), da = stake(B, H), db = stake(B, H);
      linear_backward(Cuda{}, dz, GradientMode::Overwrite, &P.out_proj_grad, MatrixView<const float>(d_logits),
                      MatrixView<const float>(dense_out), P.out_proj);
      dropout_inplace(Cuda{}, dz, head_drop, 1);
      const MatrixView<float> dd[2] = {da, db};
      linear_concat_backward(Cuda{}, std::span<const MatrixView<float>>(dd), GradientMode::Overwrite, &P.dense_grad,
                             MatrixView<const float>(dz), std::span<const MatrixView<const float>>(din), P.dense);
      MatrixView<float> d_features = stake(N, H), d_result = stake(N, H);
      fill_zero(Cuda{}, d_features);
      weighted_rows_backward(Cuda{}, d_features, MatrixView<const float>(da), MatrixView<const float>(d_subj.data(), B, S));
      weighted_rows_backward(Cuda{}, d_features, MatrixView<const float>(db), MatrixView<const float>(d_obj.data(), B, S));
      const MatrixView<float> dfin[2] = {MatrixView<float>{}, d_result};  // nothing flows into the backbone
      linear_concat_backward(Cuda{}, std::span<const MatrixView<float>>(dfin), GradientMode::Overwrite, &P.com_dense_grad,
                             MatrixView<const float>(d_features), std::span<const MatrixView<const float>>(fin), P.com_dense);
      adapter_backward(Cuda{}, MatrixView<const float>(d_result), cache, P.adapter, ac, SkipRule::standard, inner,
                       adapter_drops, scratch);
      // clip and update
      const double norm = cuda::grad_norm(std::span<const float>(grads.data(), count));
      cuda::adamw_update(std::span<float>(values.data(), count), std::span<const float>(grads.data(), count),
                         std::span<float>(m.data(), count), std::span<float>(v.data(), count), mask.data(), adam, adam.lr,
                         step + 1, clip_coefficient(norm, 1.0));
      cuda::context().synchronize();
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::printf("step %d: %.2f ms, loss %.4f, grad norm %.4f\n", step, ms, loss, norm);
      if (step >= warmup) times.push_back(ms);
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    const double gflops = flop * 1e-9 / (median * 1e-3);
    std::printf("kadapter_gpu config=%s median_ms=%.2f tokens_per_s=%.0f gflop=%.1f gflops=%.0f ceiling_fraction=%.3f\n",
                name.c_str(), median, static_cast<double>(N) / (median * 1e-3), flop * 1e-9, gflops, gflops / ceiling);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpu_step: error: %s\n", e.what());
    return 2;
  }
}
