// Training: a task the head alone cannot solve is learnt once an adapter is added;
// gradient accumulation, exact resume from a checkpoint, deterministic dropout, and no
// allocation inside a training step after the first.
#define BOOST_TEST_MODULE training
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <new>
#include <random>
#include <span>
#include <string>
#include <unistd.h>
#include <vector>

#include "kadapter/kadapter.hpp"

// Count every heap allocation of the process, to check that training steps make none. The
// replacements pair malloc with free, which GCC cannot see through.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
static std::atomic<std::size_t> g_allocations{0};
void* operator new(std::size_t n) {
  ++g_allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  ++g_allocations;
  if (void* p = std::aligned_alloc(static_cast<std::size_t>(a), (n + static_cast<std::size_t>(a) - 1) / static_cast<std::size_t>(a) * static_cast<std::size_t>(a))) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

using namespace kadapter;

namespace {

constexpr index_t kT = 6, kH = 16, kL = 2, kClasses = 4;

// A synthetic relation task over given backbone states: the `@` and `#` rows (1 and 2) hold
// the same vector in every example, and the label is written only at row 4. The head reads
// rows 1 and 2, so without an adapter (which can attend from row 1 to row 4) the label is
// invisible to it: the best it can do is log(4).
struct Data {
  index_t examples;
  HiddenStates<double> states{kL};
  std::vector<std::int64_t> mask, labels;
  std::vector<double> subj, obj;

  explicit Data(index_t n, std::uint64_t seed = 3) : examples(n) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::vector<double> marker(kH), label_vec(kClasses * kH);
    for (auto& v : marker) v = normal(rng);
    for (auto& v : label_vec) v = 2.0 * normal(rng);
    states.prepare(n, kT, kH);
    for (index_t e = 0; e < n; ++e) {
      const std::int64_t y = e % kClasses;
      labels.push_back(y);
      for (index_t t = 0; t < kT; ++t) {
        mask.push_back(1);
        subj.push_back(t == 1 ? 1.0 : 0.0);
        obj.push_back(t == 2 ? 1.0 : 0.0);
        for (index_t k = 0; k <= kL; ++k)
          for (index_t h = 0; h < kH; ++h) {
            double v = 0.3 * normal(rng);
            if (t == 1 || t == 2) v = marker[h];
            if (t == 4) v += label_vec[y * kH + h];
            states.slot(k)[(e * kT + t) * kH + h] = v;
          }
      }
    }
  }
  TaskBatch<double> batch() const {
    return {.batch = examples, .seq = kT, .hidden = &states, .last = kL, .attention_mask = mask, .labels = labels,
            .targets = {}, .subj = subj, .obj = obj, .start = {}};
  }
};

AdapterConfig adapter() { return AdapterConfig{kH, 8, 1, 2, 16, 0, 2, {0, 2}, 1e-5}; }

TaskConfig relation(std::vector<std::string> adapters, float dropout = 0.0f) {
  TaskConfig tc;
  tc.task = Task::relation;
  tc.num_labels = kClasses;
  tc.adapters = std::move(adapters);
  tc.fusion = Fusion::add;
  tc.dropout = dropout;
  return tc;
}

TrainConfig train_config(int steps) {
  TrainConfig c;
  c.adam.lr = 3e-3;
  c.adam.weight_decay = 0.01;
  c.schedule = WarmupLinearSchedule{10, steps};
  c.max_grad_norm = 1.0;
  return c;
}

double train(TaskModel<dynamic_adapter, double>& model, const Data& data, int steps) {
  Trainer<dynamic_adapter, double> trainer(model, train_config(steps));
  const TaskBatch<double> b = data.batch();
  double last = 0;
  for (int s = 0; s < steps; ++s) last = trainer.step(std::span<const TaskBatch<double>>(&b, 1)).loss;
  return last;
}

}  // namespace

