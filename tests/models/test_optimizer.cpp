// AdamW, the warmup/decay schedule and gradient clipping against the authors' optimizer
// (pytorch_transformers AdamW + WarmupLinearSchedule + clip_grad_norm_), ten steps, through
// committed fixtures (tests/fixtures/make_adapter_fixtures.py).
#define BOOST_TEST_MODULE optimizer
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <string>

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
}

BOOST_AUTO_TEST_CASE(no_decay_rule_matches_the_authors) {
  BOOST_TEST(decays("adapter.0.down_project.weight"));
  BOOST_TEST(!decays("adapter.0.down_project.bias"));
  BOOST_TEST(!decays("self_attention.output.LayerNorm.weight"));
  BOOST_TEST(!decays("self_attention.output.LayerNorm.bias"));
  BOOST_TEST(decays("out_proj.weight"));
}
