// Whole task models against finite differences in double precision: every trainable
// parameter of adapters, fusion and heads, for every task, in both compat modes, with
// padding, skip connections, frozen adapters and (fixed) dropout.
#define BOOST_TEST_MODULE task_gradients
#include <boost/test/unit_test.hpp>

#include <random>
#include <string>
#include <vector>

#include "kadapter/kadapter.hpp"
#include "support/gradcheck.hpp"

using namespace kadapter;

namespace {

constexpr index_t kB = 4, kT = 5, kH = 8, kL = 3;

// Random backbone hidden states (the gradient stops there, so any values will do) and a
// batch whose rows 1 and 3 are padded.
struct Fixture {
  HiddenStates<double> states{kL};
  std::vector<std::int64_t> mask, labels;
  std::vector<double> targets, subj, obj, start;
  std::mt19937_64 rng{7};
  static constexpr index_t lengths[kB] = {5, 3, 5, 2};

  Fixture() {
    states.prepare(kB, kT, kH);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (index_t k = 0; k <= kL; ++k)
      for (index_t i = 0; i < kB * kT * kH; ++i) states.slot(k)[i] = normal(rng);
    for (index_t b = 0; b < kB; ++b)
      for (index_t t = 0; t < kT; ++t) mask.push_back(t < lengths[b] ? 1 : 0);
  }

  TaskBatch<double> batch(Task task, index_t labels_count) {
    TaskBatch<double> tb;
    tb.batch = kB;
    tb.seq = kT;
    tb.hidden = &states;
    tb.last = kL;
    tb.attention_mask = mask;
    std::uniform_int_distribution<int> pick(0, 1);
    labels.clear();
    subj.assign(kB * kT, 0.0);
    obj.assign(kB * kT, 0.0);
    start.assign(kB * kT, 0.0);
    targets.clear();
    for (index_t b = 0; b < kB; ++b) {
      subj[b * kT + 1] = 1.0;
      obj[b * kT + (b % 2 == 0 ? 3 : 0)] = 1.0;
      start[b * kT + 1] = 0.7;  // the kernels take any weights, not only one-hot rows
      start[b * kT + 0] = 0.3;
    }
    switch (task) {
      case Task::fac:
      case Task::relation:
        for (index_t b = 0; b < kB; ++b) labels.push_back((b * 2 + 1) % labels_count);
        break;
      case Task::lin:
        for (index_t i = 0; i < kB * kT; ++i)
          labels.push_back(mask[i] ? (i * 3 + 1) % lengths[i / kT] : 0);
        break;
      case Task::entity_typing:
        for (index_t i = 0; i < kB * labels_count; ++i) targets.push_back(pick(rng));
        break;
      case Task::multiple_choice:
        for (index_t q = 0; q < kB / labels_count; ++q) labels.push_back(q % labels_count);
        break;
    }
    tb.labels = labels;
    tb.targets = targets;
    tb.subj = subj;
    tb.obj = obj;
    tb.start = start;
    return tb;
  }
};

AdapterConfig small_adapter(index_t skip = 0, index_t layers = 2) {
  return AdapterConfig{kH, 6, layers, 2, 10, skip, 3, {0, 2, 3}, 1e-5};
}

void randomize(ParameterStore<double>& store, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 0.35);
  // Tensor by tensor (the padding between them stays zero), in declaration order.
  for (const auto& s : store.table())
    for (index_t i = 0; i < s.size(); ++i) s.data[i] = normal(rng);
  for (const auto& s : store.table())
    if (s.name.find("LayerNorm.weight") != std::string::npos)
      for (index_t i = 0; i < s.size(); ++i) s.data[i] = 1.0 + 0.2 * normal(rng);
}

// Analytic gradients of the whole model against central differences, tensor by tensor.
void check_model(const TaskConfig& tc, const AdapterConfig& ac, std::uint64_t seed = 1) {
  Fixture fx;
  TaskModel<dynamic_adapter, double> model(tc, ac);
  randomize(model.parameters(), seed);
  // Keep the scores of multiple choice O(1): a saturated softmax has gradients so small that
  // central differences measure only rounding.
  if (const auto* c = model.parameters().find("classifier.weight"))
    for (index_t i = 0; i < c->size(); ++i) c->data[i] *= 0.05;
  const TaskBatch<double> batch = fx.batch(tc.task, tc.num_labels);
  const StepInfo step{true, 1234, 5, 0};  // dropout (if any) is fixed by (seed, step, micro)
  auto& store = model.parameters();
  store.zero_grad();
  model.forward(batch, step);
  model.backward();
  const std::vector<double> analytic(store.gradients().begin(), store.gradients().end());
  auto loss = [&] { return model.forward(batch, step); };
  std::size_t checked = 0;
  for (const auto& s : store.table()) {
    if (!s.trainable) {
      BOOST_TEST(s.grad == nullptr);
      continue;
    }
    // The key biases have an exact gradient of zero (softmax ignores a shift shared by all
    // keys): both sides are rounding noise, compared absolutely below 1e-7.
    test::GradCheckOptions opt;
    opt.zero_guard = 1e-7;
    const auto r = test::check_gradient(
        s.name, std::span<double>(s.data, static_cast<std::size_t>(s.size())),
        std::span<const double>(analytic.data() + s.offset, static_cast<std::size_t>(s.size())),
        loss, opt);
    BOOST_TEST_INFO(task_name(tc.task) << " " << test::to_string(r));
    BOOST_TEST(r.relative_error < 1e-6);
    ++checked;
  }
  BOOST_TEST(checked > 0u);
}