BOOST_AUTO_TEST_CASE(adapter_learns_what_the_head_alone_cannot) {
  const Data data(32);
  TaskModel<dynamic_adapter, double> head_only(relation({}), adapter());
  TaskModel<dynamic_adapter, double> with_adapter(relation({"fac"}), adapter());
  init_parameters(head_only.parameters(), 1);
  init_parameters(with_adapter.parameters(), 1);
  const double head_loss = train(head_only, data, 150);
  const double adapter_loss = train(with_adapter, data, 150);
  BOOST_TEST_MESSAGE("final loss: head only " << head_loss << ", with adapter " << adapter_loss
                                              << " (log 4 = " << std::log(4.0) << ")");
  BOOST_TEST(head_loss > 0.95 * std::log(4.0));
  BOOST_TEST(adapter_loss < 0.1);
}

BOOST_AUTO_TEST_CASE(gradient_accumulation_equals_the_whole_batch) {
  const Data whole(8), first(4, 3), second(4, 3);
  // Two micro-batches of the same examples as one batch of 8: rebuild them from `whole`.
  TaskModel<dynamic_adapter, double> a(relation({"fac"}), adapter()), b(relation({"fac"}), adapter());
  init_parameters(a.parameters(), 5, 0.05);
  init_parameters(b.parameters(), 5, 0.05);
  const TaskBatch<double> full = whole.batch();
  std::vector<TaskBatch<double>> halves(2, full);
  std::vector<HiddenStates<double>> split(2, HiddenStates<double>(kL));
  for (int h = 0; h < 2; ++h) {
    split[h].prepare(4, kT, kH);
    for (index_t k = 0; k <= kL; ++k)
      std::copy(whole.states[k].data() + h * 4 * kT * kH, whole.states[k].data() + (h + 1) * 4 * kT * kH,
                split[h].slot(k));
    auto& m = halves[h];
    m.batch = 4;
    m.hidden = &split[h];
    m.attention_mask = full.attention_mask.subspan(h * 4 * kT, 4 * kT);
    m.labels = full.labels.subspan(h * 4, 4);
    m.subj = full.subj.subspan(h * 4 * kT, 4 * kT);
    m.obj = full.obj.subspan(h * 4 * kT, 4 * kT);
  }
  Trainer<dynamic_adapter, double> ta(a, train_config(5)), tb(b, train_config(5));
  for (int s = 0; s < 3; ++s) {
    ta.step(std::span<const TaskBatch<double>>(&full, 1));
    tb.step(std::span<const TaskBatch<double>>(halves));
  }
  const auto pa = a.parameters().values(), pb = b.parameters().values();
  double worst = 0;
  for (std::size_t i = 0; i < pa.size(); ++i) worst = std::max(worst, std::fabs(pa[i] - pb[i]));
  BOOST_TEST(worst < 1e-12);
}

