// One K-Adapter training step on the GPU, timed: the factual-adapter pre-training step of
// bench_train_step (adapters, com_dense and the head, forward and backward, clipping, AdamW)
// on random backbone states: Trainer<dynamic_adapter, float, Cuda>::step.
//
//   bench_gpu_step --config small|base|large [--steps N] [--warmup N] [--precision fp32|tf32|bf16]
//
// The same TaskModel and Trainer as bench_train_step, with B = Cuda; the backbone states
// are on the device before timing starts. First it measures the card's GEMM ceiling in the chosen precision: cuBLASLt at the three shapes of the base model's linear layers (1024 rows) and
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
    cuda::Math math = cuda::Math::fp32;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw Error(a + " needs a value");
        return argv[++i];
      };
      if (a == "--config") name = value();
      else if (a == "--steps") steps = std::max(1, std::atoi(value().c_str()));
      else if (a == "--warmup") warmup = std::max(0, std::atoi(value().c_str()));
      else if (a == "--precision") {
        const std::string p = value();
        if (p == "fp32") math = cuda::Math::fp32;
        else if (p == "tf32") math = cuda::Math::tf32;
        else if (p == "bf16") math = cuda::Math::bf16;
        else throw Error("--precision " + p + ": expected fp32, tf32 or bf16");
      } else throw Error("unknown option " + a + " (expected --config, --steps, --warmup, --precision)");
    }
    if (!cuda::device_available()) {
      std::fprintf(stderr, "bench_gpu_step: no CUDA device\n");
      return 2;
    }
    cudaDeviceProp prop{};
    cuda::check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    cuda::context().math = math;

    const double ceiling = std::max({gemm_gflops(1024, 768, 768, 20), gemm_gflops(1024, 3072, 768, 20),
                                     gemm_gflops(1024, 768, 3072, 20)});
    const double ceiling_big = gemm_gflops(8192, 8192, 8192, 5);
    std::printf("gpu device=\"%s\" precision=%s ceiling_gflops=%.0f ceiling_8192_gflops=%.0f\n", prop.name,
                cuda::math_name(math), ceiling, ceiling_big);

    const bench::BenchConfig c = bench::config_named(name);
    const index_t B = c.batch, S = c.seq, N = B * S, R = bench::kRelations;
    AdapterConfig ac{c.hidden, c.adapter, 2, c.heads, c.ffn, 0, static_cast<index_t>(c.plug.size()), {}, 1e-5};
    for (std::size_t k = 0; k < c.plug.size(); ++k) ac.plug_in[k] = c.plug[k];
    TaskConfig tc;
    tc.task = Task::fac;
    tc.num_labels = R;
    tc.adapters = {"fac"};
    tc.dropout = 0.1f;
    TaskModel<dynamic_adapter, float, Cuda> model(tc, ac);
    init_parameters(model.parameters(), 1);
    TrainConfig cfg;
    cfg.adam.lr = 5e-5;
    cfg.schedule = WarmupLinearSchedule{0, 1000000};
    Trainer<dynamic_adapter, float, Cuda> trainer(model, cfg);

    // The backbone's states at the plug-in points and the last one (random), on the device.
    std::vector<index_t> keep(c.plug.begin(), c.plug.end());
    keep.push_back(c.layers);
    HiddenStates<float> host(c.layers, keep);
    host.prepare(B, S, c.hidden);
    for (index_t k : host.kept()) {
      const std::vector<float> v = normal_values(static_cast<std::size_t>(N * c.hidden), 7 + static_cast<std::uint64_t>(k));
      std::copy(v.begin(), v.end(), host.slot(k));
    }
    HiddenStates<float, Cuda> states(c.layers, keep);
    states.assign(host);
    std::vector<std::int64_t> mask(static_cast<std::size_t>(N), 1), labels(static_cast<std::size_t>(B));
    std::vector<float> subj(mask.size(), 0.0f), obj(mask.size(), 0.0f);
    for (index_t b = 0; b < B; ++b) {
      labels[static_cast<std::size_t>(b)] = (b * 37) % R;
      subj[static_cast<std::size_t>(b * S + 1)] = 1.0f;
      obj[static_cast<std::size_t>(b * S + 7)] = 1.0f;
    }
    const TaskBatch<float, Cuda> batch{B, S, &states, c.layers, mask, labels, {}, subj, obj, {}};

    const double flop = bench::step_flops(c, R);
    std::vector<double> times;
    for (int step = 0; step < warmup + steps; ++step) {
      cuda::context().synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      const StepReport r = trainer.step(std::span<const TaskBatch<float, Cuda>>(&batch, 1));
      cuda::context().synchronize();
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::printf("step %d: %.2f ms, loss %.4f, grad norm %.4f\n", step, ms, r.loss, r.grad_norm);
      if (step >= warmup) times.push_back(ms);
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    const double gflops = flop * 1e-9 / (median * 1e-3);
    std::printf("kadapter_gpu config=%s median_ms=%.2f tokens_per_s=%.0f gflop=%.1f gflops=%.0f ceiling_fraction=%.3f\n",
                name.c_str(), median, static_cast<double>(N) / (median * 1e-3), flop * 1e-9, gflops, gflops / ceiling);
    std::printf("gemm fallbacks: %zu product plan(s) built in strict fp32 instead of %s\n", cuda::context().gemm_fallbacks,
                cuda::math_name(math));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpu_step: error: %s\n", e.what());
    return 2;
  }
}
