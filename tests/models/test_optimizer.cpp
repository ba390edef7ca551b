// AdamW, the warmup/decay schedule and gradient clipping against the authors' optimizer
// (pytorch_transformers AdamW + WarmupLinearSchedule + clip_grad_norm_), ten steps, through
// committed fixtures (tests/fixtures/make_adapter_fixtures.py).
#define BOOST_TEST_MODULE optimizer
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kadapter/kadapter.hpp"

namespace fs = std::filesystem;
using namespace kadapter;

namespace {

void run_case(const std::string& name) {
  const fs::path dir = fs::path(KA_FIXTURE_DIR) / "adapter" / name;
  std::ifstream af(dir / "args.json");
  const nlohmann::json a = nlohmann::json::parse(af);
  io::SafetensorsFile params0(dir / "params0.safetensors"), grads(dir / "grads.safetensors"),
      expected(dir / "expected.safetensors");

  // A store with the fixture's tensors, in the file's (sorted) order.
  ParameterStore<double> store;
  store.build([&](ParamLayout<double>& lay) {
    for (const auto& n : params0.names()) {
      const auto& shape = params0.info(n).shape;
      if (shape.size() == 2) lay.matrix(n, shape[0], shape[1]);
      else lay.vector(n, shape.at(0));
    }
    return 0;
  });
  io::load_parameters(store, params0);

  TrainConfig cfg;
  cfg.adam.lr = a.at("lr").get<double>();
  cfg.adam.weight_decay = a.at("weight_decay").get<double>();
  cfg.adam.eps = a.at("eps").get<double>();
  const auto betas = a.at("betas").get<std::vector<double>>();
  cfg.adam.beta1 = betas.at(0);
  cfg.adam.beta2 = betas.at(1);
  cfg.schedule = WarmupLinearSchedule{a.at("warmup_steps").get<std::int64_t>(), a.at("t_total").get<std::int64_t>()};
  cfg.max_grad_norm = a.at("max_grad_norm").get<double>();
  cfg.scheduler_before_optimizer = a.at("scheduler_before_optimizer").get<bool>();
  AdamW<double> adam(cfg.adam);

  int clipped = 0;
  for (int k = 1; k <= 10; ++k) {
    const std::string step = "step" + std::to_string(k) + ".";
    for (const auto& s : store.table()) {
      const auto g = grads.read<double>(step + s.name);
      std::copy(g.begin(), g.end(), s.grad);
    }
    const StepReport r = apply_update(store, adam, cfg, k - 1);
    clipped += r.grad_norm > cfg.max_grad_norm;
    const double lr = expected.read<double>(step + "lr").at(0);
    BOOST_TEST(r.lr == lr, boost::test_tools::tolerance(1e-12));
    for (const auto& s : store.table()) {
      const auto want = expected.read<double>(step + s.name);
      double worst = 0;
      for (index_t i = 0; i < s.size(); ++i) worst = std::max(worst, std::fabs(s.data[i] - want[i]));
      BOOST_TEST_INFO(name << " step " << k << " " << s.name << ": max |difference| " << worst);
      BOOST_TEST(worst < 1e-12);
    }
  }
  BOOST_TEST_MESSAGE(name << ": " << clipped << " of 10 steps clipped");
  BOOST_TEST(clipped > 0);
  BOOST_TEST(clipped < 10);
}

}  // namespace

BOOST_AUTO_TEST_CASE(pretraining_order_scheduler_first) { run_case("adamw_pretrain"); }
BOOST_AUTO_TEST_CASE(finetuning_order_optimizer_first) { run_case("adamw_finetune"); }

BOOST_AUTO_TEST_CASE(schedule_values) {
  const WarmupLinearSchedule s{4, 10};
  BOOST_TEST(s.factor(0) == 0.0);
  BOOST_TEST(s.factor(2) == 0.5);
  BOOST_TEST(s.factor(4) == 1.0);
  BOOST_TEST(s.factor(7) == 0.5);
  BOOST_TEST(s.factor(10) == 0.0);
  BOOST_TEST(s.factor(12) == 0.0);
  // The default (total 0) does not decay: a TrainConfig left as it is trains at the peak.
  const WarmupLinearSchedule constant{}, warm{2, 0};
  BOOST_TEST(constant.factor(0) == 1.0);
  BOOST_TEST(constant.factor(1000) == 1.0);
  BOOST_TEST(warm.factor(1) == 0.5);
  BOOST_TEST(warm.factor(5) == 1.0);
  BOOST_TEST(TrainConfig{}.schedule.factor(3) == 1.0);
}

