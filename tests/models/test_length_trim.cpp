// Length bucketing changes no number: under Compat::standard a batch padded only to its own
// longest sequence gives the same loss and the same gradients as the same batch padded to
// the maximum length, dropout included; the frozen encoder's states of real tokens do not
// depend on the padded length either. Under Compat::official the padding does change the
// numbers, which is why that mode keeps full padding.
#define BOOST_TEST_MODULE length_trim
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kadapter/kadapter.hpp"

using namespace kadapter;

namespace {

constexpr index_t kB = 4, kFull = 9, kH = 8, kL = 3;
constexpr index_t kLengths[kB] = {5, 3, 5, 2};
constexpr index_t kTrim = 5;  // the longest sequence of the batch

// One batch at two padded lengths; the padded positions of the long layout hold garbage.
struct Layout {
  index_t seq = 0;
  HiddenStates<double> states{kL};
  std::vector<std::int64_t> mask, labels;
  std::vector<double> targets, subj, obj, start;

  TaskBatch<double> batch() const {
    return {.batch = kB, .seq = seq, .hidden = &states, .last = kL, .attention_mask = mask, .labels = labels,
            .targets = targets, .subj = subj, .obj = obj, .start = start};
  }
};

struct Pair {
  Layout full, trim;

  Pair(Task task, index_t labels_count) {
    std::mt19937_64 rng(11);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (Layout* l : {&full, &trim}) {
      l->seq = l == &full ? kFull : kTrim;
      l->states.prepare(kB, l->seq, kH);
      for (index_t b = 0; b < kB; ++b)
        for (index_t t = 0; t < l->seq; ++t) l->mask.push_back(t < kLengths[b] ? 1 : 0);
    }
    // Real positions: the same values in both layouts. Padding: unrelated values.
    for (index_t k = 0; k <= kL; ++k)
      for (index_t b = 0; b < kB; ++b)
        for (index_t t = 0; t < kFull; ++t)
          for (index_t c = 0; c < kH; ++c) {
            const double v = normal(rng);
            full.states.slot(k)[(b * kFull + t) * kH + c] = t < kLengths[b] ? v : 3.0 * normal(rng);
            if (t < kTrim) trim.states.slot(k)[(b * kTrim + t) * kH + c] = t < kLengths[b] ? v : -5.0;
          }
    for (Layout* l : {&full, &trim}) {
      const index_t S = l->seq;
      l->subj.assign(static_cast<std::size_t>(kB * S), 0.0);
      l->obj = l->subj;
      l->start = l->subj;
      for (index_t b = 0; b < kB; ++b) {
        l->subj[b * S + 1] = 1.0;
        l->obj[b * S + (b % 2 == 0 ? 3 : 0)] = 1.0;
        l->start[b * S + 1] = 0.7;
        l->start[b * S] = 0.3;
      }
      switch (task) {
        case Task::fac:
        case Task::relation:
          for (index_t b = 0; b < kB; ++b) l->labels.push_back((b * 2 + 1) % labels_count);
          break;
        case Task::lin:
          for (index_t b = 0; b < kB; ++b)
            for (index_t t = 0; t < S; ++t)
              l->labels.push_back(t < kLengths[b] ? (b * S + t * 3 + 1) % kLengths[b] : -100);
          break;
        case Task::entity_typing:
          for (index_t i = 0; i < kB * labels_count; ++i) l->targets.push_back((i * 7 % 3) == 0 ? 1.0 : 0.0);
          break;
        case Task::multiple_choice:
          for (index_t q = 0; q < kB / labels_count; ++q) l->labels.push_back(q % labels_count);
          break;
      }
    }
    // lin labels must agree: recompute the trimmed ones from the full layout's rule.
    if (task == Task::lin)
      for (index_t b = 0; b < kB; ++b)
        for (index_t t = 0; t < kTrim; ++t)
          trim.labels[b * kTrim + t] = full.labels[b * kFull + t];
  }
};

void randomize(ParameterStore<double>& store) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal(0.0, 0.35);
  for (const auto& s : store.table())  // tensor by tensor: the padding between them stays zero
    for (index_t i = 0; i < s.size(); ++i) s.data[i] = normal(rng);
}

struct Run {
  double loss = 0;
  std::vector<double> grads;
};

Run run(const TaskConfig& tc, const AdapterConfig& ac, const Layout& l) {
  TaskModel<dynamic_adapter, double> model(tc, ac);
  randomize(model.parameters());
  model.parameters().zero_grad();
  Run r;
  r.loss = model.forward(l.batch(), StepInfo{true, 99, 4, 0});
  model.backward();
  r.grads.assign(model.parameters().gradients().begin(), model.parameters().gradients().end());
  return r;
}

