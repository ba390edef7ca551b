// Task-model cases run the same way on every backend: tests/cuda/model_reference.cpp runs them
// with B = Cpu (compiled by the C++ compiler), test_cuda_models.cu with B = Cuda, and
// tests/models/test_device_emulation.cpp with the emulated device; the tests compare the
// results with the Cpu run. Each case is a TaskModel on random backbone states with dropout on:
// one forward/backward pass (loss, logits, every gradient), then three Trainer steps of two
// micro-batches each with clipping and weight decay (losses, parameters, AdamW moments).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kadapter/models/task_model.hpp"
#include "kadapter/models/init.hpp"
#include "kadapter/train/trainer.hpp"

namespace cases {

using kadapter::index_t;

/// One task model and its inputs, all in host memory.
struct ModelCase {
  std::string name;
  kadapter::TaskConfig task;
  kadapter::AdapterConfig adapter;
  index_t batch = 0, seq = 0, layers = 0;
  std::vector<index_t> keep;               // the kept hidden states (plug-in points and last)
  std::vector<std::vector<float>> hidden;  // one (batch·seq, H) array per kept state
  std::vector<std::int64_t> mask, labels;
  std::vector<float> subj, obj, start, targets;
  /// Tensors whose gradient is 0 in exact arithmetic, so that the computed one is rounding
  /// noise (multiple choice: one classifier bias shared by every choice cancels in the
  /// softmax over the choices). Compared against the largest gradient of the model.
  std::vector<std::string> zero_gradient;
};

/// What a case computes.
struct CaseResult {
  float loss = 0;
  std::vector<float> logits, grads;
  std::vector<double> step_losses, grad_norms;
  std::vector<float> initial;                              // the parameters before training
  std::vector<float> values, first_moment, second_moment;  // after the Trainer steps
  std::vector<double> resumed_losses;                      // two more steps, from a checkpoint
  std::vector<float> resumed_values;                       // (a fresh model and Trainer)
  std::vector<float> eval_logits;                          // eval forward on a batch twice as large
  std::vector<kadapter::ParamSlot<float>> table;            // names and offsets
};

/// The cases: every task, both fusions, both compat modes, frozen and trainable adapters.
inline std::vector<ModelCase> model_cases() {
  using namespace kadapter;
  std::vector<ModelCase> out;
  const auto make = [&](std::string name, Task task, index_t labels, std::vector<std::string> adapters, Fusion fusion,
                        Compat compat, index_t batch, index_t seq) {
    ModelCase c;
    c.name = std::move(name);
    c.task.task = task;
    c.task.num_labels = labels;
    c.task.adapters = std::move(adapters);
    c.task.fusion = fusion;
    c.task.compat = compat;
    c.task.dropout = 0.1f;
    c.task.qa_a_rate = 0.75;
    c.task.qa_b_rate = 1.25;
    // H = 32, adapters of two layers at states 0, 2 and 3 of a 4-layer backbone, skip 2.
    c.adapter = AdapterConfig{32, 24, 2, 4, 48, 2, 3, {0, 2, 3}, 1e-5};
    c.batch = batch;
    c.seq = seq;
    c.layers = 4;
    c.keep = {0, 2, 3, 4};
    std::mt19937 rng(static_cast<unsigned>(out.size() * 101 + 7));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const index_t n = batch * seq, h = c.adapter.hidden;
    for (std::size_t k = 0; k < c.keep.size(); ++k) {
      std::vector<float> state(static_cast<std::size_t>(n * h));
      for (float& x : state) x = u(rng);
      c.hidden.push_back(std::move(state));
    }
    // Sequence b has seq - 3·(b % 3) real tokens.
    c.mask.assign(static_cast<std::size_t>(n), 0);
    for (index_t b = 0; b < batch; ++b)
      for (index_t t = 0; t < seq - 3 * (b % 3); ++t) c.mask[static_cast<std::size_t>(b * seq + t)] = 1;
    const auto real = [&](index_t b) { return seq - 3 * (b % 3); };
    switch (task) {
      case Task::fac:
      case Task::relation:
        c.subj.assign(static_cast<std::size_t>(n), 0.0f);
        c.obj.assign(static_cast<std::size_t>(n), 0.0f);
        for (index_t b = 0; b < batch; ++b) {
          c.labels.push_back((b * 5 + 1) % labels);
          c.subj[static_cast<std::size_t>(b * seq + 1)] = 1.0f;
          c.obj[static_cast<std::size_t>(b * seq + real(b) - 2)] = 1.0f;
        }
        break;
      case Task::lin:
        for (index_t b = 0; b < batch; ++b)
          for (index_t t = 0; t < seq; ++t)
            c.labels.push_back(t < real(b) ? (t * 7 + b) % real(b) : -100);
        break;
      case Task::entity_typing:
        c.start.assign(static_cast<std::size_t>(n), 0.0f);
        for (index_t b = 0; b < batch; ++b) {
          c.start[static_cast<std::size_t>(b * seq + 2)] = 1.0f;
          for (index_t r = 0; r < labels; ++r) c.targets.push_back((b + r) % 3 == 0 ? 1.0f : 0.0f);
        }
        break;
      case Task::multiple_choice:
        for (index_t q = 0; q < batch / labels; ++q) c.labels.push_back(q % labels);
        c.zero_gradient = {"classifier.bias"};
        break;
    }
    out.push_back(std::move(c));
  };
  make("fac", Task::fac, 40, {"fac"}, Fusion::concat, Compat::standard, 4, 36);
  make("fac_official", Task::fac, 40, {"fac"}, Fusion::concat, Compat::official, 4, 36);
  make("lin", Task::lin, 36, {"lin"}, Fusion::concat, Compat::standard, 3, 36);
  make("lin_official", Task::lin, 36, {"lin"}, Fusion::concat, Compat::official, 3, 36);
  make("entity_typing_concat", Task::entity_typing, 9, {"fac", "lin"}, Fusion::concat, Compat::standard, 4, 20);
  make("relation_add", Task::relation, 7, {"fac", "lin"}, Fusion::add, Compat::standard, 4, 20);
  make("relation_head_only", Task::relation, 7, {}, Fusion::concat, Compat::standard, 4, 20);
  make("multiple_choice_add", Task::multiple_choice, 2, {"fac"}, Fusion::add, Compat::standard, 6, 20);
  make("multiple_choice_official_concat", Task::multiple_choice, 3, {"fac", "lin"}, Fusion::concat, Compat::official, 6,
       20);
  // A frozen first adapter: its gradients stay zero, AdamW leaves it alone.
  out[4].task.adapter_trainable = {false, true};
  return out;
}

/// Run @p c on backend @p B: the same initial parameters (init_parameters on the host store),
/// one forward/backward, then three Trainer steps.
template <class B>
CaseResult run_case(const ModelCase& c) {
  using namespace kadapter;
  TaskModel<dynamic_adapter, float, B> model(c.task, c.adapter);
  init_parameters(model.parameters(), 11, 0.05);
  CaseResult r;
  r.initial.assign(model.parameters().values().begin(), model.parameters().values().end());
  HiddenStates<float> host(c.layers, c.keep);
  host.prepare(c.batch, c.seq, c.adapter.hidden);
  for (std::size_t k = 0; k < c.keep.size(); ++k) {
    const auto& src = c.hidden[k];
    std::copy(src.begin(), src.end(), host.slot(c.keep[k]));
  }
  HiddenStates<float, B> states(c.layers, c.keep);
  states.assign(host);
  const TaskBatch<float, B> batch{.batch = c.batch, .seq = c.seq, .hidden = &states, .last = c.layers,
                                  .attention_mask = c.mask, .labels = c.labels, .targets = c.targets,
                                  .subj = c.subj, .obj = c.obj, .start = c.start};
  model.zero_grad();
  r.loss = model.forward(batch, StepInfo{true, 42, 3, 1});
  model.backward();
  const auto logits = model.logits();
  r.logits.resize(static_cast<std::size_t>(logits.size()));
  copy_to_host(B{}, std::span<float>(r.logits), logits.data());
  const auto g = model.parameters().gradients();
  r.grads.assign(g.begin(), g.end());
  r.table = model.parameters().table();

  // AdamW's eps is 1e-3 here, not 1e-8: with a tiny eps each update is about lr · sign(g),
  // so an element whose exact gradient is ~0 (the key biases) moves by ±lr on rounding
  // noise, on either backend differently. With eps = 1e-3 the update is smooth in g, and the
  // two backends' parameters agree to fp32 rounding. lr · weight decay = 1e-2 per step, so a
  // decay applied to the wrong tensors would show far above the tolerance.
  TrainConfig tc;
  tc.adam.lr = 2e-4;
  tc.adam.eps = 1e-3;
  tc.adam.weight_decay = 50.0;
  tc.schedule = WarmupLinearSchedule{1, 5};
  tc.max_grad_norm = 0.5;
  Trainer<dynamic_adapter, float, B> trainer(model, tc);
  const TaskBatch<float, B> micro[2] = {batch, batch};
  for (int s = 0; s < 3; ++s) {
    const StepReport rep = trainer.step(std::span<const TaskBatch<float, B>>(micro, 2));
    r.step_losses.push_back(rep.loss);
    r.grad_norms.push_back(rep.grad_norm);
  }
  const auto v = model.parameters().values();
  r.values.assign(v.begin(), v.end());
  auto& adam = trainer.optimizer();
  r.first_moment.assign(adam.first_moment().begin(), adam.first_moment().end());
  r.second_moment.assign(adam.second_moment().begin(), adam.second_moment().end());

  // Resume: the parameters and AdamW state into a fresh model and Trainer (the way a
  // checkpoint is loaded), two more steps.
  TaskModel<dynamic_adapter, float, B> resumed(c.task, c.adapter);
  std::copy(r.values.begin(), r.values.end(), resumed.parameters().values().begin());
  Trainer<dynamic_adapter, float, B> again(resumed, tc);
  AdamW<float>& state = again.optimizer();
  state.first_moment().assign(adam.first_moment().begin(), adam.first_moment().end());
  state.second_moment().assign(adam.second_moment().begin(), adam.second_moment().end());
  state.set_steps(adam.steps());
  again.set_steps(trainer.steps());
  for (int s = 0; s < 2; ++s) r.resumed_losses.push_back(again.step(std::span<const TaskBatch<float, B>>(micro, 2)).loss);
  const auto rv = resumed.parameters().values();
  r.resumed_values.assign(rv.begin(), rv.end());

  // Evaluation (no dropout, nothing kept) on a batch of twice the sequences: every arena and
  // the hidden states grow.
  const index_t n = c.batch * c.seq, h = c.adapter.hidden;
  HiddenStates<float> host2(c.layers, c.keep);
  host2.prepare(2 * c.batch, c.seq, h);
  for (std::size_t k = 0; k < c.keep.size(); ++k) {
    std::copy(c.hidden[k].begin(), c.hidden[k].end(), host2.slot(c.keep[k]));
    std::copy(c.hidden[k].begin(), c.hidden[k].end(), host2.slot(c.keep[k]) + n * h);
  }
  HiddenStates<float, B> states2(c.layers, c.keep);
  states2.assign(host2);
  const auto twice = [](const auto& v) {
    auto out = v;
    out.insert(out.end(), v.begin(), v.end());
    return out;
  };
  const std::vector<std::int64_t> mask2 = twice(c.mask), labels2 = twice(c.labels);
  const std::vector<float> subj2 = twice(c.subj), obj2 = twice(c.obj), start2 = twice(c.start), targets2 = twice(c.targets);
  const TaskBatch<float, B> big{.batch = 2 * c.batch, .seq = c.seq, .hidden = &states2, .last = c.layers,
                                .attention_mask = mask2, .labels = labels2, .targets = targets2,
                                .subj = subj2, .obj = obj2, .start = start2};
  resumed.forward(big, StepInfo{});
  const auto lg = resumed.logits();
  r.eval_logits.resize(static_cast<std::size_t>(lg.size()));
  copy_to_host(B{}, std::span<float>(r.eval_logits), lg.data());
  return r;
}

}  // namespace cases
