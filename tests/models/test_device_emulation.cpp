// The GPU path's host/device bookkeeping, run on the CPU through an emulated device
// (support/emulated_backend.hpp: separate, poisoned memory; the CPU's kernels). Everything
// that TaskModel, FrozenEncoder, Trainer and the command line do differently for a device
// backend (device parameter arrays and their host copy, uploads of masks and batch weights,
// the device optimizer and its moments, staged feature-cache states, logits copied back)
// must give the Cpu backend's numbers: bit for bit where the same kernels run in the same
// order, and within 1e-6 after the Trainer's steps, whose gradient norm the device optimizer
// sums over the flat array rather than per tensor (clipping then differs in the last bits).
#define BOOST_TEST_MODULE device_emulation
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "cli/train.hpp"
#include "support/emulated_backend.hpp"
#include "support/model_cases.hpp"
#include "support/official_cases.hpp"

namespace fs = std::filesystem;
using namespace kadapter;
using test::Emulated;

namespace {

/// max |a - b| over the tensor ≤ tol · max |b| of the tensor, for every tensor of the table.
void check_close(const std::vector<float>& a, const std::vector<float>& b, const std::vector<ParamSlot<float>>& table,
                 double tol, const std::string& what) {
  BOOST_REQUIRE_EQUAL(a.size(), b.size());
  for (const auto& slot : table) {
    double err = 0, scale = 0;
    for (index_t i = slot.offset; i < slot.offset + slot.size(); ++i) {
      err = std::max(err, std::abs(static_cast<double>(a[static_cast<std::size_t>(i)]) - b[static_cast<std::size_t>(i)]));
      scale = std::max(scale, std::abs(static_cast<double>(b[static_cast<std::size_t>(i)])));
    }
    BOOST_TEST(err <= tol * scale, what << " " << slot.name << ": error " << err << ", scale " << scale);
  }
}

/// The batch of a model case, on the CPU and on the emulated device.
struct CaseBatches {
  explicit CaseBatches(const cases::ModelCase& c) : host(c.layers, c.keep), states(c.layers, c.keep) {
    host.prepare(c.batch, c.seq, c.adapter.hidden);
    for (std::size_t k = 0; k < c.keep.size(); ++k) std::copy(c.hidden[k].begin(), c.hidden[k].end(), host.slot(c.keep[k]));
    states.assign(host);
    device = {c.batch, c.seq, &states, c.layers, c.mask, c.labels, c.targets, c.subj, c.obj, c.start};
    cpu = {c.batch, c.seq, &host, c.layers, c.mask, c.labels, c.targets, c.subj, c.obj, c.start};
  }
  CaseBatches(const CaseBatches&) = delete;  // the batches point at the states
  HiddenStates<float> host;
  HiddenStates<float, Emulated> states;
  TaskBatch<float, Emulated> device;
  TaskBatch<float> cpu;
};

}  // namespace