TaskConfig config(Task task, index_t labels, Compat compat, std::vector<std::string> adapters = {"fac", "lin"}) {
  TaskConfig tc;
  tc.task = task;
  tc.num_labels = labels;
  tc.compat = compat;
  tc.adapters = task == Task::fac || task == Task::lin ? std::vector<std::string>{task_name(task)} : adapters;
  tc.dropout = 0.1f;
  return tc;
}

double max_relative(const std::vector<double>& a, const std::vector<double>& b) {
  double scale = 0, diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::fabs(a[i]));
    diff = std::max(diff, std::fabs(a[i] - b[i]));
  }
  return diff / scale;
}

void check_same(Task task, index_t labels) {
  const AdapterConfig ac{kH, 6, 2, 2, 10, 0, 3, {0, 2, 3}, 1e-5};
  const TaskConfig tc = config(task, labels, Compat::standard);
  Pair p(task, labels);
  const Run full = run(tc, ac, p.full), trim = run(tc, ac, p.trim);
  BOOST_TEST_INFO(task_name(task));
  BOOST_TEST(std::isfinite(full.loss));
  BOOST_TEST(std::fabs(full.loss - trim.loss) <= 1e-13 * std::fabs(full.loss));
  BOOST_TEST(max_relative(full.grads, trim.grads) <= 1e-12);
}

}  // namespace

BOOST_AUTO_TEST_CASE(standard_trimmed_batch_equals_padded_batch) {
  check_same(Task::fac, 3);
  check_same(Task::lin, kFull);  // the head still predicts one of max_seq_length positions
  check_same(Task::relation, 3);
  check_same(Task::entity_typing, 4);
  check_same(Task::multiple_choice, 2);
}

BOOST_AUTO_TEST_CASE(official_padding_changes_the_numbers) {
  // The authors' adapters attend to padded positions, so their values leak in: a trimmed
  // batch is a different computation there, and training keeps full padding.
  const AdapterConfig ac{kH, 6, 2, 2, 10, 0, 3, {0, 2, 3}, 1e-5};
  const TaskConfig tc = config(Task::relation, 3, Compat::official);
  Pair p(Task::relation, 3);
  const Run full = run(tc, ac, p.full), trim = run(tc, ac, p.trim);
  BOOST_TEST(std::fabs(full.loss - trim.loss) > 1e-6);
  // The linguistic head of the authors predicts over all max_seq_length positions: T must match.
  TaskModel<dynamic_adapter, double> lin(config(Task::lin, kFull, Compat::official), ac);
  Pair q(Task::lin, kFull);
  BOOST_CHECK_THROW(lin.forward(q.trim.batch(), StepInfo{}), Error);
}

BOOST_AUTO_TEST_CASE(encoder_states_do_not_depend_on_padding) {
  // A small random RoBERTa-like encoder; the standard options mask padded keys exactly.
  const EncoderConfig c{Family::roberta, 50, 20, 1, 16, 2, 2, 32, 1e-5, 1};
  FrozenEncoder<dynamic_encoder, double> enc(c);
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal(0.0, 0.3);
  for (auto& v : enc.parameters()) v = normal(rng);
  std::vector<std::int64_t> ids_full, mask_full, ids_trim, mask_trim;
  for (index_t b = 0; b < kB; ++b)
    for (index_t t = 0; t < kFull; ++t) {
      const bool real = t < kLengths[b];
      const std::int64_t id = real ? 3 + (b * 7 + t * 5) % 40 : c.pad_id;
      ids_full.push_back(id);
      mask_full.push_back(real);
      if (t < kTrim) {
        ids_trim.push_back(id);
        mask_trim.push_back(real);
      }
    }
  HiddenStates<double> full(c.layers), trim(c.layers);
  enc.forward(full, TokenBatch{kB, kFull, ids_full, mask_full, {}}, ForwardOptions{});
  enc.forward(trim, TokenBatch{kB, kTrim, ids_trim, mask_trim, {}}, ForwardOptions{});
  double worst = 0;
  for (index_t k = 0; k <= c.layers; ++k)
    for (index_t b = 0; b < kB; ++b)
      for (index_t t = 0; t < kLengths[b]; ++t)
        for (index_t j = 0; j < c.hidden; ++j)
          worst = std::max(worst, std::fabs(full[k].data()[(b * kFull + t) * c.hidden + j] -
                                            trim[k].data()[(b * kTrim + t) * c.hidden + j]));
  BOOST_TEST(worst <= 1e-13);
}
