// The configs of bench/compare.sh and the matrix-product FLOPs of one factual-adapter
// training step: shared by bench_train_step (CPU) and bench_gpu_step (GPU), and equal to
// step_flops in bench/reference/train_step.py.
#pragma once

#include <string>
#include <vector>

#include "kadapter/config.hpp"
#include "kadapter/core/error.hpp"

namespace kadapter::bench {

struct BenchConfig {
  index_t hidden, layers, adapter, heads, ffn, batch, seq;
  std::vector<index_t> plug;
};

inline BenchConfig config_named(const std::string& name) {
  if (name == "small") return {256, 4, 256, 4, 1024, 16, 64, {0, 1, 3}};
  if (name == "base") return {768, 12, 768, 12, 3072, 16, 64, {0, 5, 11}};
  if (name == "large") return {1024, 24, 768, 12, 3072, 8, 64, {0, 11, 22}};
  throw Error("--config '" + name + "' is not one of: small, base, large");
}

/// @brief Relations of the fac head in the benchmarks.
inline constexpr index_t kRelations = 430;

// Matrix-product FLOPs of one step: forward, and twice that for backward (input and weight
// gradients), except where no input gradient is needed: the first adapter layer's down
// projection reads a backbone state, and com_dense's backbone half reads the last one.
inline double step_flops(const BenchConfig& c, index_t relations) {
  const double n = static_cast<double>(c.batch * c.seq), H = c.hidden, A = c.adapter, F = c.ffn;
  const double layer = 2.0 * n * (4 * A * A + 2 * A * F) + 4.0 * c.batch * c.seq * c.seq * A;
  const double adapter = 2.0 * n * 2 * H * A + 2 * layer;
  const double head = 2.0 * n * 2 * H * H + 2.0 * c.batch * (2 * H * H + H * relations);
  const double not_needed = 2.0 * n * H * A + 2.0 * n * H * H;
  return 3.0 * (static_cast<double>(c.plug.size()) * adapter + head) - not_needed;
}

}  // namespace kadapter::bench