BOOST_AUTO_TEST_CASE(no_decay_rule_matches_the_authors) {
  BOOST_TEST(decays("adapter.0.down_project.weight"));
  BOOST_TEST(!decays("adapter.0.down_project.bias"));
  BOOST_TEST(!decays("self_attention.output.LayerNorm.weight"));
  BOOST_TEST(!decays("self_attention.output.LayerNorm.bias"));
  BOOST_TEST(decays("out_proj.weight"));
}

BOOST_AUTO_TEST_CASE(clipping_inside_the_update_is_the_same_as_clipping_first) {
  // apply_update scales the gradients as AdamW reads them; the result must be bit-identical
  // to clip_grad_norm (in place) followed by an unscaled step, in float.
  auto make = [](ParameterStore<float>& store) {
    store.build([](ParamLayout<float>& lay) {
      lay.matrix("w", 300, 200);
      lay.vector("b", 300);
      return 0;
    });
    std::uint64_t x = 12345;
    for (float& v : store.values()) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      v = static_cast<float>(static_cast<double>(x >> 40) / static_cast<double>(1ULL << 24) - 0.5);
    }
  };
  ParameterStore<float> fused, separate;
  make(fused);
  make(separate);
  TrainConfig cfg;
  cfg.max_grad_norm = 1.0;
  cfg.adam.weight_decay = 0.01;
  cfg.adam.lr = 1e-3;
  cfg.schedule = WarmupLinearSchedule{1, 100};
  const std::vector<float> initial(fused.values().begin(), fused.values().end());
  AdamW<float> adam_fused(cfg.adam), adam_separate(cfg.adam);
  for (int step = 0; step < 3; ++step) {
    for (auto* store : {&fused, &separate})
      for (const auto& s : store->table())
        for (index_t i = 0; i < s.size(); ++i) s.grad[i] = std::sin(0.37f * static_cast<float>(i + 1000 * step)) * 0.5f;
    const StepReport r = apply_update(fused, adam_fused, cfg, step);
    const double norm = clip_grad_norm(separate, cfg.max_grad_norm);
    const std::int64_t sched = cfg.scheduler_before_optimizer ? step + 1 : step;
    adam_separate.step(separate, cfg.adam.lr * cfg.schedule.factor(sched));
    BOOST_TEST(r.grad_norm == norm);
    BOOST_TEST(norm > cfg.max_grad_norm);  // the clip is active
    for (std::size_t i = 0; i < fused.values().size(); ++i) BOOST_REQUIRE(fused.values()[i] == separate.values()[i]);
    for (std::size_t i = 0; i < fused.values().size(); ++i)
      BOOST_REQUIRE(adam_fused.second_moment()[i] == adam_separate.second_moment()[i]);
  }
  std::size_t moved = 0;
  for (std::size_t i = 0; i < initial.size(); ++i) moved += fused.values()[i] != initial[i];
  BOOST_TEST(moved > initial.size() / 2);  // the steps did update the parameters
}

BOOST_AUTO_TEST_CASE(fp32_moments_use_one_minus_beta_rounded_once) {
  // torch's AdamW computes `1.0 - beta` as a Python (double) scalar and rounds it to float
  // once: m = b1 m + float(1 - b1) g. In fp32, 1 - 0.999f is 0.00099998713, 1.3e-5 off.
  ParameterStore<float> store;
  store.build([](ParamLayout<float>& lay) {
    lay.vector("w", 4);
    return 0;
  });
  const float g[4] = {0.3f, -1.7f, 2.5e-3f, 41.0f};
  for (const auto& s : store.table()) std::copy(g, g + 4, s.grad);
  AdamWConfig c;
  AdamW<float> adam(c);
  adam.step(store, 1e-3);
  const float c1 = static_cast<float>(1.0 - c.beta1), c2 = static_cast<float>(1.0 - c.beta2);
  BOOST_TEST(c2 != 1.0f - static_cast<float>(c.beta2));  // the case the rule is about
  for (int i = 0; i < 4; ++i) {
    BOOST_TEST(adam.first_moment()[i] == c1 * g[i]);
    BOOST_TEST(adam.second_moment()[i] == c2 * g[i] * g[i]);
  }
}