BOOST_AUTO_TEST_CASE(task_models_and_trainer_match_the_cpu) {
  for (const cases::ModelCase& c : cases::model_cases()) {
    BOOST_TEST_CONTEXT("case " << c.name) {
      const cases::CaseResult cpu = cases::run_case<Cpu>(c);
      const cases::CaseResult dev = cases::run_case<Emulated>(c);
      BOOST_TEST(dev.initial == cpu.initial);
      BOOST_TEST(dev.loss == cpu.loss);
      BOOST_TEST(dev.logits == cpu.logits);
      BOOST_TEST(dev.grads == cpu.grads);
      BOOST_REQUIRE_EQUAL(dev.step_losses.size(), cpu.step_losses.size());
      for (std::size_t s = 0; s < cpu.step_losses.size(); ++s) {
        BOOST_TEST(std::abs(dev.step_losses[s] - cpu.step_losses[s]) <= 1e-6 * std::abs(cpu.step_losses[s]));
        BOOST_TEST(std::abs(dev.grad_norms[s] - cpu.grad_norms[s]) <= 1e-6 * std::abs(cpu.grad_norms[s]));
      }
      check_close(dev.values, cpu.values, cpu.table, 1e-6, "parameter");
      check_close(dev.first_moment, cpu.first_moment, cpu.table, 1e-6, "first moment");
      check_close(dev.second_moment, cpu.second_moment, cpu.table, 2e-6, "second moment");
      for (std::size_t s = 0; s < cpu.resumed_losses.size(); ++s)
        BOOST_TEST(std::abs(dev.resumed_losses[s] - cpu.resumed_losses[s]) <= 1e-6 * std::abs(cpu.resumed_losses[s]));
      check_close(dev.resumed_values, cpu.resumed_values, cpu.table, 1e-6, "resumed parameter");
      BOOST_REQUIRE_EQUAL(dev.eval_logits.size(), cpu.eval_logits.size());
      double err = 0, scale = 0;
      for (std::size_t i = 0; i < cpu.eval_logits.size(); ++i) {
        err = std::max(err, std::abs(static_cast<double>(dev.eval_logits[i]) - cpu.eval_logits[i]));
        scale = std::max(scale, std::abs(static_cast<double>(cpu.eval_logits[i])));
      }
      BOOST_TEST(err <= 1e-5 * scale, "evaluation logits: error " << err << ", scale " << scale);
      for (const auto& slot : cpu.table) {
        if (slot.grad) continue;
        for (index_t i = slot.offset; i < slot.offset + slot.size(); ++i)
          BOOST_REQUIRE(dev.values[static_cast<std::size_t>(i)] == dev.initial[static_cast<std::size_t>(i)]);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(host_writes_reach_the_device_and_back) {
  // Parameters changed through parameters() after training are what the next forward uses;
  // the optimizer state handed out for a checkpoint, written into a fresh trainer, continues
  // the run exactly as an uninterrupted one.
  const cases::ModelCase c = cases::model_cases().at(0);  // fac
  const CaseBatches b(c);
  const TaskBatch<float, Emulated>& batch = b.device;
  const TaskBatch<float>& cpu_batch = b.cpu;
  TrainConfig tc;
  tc.adam.lr = 1e-3;
  tc.adam.weight_decay = 0.01;
  tc.max_grad_norm = 0;  // no clipping: the device optimizer then gives the CPU's bits
  tc.schedule = WarmupLinearSchedule{0, 6};

  TaskModel<dynamic_adapter, float, Emulated> straight(c.task, c.adapter), first(c.task, c.adapter), resumed(c.task, c.adapter);
  TaskModel<dynamic_adapter, float> reference(c.task, c.adapter);
  for (auto* m : {&straight, &first, &resumed}) init_parameters(m->parameters(), 5, 0.05);
  init_parameters(reference.parameters(), 5, 0.05);
  Trainer<dynamic_adapter, float, Emulated> t_straight(straight, tc), t_first(first, tc);
  Trainer<dynamic_adapter, float> t_reference(reference, tc);
  const auto one = [](const auto& b) { return std::span(&b, 1); };
  for (int s = 0; s < 6; ++s) {
    t_straight.step(one(batch));
    t_reference.step(one(cpu_batch));
  }
  const auto sv = straight.parameters().values(), rv = reference.parameters().values();
  BOOST_TEST(std::vector<float>(sv.begin(), sv.end()) == std::vector<float>(rv.begin(), rv.end()));

  // Interrupted after 3 steps: parameters and AdamW state copied to the host, into a new
  // model and trainer, and 3 more steps.
  for (int s = 0; s < 3; ++s) t_first.step(one(batch));
  const auto fv = first.parameters().values();
  std::copy(fv.begin(), fv.end(), resumed.parameters().values().begin());
  Trainer<dynamic_adapter, float, Emulated> t_resumed(resumed, tc);
  AdamW<float>& saved = t_first.optimizer();
  AdamW<float>& loaded = t_resumed.optimizer();
  loaded.first_moment() = saved.first_moment();
  loaded.second_moment() = saved.second_moment();
  loaded.set_steps(saved.steps());
  t_resumed.set_steps(t_first.steps());
  for (int s = 0; s < 3; ++s) t_resumed.step(one(batch));
  const auto qv = resumed.parameters().values();
  BOOST_TEST(std::vector<float>(qv.begin(), qv.end()) == std::vector<float>(sv.begin(), sv.end()));

  // State written into a trainer that has already stepped: parameters back to their initial
  // values, moments to zero, counters to 0; six steps then repeat the straight run.
  TaskModel<dynamic_adapter, float, Emulated> again(c.task, c.adapter);
  init_parameters(again.parameters(), 5, 0.05);
  const std::vector<float> initial(again.parameters().values().begin(), again.parameters().values().end());
  Trainer<dynamic_adapter, float, Emulated> t_again(again, tc);
  for (int s = 0; s < 2; ++s) t_again.step(one(batch));
  std::copy(initial.begin(), initial.end(), again.parameters().values().begin());
  AdamW<float>& state = t_again.optimizer();
  std::fill(state.first_moment().begin(), state.first_moment().end(), 0.0f);
  std::fill(state.second_moment().begin(), state.second_moment().end(), 0.0f);
  state.set_steps(0);
  t_again.set_steps(0);
  for (int s = 0; s < 6; ++s) t_again.step(one(batch));
  const auto av = again.parameters().values();
  BOOST_TEST(std::vector<float>(av.begin(), av.end()) == std::vector<float>(sv.begin(), sv.end()));

  // A host write after training: zero weights give the zero model's logits.
  for (auto& x : straight.parameters().values()) x = 0.0f;
  for (auto& x : reference.parameters().values()) x = 0.0f;
  const float dl = straight.forward(batch, StepInfo{});
  const float rl = reference.forward(cpu_batch, StepInfo{});
  BOOST_TEST(dl == rl);
  std::vector<float> logits(static_cast<std::size_t>(straight.logits().size()));
  copy_to_host(Emulated{}, std::span<float>(logits), straight.logits().data());
  const auto rlog = reference.logits();
  BOOST_TEST(logits == std::vector<float>(rlog.data(), rlog.data() + rlog.size()));
}

BOOST_AUTO_TEST_CASE(a_non_finite_step_updates_nothing_on_the_device) {
  // The device optimizer computes the gradient norm before its update: a NaN in the states
  // stops the step with NonFiniteStep, and the device parameters and moments stay; the run
  // then goes on as one that never saw the bad batch.
  const cases::ModelCase c = cases::model_cases().at(0);  // fac
  const CaseBatches b(c);
  CaseBatches broken(c);
  {
    // A plug-in point's state: the adapter attends over every row of it.
    std::vector<float> poisoned(c.hidden.front().begin(), c.hidden.front().end());
    poisoned[1] = std::numeric_limits<float>::quiet_NaN();
    copy_from_host(Emulated{}, broken.states.slot(c.keep.front()), std::span<const float>(poisoned));
  }
  TrainConfig tc;
  tc.adam.lr = 1e-3;
  tc.schedule = WarmupLinearSchedule{0, 6};
  TaskModel<dynamic_adapter, float, Emulated> model(c.task, c.adapter), reference(c.task, c.adapter);
  init_parameters(model.parameters(), 5, 0.05);
  init_parameters(reference.parameters(), 5, 0.05);
  Trainer<dynamic_adapter, float, Emulated> trainer(model, tc), straight(reference, tc);
  const auto one = [](const auto& x) { return std::span(&x, 1); };
  trainer.step(one(b.device));
  straight.step(one(b.device));
  const std::vector<float> before(std::as_const(model).parameters().values().begin(),
                                  std::as_const(model).parameters().values().end());
  BOOST_CHECK_THROW(trainer.step(one(broken.device)), NonFiniteStep);
  BOOST_TEST(trainer.steps() == 1);
  const auto after = std::as_const(model).parameters().values();
  BOOST_TEST(std::vector<float>(after.begin(), after.end()) == before);
  for (int s = 0; s < 2; ++s) {
    trainer.step(one(b.device));
    straight.step(one(b.device));
  }
  const auto mv = std::as_const(model).parameters().values(), rv = std::as_const(reference).parameters().values();
  BOOST_TEST(std::vector<float>(mv.begin(), mv.end()) == std::vector<float>(rv.begin(), rv.end()));
  const AdamW<float>& mo = std::as_const(trainer).optimizer();
  const AdamW<float>& ro = std::as_const(straight).optimizer();
  BOOST_TEST(mo.steps() == ro.steps());
  BOOST_TEST(std::vector<float>(mo.second_moment().begin(), mo.second_moment().end()) ==
             std::vector<float>(ro.second_moment().begin(), ro.second_moment().end()));
}

BOOST_AUTO_TEST_CASE(read_only_access_copies_nothing_back) {
  // Saving a checkpoint reads the parameters and the AdamW state through const access: the
  // host copies are brought up to date, and the next step uploads nothing more than a step
  // does without them (the writable access uploads the moments again: two arrays).
  const cases::ModelCase c = cases::model_cases().at(0);
  const CaseBatches b(c);
  TrainConfig tc;
  tc.adam.lr = 1e-3;
  tc.max_grad_norm = 0;  // the device optimizer then gives the CPU's bits
  tc.schedule = WarmupLinearSchedule{0, 8};
  TaskModel<dynamic_adapter, float, Emulated> dev(c.task, c.adapter);
  TaskModel<dynamic_adapter, float> cpu(c.task, c.adapter);
  init_parameters(dev.parameters(), 7, 0.05);
  init_parameters(cpu.parameters(), 7, 0.05);
  Trainer<dynamic_adapter, float, Emulated> t_dev(dev, tc);
  Trainer<dynamic_adapter, float> t_cpu(cpu, tc);
  const auto one = [](const auto& x) { return std::span(&x, 1); };
  auto uploaded_by_a_step = [&] {
    const std::size_t before = test::emulated_upload_bytes;
    t_dev.step(one(b.device));
    t_cpu.step(one(b.cpu));
    return test::emulated_upload_bytes - before;
  };
  uploaded_by_a_step();
  uploaded_by_a_step();
  const std::size_t plain = uploaded_by_a_step();
  const std::size_t n = dev.backend_values().size();

  const AdamW<float>& read = std::as_const(t_dev).optimizer();
  const auto& values = std::as_const(dev).parameters().values();
  BOOST_TEST(std::vector<float>(values.begin(), values.end()) ==
             std::vector<float>(cpu.parameters().values().begin(), cpu.parameters().values().end()));
  BOOST_TEST(read.steps() == t_cpu.optimizer().steps());
  BOOST_TEST(std::vector<float>(read.first_moment().begin(), read.first_moment().end()) ==
             std::vector<float>(t_cpu.optimizer().first_moment().begin(), t_cpu.optimizer().first_moment().end()));
  BOOST_TEST(std::vector<float>(read.second_moment().begin(), read.second_moment().end()) ==
             std::vector<float>(t_cpu.optimizer().second_moment().begin(), t_cpu.optimizer().second_moment().end()));
  BOOST_TEST(uploaded_by_a_step() == plain);

  (void)t_dev.optimizer();  // writable: copied back before the next update
  BOOST_TEST(uploaded_by_a_step() == plain + 2 * n * sizeof(float));
  BOOST_TEST(uploaded_by_a_step() == plain);
  // And the run is still the CPU's.
  const auto& after = std::as_const(dev).parameters().values();
  BOOST_TEST(std::vector<float>(after.begin(), after.end()) ==
             std::vector<float>(cpu.parameters().values().begin(), cpu.parameters().values().end()));
}

BOOST_AUTO_TEST_CASE(parameters_between_forward_and_backward) {
  // A hand-written loop that looks at (or edits) the parameters between forward() and
  // backward(): the gradients of the backward pass must survive, and an edit made there must
  // reach the device.
  const cases::ModelCase c = cases::model_cases().at(0);
  const CaseBatches b(c);
  const TaskBatch<float, Emulated>& batch = b.device;
  const TaskBatch<float>& cpu_batch = b.cpu;
  TaskModel<dynamic_adapter, float, Emulated> dev(c.task, c.adapter);
  TaskModel<dynamic_adapter, float> cpu(c.task, c.adapter);
  init_parameters(dev.parameters(), 3, 0.05);
  init_parameters(cpu.parameters(), 3, 0.05);
  dev.zero_grad();
  cpu.zero_grad();
  dev.forward(batch, StepInfo{true, 1, 0, 0});
  cpu.forward(cpu_batch, StepInfo{true, 1, 0, 0});
  BOOST_TEST(dev.parameters().values().size() == cpu.parameters().values().size());  // non-const access
  dev.backward();
  cpu.backward();
  const auto dg = dev.backend_gradients();
  std::vector<float> got(dg.size());
  copy_to_host(Emulated{}, std::span<float>(got), dg.data());
  const auto cg = cpu.parameters().gradients();
  BOOST_TEST(got == std::vector<float>(cg.begin(), cg.end()));
  const auto hg = dev.parameters().gradients();
  BOOST_TEST(std::vector<float>(hg.begin(), hg.end()) == std::vector<float>(cg.begin(), cg.end()));
}

BOOST_AUTO_TEST_CASE(encoder_states_match_the_cpu) {
  for (const char* family : {"tiny_roberta", "tiny_bert"}) {
    const fs::path dir = test::fixture_dir() / "encoder" / family;
    io::SafetensorsFile batch(dir / "batch.safetensors");
    const index_t B = batch.info("input_ids").shape.at(0), S = batch.info("input_ids").shape.at(1);
    const auto ids = batch.read<std::int64_t>("input_ids");
    const auto mask = batch.read<std::int64_t>("attention_mask");
    const std::vector<std::int64_t> types =
        batch.contains("token_type_ids") ? batch.read<std::int64_t>("token_type_ids") : std::vector<std::int64_t>{};
    const TokenBatch tokens{B, S, ids, mask, types};
    std::vector<std::vector<float>> cpu;
    io::with_encoder_dir<float>(dir, [&](auto& enc, const io::EncoderLoadReport&) {
      HiddenStates<float> s(enc.config().layers);
      enc.forward(s, tokens);
      for (index_t k : s.kept()) cpu.emplace_back(s[k].data(), s[k].data() + s[k].size());
      return 0;
    });
    io::with_encoder_dir<float, Emulated>(dir, [&](auto& enc, const io::EncoderLoadReport&) {
      HiddenStates<float, Emulated> s(enc.config().layers);
      HiddenStates<float> h(enc.config().layers);
      for (int pass = 0; pass < 2; ++pass) {  // the second pass reuses every buffer
        enc.forward(s, tokens);
        h.assign(s);
        for (std::size_t i = 0; i < h.kept().size(); ++i) {
          const auto v = h[h.kept()[i]];
          BOOST_TEST((std::vector<float>(v.data(), v.data() + v.size()) == cpu[i]), family << " state " << i);
        }
      }
      // Weights written through parameters() reach the device at the next forward.
      for (float& x : enc.parameters()) x = 0.5f * x;
      enc.forward(s, tokens);
      h.assign(s);
      BOOST_TEST((std::vector<float>(h[0].data(), h[0].data() + h[0].size()) != cpu[0]));
      return 0;
    });
  }
}

BOOST_AUTO_TEST_CASE(official_fixtures_match_through_the_grads_path) {
  for (const auto& dir : test::cases()) {
    BOOST_TEST_CONTEXT("fixture " << dir.filename().string()) {
      const cli::GradsRequest req = test::request_for(dir);
      const cli::GradsResult<float> cpu = cli::compute_grads<float>(req);
      const cli::GradsResult<float> dev = cli::compute_grads<float, Emulated>(req);
      BOOST_TEST(dev.loss == cpu.loss);
      BOOST_TEST(dev.logits == cpu.logits);
      BOOST_REQUIRE_EQUAL(dev.grads.size(), cpu.grads.size());
      for (std::size_t i = 0; i < cpu.grads.size(); ++i) BOOST_TEST(dev.grads[i].values == cpu.grads[i].values, cpu.grads[i].name);
    }
  }
}

BOOST_AUTO_TEST_CASE(command_line_training_matches_the_cpu) {
  // `kadapter pretrain` and `evaluate` on the emulated device against the CPU: the feature
  // cache (two epochs) staged to the device, trimmed batches, the evaluation's logits copied
  // back. Needs all-MiniLM-L6-v2 (scripts/setup.sh); skipped without it.
  const fs::path model = KA_MINILM_DIR;
  if (!fs::exists(fs::path(model) / "model.safetensors")) {
    BOOST_TEST_MESSAGE("skipped: all-MiniLM-L6-v2 is not installed at " << model.string());
    return;
  }
  const fs::path data = test::fixture_dir().parent_path().parent_path() / "data" / "demo" / "fac";
  const fs::path tmp = fs::temp_directory_path() / ("kadapter_emulated_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  const auto args_for = [&](const std::string& cmd, const fs::path& out) {
    std::vector<std::string> a = {"--task", "fac", "--model", model.string(), "--data", data.string(), "--out",
                                  out.string(), "--max-steps", "8", "--epochs", "2", "--batch-size", "8",
                                  "--max-seq-length", "32", "--adapter-size", "32", "--adapter-heads", "2",
                                  "--adapter-list", "0,3", "--learning-rate", "1e-3", "--feature-cache", "memory"};
    if (cmd == "evaluate") a.resize(a.size() - 2);  // evaluate keeps no cache
    return cli::Args(cmd, cli::training_options(false), a);
  };
  const cli::TrainResult cpu = cli::run_training_on<Cpu>(args_for("pretrain", tmp / "cpu"), false, false);
  const cli::TrainResult dev = cli::run_training_on<Emulated>(args_for("pretrain", tmp / "dev"), false, false);
  BOOST_TEST(dev.steps == cpu.steps);
  BOOST_TEST(std::abs(dev.final_loss - cpu.final_loss) <= 1e-5 * std::abs(cpu.final_loss));
  BOOST_TEST(dev.metrics.dump() == cpu.metrics.dump());
  const cli::TrainResult eval = cli::run_training_on<Emulated>(args_for("evaluate", tmp / "cpu"), false, true);
  BOOST_TEST(eval.metrics.at("accuracy") == cpu.metrics.at("accuracy"));
  fs::remove_all(tmp);
}
