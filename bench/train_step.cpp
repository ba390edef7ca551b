// One K-Adapter training step, timed: the kadapter side of bench/compare.sh.
//
//   train_step --config small|base|large [--steps N] [--warmup N] [--paired-ceiling]
//
// Factual-adapter pre-training step (adapters, com_dense and the head, forward and backward,
// clipping, AdamW) on random backbone hidden states, batch 16 (8 for large) x 64, dropout 0.1,
// as the authors' loop runs it with the backbone's outputs given. Prints one line per step
// and a summary line `kadapter median_ms=... gflop=... gflops=...`. With --paired-ceiling
// each step is preceded by a probe of the library's GEMM at the model's shapes, and a last
// line `paired_ceiling_fraction=X` gives the median of each step's GFLOP/s over the ceiling
// probed just before it: on a machine whose speed drifts from second to second (a shared
// VM), a ratio taken moment by moment, rather than against one ceiling measured earlier.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "ceiling.hpp"
#include "step_config.hpp"
#include "kadapter/kadapter.hpp"

using namespace kadapter;
using bench::BenchConfig;
using bench::config_named;
using bench::step_flops;

int main(int argc, char** argv) {
  try {
    std::string name = "base";
    int steps = 5, warmup = 1;
    bool paired = false;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw Error(a + " needs a value");
        return argv[++i];
      };
      if (a == "--config") name = value();
      else if (a == "--steps") steps = std::max(1, std::atoi(value().c_str()));
      else if (a == "--warmup") warmup = std::max(0, std::atoi(value().c_str()));
      else if (a == "--paired-ceiling") paired = true;
      else throw Error("unknown option " + a + " (expected --config, --steps, --warmup, --paired-ceiling)");
    }
    const BenchConfig c = config_named(name);
    const index_t relations = bench::kRelations;
    AdapterConfig ac{c.hidden, c.adapter, 2, c.heads, c.ffn, 0, static_cast<index_t>(c.plug.size()), {}, 1e-5};
    for (std::size_t k = 0; k < c.plug.size(); ++k) ac.plug_in[k] = c.plug[k];
    TaskConfig tc;
    tc.task = Task::fac;
    tc.num_labels = relations;
    tc.adapters = {"fac"};
    tc.dropout = 0.1f;
    TaskModel<dynamic_adapter, float> model(tc, ac);
    init_parameters(model.parameters(), 1);
    TrainConfig cfg;
    cfg.adam.lr = 5e-5;
    cfg.schedule = WarmupLinearSchedule{0, 1000000};
    Trainer<dynamic_adapter, float> trainer(model, cfg);

    std::vector<index_t> keep(c.plug.begin(), c.plug.end());
    keep.push_back(c.layers);
    HiddenStates<float> states(c.layers, keep);
    states.prepare(c.batch, c.seq, c.hidden);
    std::mt19937_64 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (index_t k : states.kept())
      for (index_t i = 0; i < c.batch * c.seq * c.hidden; ++i) states.slot(k)[i] = normal(rng);
    std::vector<std::int64_t> mask(static_cast<std::size_t>(c.batch * c.seq), 1), labels(static_cast<std::size_t>(c.batch));
    std::vector<float> subj(mask.size(), 0.0f), obj(mask.size(), 0.0f);
    for (index_t b = 0; b < c.batch; ++b) {
      labels[static_cast<std::size_t>(b)] = (b * 37) % relations;
      subj[static_cast<std::size_t>(b * c.seq + 1)] = 1.0f;
      obj[static_cast<std::size_t>(b * c.seq + 7)] = 1.0f;
    }
    const TaskBatch<float> batch{c.batch, c.seq, &states, c.layers, mask, labels, {}, subj, obj, {}};

    // --paired-ceiling: right before each step, the library's product at the three shapes of
    // the base model's linear layers (best of 3 runs each, the best shape), so that each step
    // is set against the machine's speed at that moment.
    std::vector<bench::GemmProbe> probes;
    if (paired) {
      probes.emplace_back(1024, 768, 768);
      probes.emplace_back(1024, 3072, 768);
      probes.emplace_back(1024, 768, 3072);
    }
    const double flop = step_flops(c, relations);
    std::vector<double> ms, fractions;
    for (int s = 0; s < warmup + steps; ++s) {
      double ceiling = 0;
      for (auto& probe : probes) ceiling = std::max(ceiling, probe.best_gflops(3));
      const auto t0 = std::chrono::steady_clock::now();
      const StepReport r = trainer.step(std::span<const TaskBatch<float>>(&batch, 1));
      const double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (paired) {
        std::printf("step %d: %.1f ms, loss %.4f, ceiling just before %.1f GFLOP/s (%.0f%%)\n", s, dt, r.loss, ceiling,
                    100.0 * flop * 1e-9 / (dt * 1e-3) / ceiling);
      } else {
        std::printf("step %d: %.1f ms, loss %.4f\n", s, dt, r.loss);
      }
      if (s >= warmup) {
        ms.push_back(dt);
        if (paired) fractions.push_back(flop * 1e-9 / (dt * 1e-3) / ceiling);
      }
    }
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2];
    std::printf("kadapter median_ms=%.1f gflop=%.1f gflops=%.1f\n", median, flop * 1e-9, flop * 1e-9 / (median * 1e-3));
    if (paired) {
      std::sort(fractions.begin(), fractions.end());
      std::printf("paired_ceiling_fraction=%.3f (median over steps of the step's GFLOP/s over the ceiling probed just before it)\n",
                  fractions[fractions.size() / 2]);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_step: error: %s\n", e.what());
    return 2;
  }
}