BOOST_AUTO_TEST_CASE(resume_from_checkpoint_is_exact) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("kadapter_resume_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const Data data(8);
  const TaskBatch<double> b = data.batch();
  const auto one = std::span<const TaskBatch<double>>(&b, 1);
  TaskModel<dynamic_adapter, double> straight(relation({"fac"}, 0.1f), adapter());
  init_parameters(straight.parameters(), 9);
  Trainer<dynamic_adapter, double> t1(straight, train_config(6));
  for (int s = 0; s < 6; ++s) t1.step(one);

  TaskModel<dynamic_adapter, double> first(relation({"fac"}, 0.1f), adapter());
  init_parameters(first.parameters(), 9);
  Trainer<dynamic_adapter, double> t2(first, train_config(6));
  for (int s = 0; s < 3; ++s) t2.step(one);
  io::save_parameters(first.parameters(), dir / "model.safetensors", {}, /*as_f64=*/true);
  io::save_optimizer(first.parameters(), t2.optimizer(), dir / "optimizer.safetensors",
                     {{"step", std::to_string(t2.steps())}});

  TaskModel<dynamic_adapter, double> resumed(relation({"fac"}, 0.1f), adapter());
  io::load_parameters(resumed.parameters(), io::SafetensorsFile(dir / "model.safetensors"));
  Trainer<dynamic_adapter, double> t3(resumed, train_config(6));
  const auto meta = io::load_optimizer(resumed.parameters(), t3.optimizer(), dir / "optimizer.safetensors");
  t3.set_steps(std::stoll(meta.at("step")));
  for (int s = 0; s < 3; ++s) t3.step(one);
  const auto pa = straight.parameters().values(), pb = resumed.parameters().values();
  BOOST_TEST(std::equal(pa.begin(), pa.end(), pb.begin()));
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(dropout_is_seeded_and_deterministic) {
  const Data data(8);
  const TaskBatch<double> b = data.batch();
  TaskModel<dynamic_adapter, double> m(relation({"fac"}, 0.3f), adapter());
  init_parameters(m.parameters(), 2, 0.05);
  const double l1 = m.forward(b, StepInfo{true, 11, 0, 0});
  const double l2 = m.forward(b, StepInfo{true, 11, 0, 0});
  const double l3 = m.forward(b, StepInfo{true, 12, 0, 0});
  const double l4 = m.forward(b, StepInfo{true, 11, 1, 0});
  const double eval1 = m.forward(b, StepInfo{false, 11, 0, 0});
  const double eval2 = m.forward(b, StepInfo{false, 99, 7, 0});
  BOOST_TEST(l1 == l2);
  BOOST_TEST(l1 != l3);
  BOOST_TEST(l1 != l4);
  BOOST_TEST(eval1 == eval2);  // no dropout outside training
}

BOOST_AUTO_TEST_CASE(no_allocation_in_a_training_step_after_the_first) {
  const Data data(8);
  const TaskBatch<double> b = data.batch();
  for (Task task : {Task::relation, Task::fac}) {
    TaskConfig tc = relation({"fac", "lin"}, 0.1f);
    tc.fusion = Fusion::concat;
    if (task == Task::fac) {
      tc.task = Task::fac;
      tc.adapters = {"fac"};
    }
    TaskModel<dynamic_adapter, double> m(tc, adapter());
    init_parameters(m.parameters(), 4);
    Trainer<dynamic_adapter, double> trainer(m, train_config(10));
    trainer.step(std::span<const TaskBatch<double>>(&b, 1));
    const std::size_t arena = m.workspace_allocations();
    const std::size_t heap = g_allocations.load();
    for (int s = 0; s < 3; ++s) trainer.step(std::span<const TaskBatch<double>>(&b, 1));
    BOOST_TEST(m.workspace_allocations() == arena);
    BOOST_TEST(g_allocations.load() == heap);
  }
}

// A compile-time adapter config computes exactly what the run-time one computes.
inline constexpr AdapterConfig kStaticAdapter{kH, 8, 1, 2, 16, 0, 2, {0, 2}, 1e-5};

BOOST_AUTO_TEST_CASE(static_and_dynamic_adapter_configs_agree) {
  static_assert(kStaticAdapter.parameter_count() == 2 * kStaticAdapter.layer_parameter_count());
  const Data data(8);
  const TaskBatch<double> b = data.batch();
  TaskModel<kStaticAdapter, double> fixed(relation({"fac"}), kStaticAdapter);
  TaskModel<dynamic_adapter, double> dyn(relation({"fac"}), adapter());
  init_parameters(fixed.parameters(), 6, 0.05);
  init_parameters(dyn.parameters(), 6, 0.05);
  BOOST_TEST(fixed.forward(b, StepInfo{}) == dyn.forward(b, StepInfo{}));
  BOOST_CHECK_THROW((TaskModel<kStaticAdapter, double>(relation({"fac"}),
                                                       AdapterConfig{kH, 4, 1, 2, 16, 0, 2, {0, 2}, 1e-5})),
                    Error);
}

// A step whose loss or gradient is not finite updates nothing: the Trainer throws
// NonFiniteStep and the next good step gives what it gives without the bad one.
BOOST_AUTO_TEST_CASE(a_non_finite_step_updates_nothing) {
  const Data data(8);
  Data broken(8);
  broken.states.slot(kL)[3] = std::numeric_limits<double>::quiet_NaN();  // a plug-in point's state
  const TaskBatch<double> good = data.batch(), bad = broken.batch();
  const auto one = [](const TaskBatch<double>& b) { return std::span<const TaskBatch<double>>(&b, 1); };
  TaskModel<dynamic_adapter, double> model(relation({"fac"}, 0.1f), adapter()), reference(relation({"fac"}, 0.1f), adapter());
  init_parameters(model.parameters(), 4);
  init_parameters(reference.parameters(), 4);
  Trainer<dynamic_adapter, double> trainer(model, train_config(5)), straight(reference, train_config(5));
  straight.step(one(good));
  trainer.step(one(good));
  const std::vector<double> before(model.parameters().values().begin(), model.parameters().values().end());
  const std::vector<double> moments(trainer.optimizer().first_moment().begin(), trainer.optimizer().first_moment().end());
  try {
    trainer.step(one(bad));
    BOOST_FAIL("a NaN in the backbone's states gave a finite step");
  } catch (const NonFiniteStep& e) {
    BOOST_TEST(e.step() == 1);
    BOOST_TEST(!std::isfinite(e.report().loss));
    BOOST_TEST(e.report().lr == 3e-3 * train_config(5).schedule.factor(1));  // what step 2 would have used
    BOOST_TEST(std::string(e.what()).find("training step 2: the loss (") != std::string::npos, e.what());
  }
  const auto after = model.parameters().values();
  BOOST_TEST(std::equal(before.begin(), before.end(), after.begin(), after.end()));
  const auto& m = trainer.optimizer().first_moment();
  BOOST_TEST(std::equal(m.begin(), m.end(), moments.begin(), moments.end()));
  BOOST_TEST(trainer.steps() == 1);
  BOOST_TEST(trainer.optimizer().steps() == 1);
  straight.step(one(good));
  trainer.step(one(good));
  const auto a = model.parameters().values(), b = reference.parameters().values();
  BOOST_TEST(std::equal(a.begin(), a.end(), b.begin(), b.end()));
  // Without the check the update happens, as in PyTorch, and spoils the weights.
  TrainConfig unchecked = train_config(5);
  unchecked.stop_on_non_finite = false;
  Trainer<dynamic_adapter, double> careless(model, unchecked);
  BOOST_TEST(!std::isfinite(careless.step(one(bad)).loss));
  const auto spoilt = model.parameters().values();
  BOOST_TEST(std::any_of(spoilt.begin(), spoilt.end(), [](double v) { return !std::isfinite(v); }));
}

// What a TaskModel refuses before it trains: adapter names that collide or are empty, a
// dropout outside [0, 1), plug-in points that do not increase, entity-typing targets outside
// [0, 1].
BOOST_AUTO_TEST_CASE(bad_model_settings_and_targets_are_errors) {
  auto refused = [](const TaskConfig& tc, const AdapterConfig& ac, const std::string& words) {
    try {
      TaskModel<dynamic_adapter, double> m(tc, ac);
      BOOST_ERROR("accepted: " << words);
    } catch (const Error& e) {
      BOOST_TEST(std::string(e.what()).find(words) != std::string::npos, e.what());
    }
  };
  refused(relation({"fac", "fac"}), adapter(), "adapter \"fac\" is named twice");
  refused(relation({"fac", ""}), adapter(), "adapter 2 has no name");
  refused(relation({"fac"}, 1.5f), adapter(), "dropout must be in [0, 1)");
  refused(relation({"fac"}, -0.1f), adapter(), "dropout must be in [0, 1)");
  refused(relation({"fac"}, std::numeric_limits<float>::quiet_NaN()), adapter(), "dropout must be in [0, 1)");
  AdapterConfig down = adapter();
  down.plug_in[0] = 2;
  down.plug_in[1] = 0;
  refused(relation({"fac"}), down, "plug-in points that increase");
  down.plug_in[0] = 2;
  down.plug_in[1] = 2;
  refused(relation({"fac"}), down, "plug-in points that increase");

  TaskConfig typing;
  typing.task = Task::entity_typing;
  typing.num_labels = 2;
  typing.adapters = {"fac"};
  TaskModel<dynamic_adapter, double> model(typing, adapter());
  init_parameters(model.parameters(), 2);
  const Data data(2);
  std::vector<double> targets{1, 0, 0, 1}, start(data.subj);
  TaskBatch<double> b = data.batch();
  b.labels = {};
  b.subj = b.obj = {};
  b.start = start;
  b.targets = targets;
  BOOST_TEST(std::isfinite(model.forward(b, StepInfo{})));
  for (double wrong : {2.0, -0.5, std::numeric_limits<double>::quiet_NaN()}) {
    targets[2] = wrong;
    try {
      (void)model.forward(b, StepInfo{});
      BOOST_ERROR("target " << wrong << " accepted");
    } catch (const Error& e) {
      BOOST_TEST(std::string(e.what()).find("targets must be in [0, 1]: element 2 (row 1)") != std::string::npos, e.what());
    }
  }
  b.targets = std::span<const double>(targets).first(3);
  try {
    (void)model.forward(b, StepInfo{});
    BOOST_ERROR("3 targets accepted");
  } catch (const Error& e) {
    BOOST_TEST(std::string(e.what()).find("targets must be (B, 2) in [0, 1], got 3 values") != std::string::npos, e.what());
  }
}

// TaskBatch::last left at its default reads the backbone's last state (L); it once defaulted
// to 0, and a batch that kept state 0 (a plug-in point) then read the embeddings silently.
BOOST_AUTO_TEST_CASE(the_head_reads_the_last_state_unless_told_otherwise) {
  TaskModel<dynamic_adapter, double> model(relation({"fac"}), adapter());
  init_parameters(model.parameters(), 4);
  Data data(3);
  // Data writes the same marker rows (the ones the head reads) into every state: shift states
  // 0 and 1 so that a head reading either of them sees something else than state 2.
  for (index_t i = 0; i < 3 * kT * kH; ++i) {
    data.states.slot(0)[i] -= 0.3;
    data.states.slot(1)[i] += 0.5;
  }
  TaskBatch<double> b = data.batch();
  BOOST_TEST_REQUIRE(b.last == kL);
  const double explicit_last = model.forward(b, StepInfo{});
  b.last = -1;
  BOOST_TEST(model.forward(b, StepInfo{}) == explicit_last);
  TaskBatch<double> defaulted{.batch = b.batch, .seq = b.seq, .hidden = b.hidden, .attention_mask = b.attention_mask,
                              .labels = b.labels, .targets = {}, .subj = b.subj, .obj = b.obj, .start = {}};
  BOOST_TEST(defaulted.last == -1);
  BOOST_TEST(model.forward(defaulted, StepInfo{}) == explicit_last);
  for (index_t other : {0, 1}) {  // another state is read when asked for
    b.last = other;
    BOOST_TEST(model.forward(b, StepInfo{}) != explicit_last, "last = " << other);
  }

  auto refused = [&](const TaskBatch<double>& batch, const std::string& words) {
    try {
      (void)model.forward(batch, StepInfo{});
      BOOST_ERROR("accepted: " << words);
    } catch (const Error& e) {
      BOOST_TEST(std::string(e.what()).find(words) != std::string::npos, e.what());
    }
  };
  b.last = -2;
  refused(b, "last is -2, expected -1 (the backbone's last state) or a state index 0..2");
  b.last = kL + 1;
  refused(b, "last is 3, expected -1 (the backbone's last state) or a state index 0..2");
  // States 0 and 2 kept (the plug-in points), but not the last one of a 3-layer backbone.
  HiddenStates<double> partial(3, {0, 2});
  partial.prepare(b.batch, b.seq, kH);
  defaulted.hidden = &partial;
  refused(defaulted, "hidden state 3 (TaskBatch::last) was not kept");
}