TaskConfig config(Task task, index_t labels, std::vector<std::string> adapters, Compat compat,
                  Fusion fusion = Fusion::concat, float dropout = 0.0f) {
  TaskConfig tc;
  tc.task = task;
  tc.num_labels = labels;
  tc.adapters = std::move(adapters);
  tc.compat = compat;
  tc.fusion = fusion;
  tc.dropout = dropout;
  return tc;
}

}  // namespace

BOOST_AUTO_TEST_CASE(fac_pretraining) {
  for (Compat c : {Compat::standard, Compat::official})
    check_model(config(Task::fac, 5, {"fac"}, c), small_adapter());
}

BOOST_AUTO_TEST_CASE(lin_pretraining) {
  for (Compat c : {Compat::standard, Compat::official})
    check_model(config(Task::lin, kT, {"lin"}, c), small_adapter());
}

BOOST_AUTO_TEST_CASE(entity_typing_concat_and_add) {
  for (Compat c : {Compat::standard, Compat::official})
    for (Fusion f : {Fusion::concat, Fusion::add})
      check_model(config(Task::entity_typing, 9, {"fac", "lin"}, c, f), small_adapter());
}

BOOST_AUTO_TEST_CASE(relation_concat_and_add) {
  for (Compat c : {Compat::standard, Compat::official})
    for (Fusion f : {Fusion::concat, Fusion::add})
      check_model(config(Task::relation, 7, {"fac", "lin"}, c, f), small_adapter());
}

BOOST_AUTO_TEST_CASE(multiple_choice) {
  // Official: the authors' CosmosQA pre-fusion of each adapter with the backbone.
  for (Compat c : {Compat::standard, Compat::official})
    for (Fusion f : {Fusion::concat, Fusion::add}) {
      TaskConfig tc = config(Task::multiple_choice, 2, {"fac", "lin"}, c, f);
      tc.qa_a_rate = 0.5;
      tc.qa_b_rate = 2.0;
      check_model(tc, small_adapter());
    }
}

BOOST_AUTO_TEST_CASE(single_adapter_and_head_only) {
  check_model(config(Task::relation, 4, {"fac"}, Compat::standard, Fusion::concat), small_adapter());
  check_model(config(Task::entity_typing, 9, {}, Compat::standard), small_adapter());
}

BOOST_AUTO_TEST_CASE(frozen_adapter_gets_no_gradient) {
  TaskConfig tc = config(Task::relation, 5, {"fac", "lin"}, Compat::standard);
  tc.adapter_trainable = {false, true};
  check_model(tc, small_adapter());
}

BOOST_AUTO_TEST_CASE(skip_connections) {
  // Official indexing needs s >= 2; the standard rule also allows s = 1.
  check_model(config(Task::fac, 5, {"fac"}, Compat::official), small_adapter(2));
  check_model(config(Task::fac, 5, {"fac"}, Compat::standard), small_adapter(1));
  check_model(config(Task::fac, 5, {"fac"}, Compat::standard), small_adapter(2));
  BOOST_CHECK_THROW((TaskModel<dynamic_adapter, double>(config(Task::fac, 5, {"fac"}, Compat::official),
                                                        small_adapter(1))),
                    Error);
}

BOOST_AUTO_TEST_CASE(with_dropout) {
  check_model(config(Task::fac, 5, {"fac"}, Compat::standard, Fusion::concat, 0.2f), small_adapter());
  check_model(config(Task::lin, kT, {"lin"}, Compat::official, Fusion::concat, 0.2f), small_adapter(0, 1));
  check_model(config(Task::multiple_choice, 2, {"fac"}, Compat::standard, Fusion::add, 0.2f),
              small_adapter(0, 1));
}

BOOST_AUTO_TEST_CASE(adapter_without_inner_layers) {
  check_model(config(Task::relation, 3, {"fac"}, Compat::standard), small_adapter(0, 0));
}
