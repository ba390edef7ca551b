// `kadapter grads`: one forward and backward pass of a task model on one batch, writing the
// loss, the logits and every parameter gradient under the authors' names.
#pragma once

#include <cstdio>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "cli/args.hpp"
#include "cli/encode.hpp"
#include "kadapter/io/checkpoint.hpp"
#include "kadapter/kadapter.hpp"
#include "kadapter/models/task_model.hpp"

namespace kadapter::cli {

namespace detail {

inline Task parse_task(const std::string& s) {
  if (s == "fac") return Task::fac;
  if (s == "lin") return Task::lin;
  if (s == "entity-typing") return Task::entity_typing;
  if (s == "relation") return Task::relation;
  return Task::multiple_choice;
}

/// Adapter sizes from the tensors of an adapter checkpoint: `PREFIX{k}.down_project.weight`
/// (Ha, H), `PREFIX{k}.encoder.layer.{j}.intermediate.dense.weight` (F, Ha).
inline AdapterConfig adapter_config_from(const io::SafetensorsFile& f, const std::string& prefix,
                                         index_t heads, index_t skip,
                                         const std::vector<long long>& plug_in) {
  const std::string file = f.path().string();
  std::set<index_t> adapters, layers;
  const std::regex down("^" + std::regex_replace(prefix, std::regex(R"(\.)"), R"(\.)") +
                        R"((\d+)\.down_project\.weight$)");
  const std::regex layer("^" + std::regex_replace(prefix, std::regex(R"(\.)"), R"(\.)") +
                         R"(0\.encoder\.layer\.(\d+)\.)");
  // Layer numbers in tensor names: small non-negative integers (at most 4 digits here).
  auto number = [&](const std::string& name, const std::string& digits) -> index_t {
    if (digits.size() > 4) throw Error(file + ": tensor " + name + ": layer number " + digits + " is out of range");
    return static_cast<index_t>(std::stol(digits));
  };
  for (const auto& n : f.names()) {
    std::smatch m;
    if (std::regex_search(n, m, down)) adapters.insert(number(n, m[1]));
    if (std::regex_search(n, m, layer)) layers.insert(number(n, m[1]));
  }
  if (adapters.empty()) throw Error(file + ": no tensor " + prefix + "0.down_project.weight");
  const index_t K = static_cast<index_t>(adapters.size());
  if (*adapters.rbegin() != K - 1)
    throw Error(file + ": adapter layers under " + prefix + " are not numbered 0.." + std::to_string(K - 1));
  if (static_cast<index_t>(plug_in.size()) != K)
    throw Error(file + ": holds " + std::to_string(K) + " adapter layers under " + prefix +
                " but --adapter-list names " + std::to_string(plug_in.size()) + " plug-in points");
  if (K > static_cast<index_t>(kMaxPlugPoints))
    throw Error(file + ": more than " + std::to_string(kMaxPlugPoints) + " adapter layers");
  const auto& dshape = f.info(prefix + "0.down_project.weight").shape;
  if (dshape.size() != 2) throw Error(file + ": " + prefix + "0.down_project.weight must be 2-D");
  AdapterConfig c;
  c.size = dshape[0];
  c.hidden = dshape[1];
  c.layers = static_cast<index_t>(layers.size());
  c.heads = heads;
  c.skip_layers = skip;
  c.count = K;
  for (index_t k = 0; k < K; ++k) c.plug_in[static_cast<std::size_t>(k)] = plug_in[static_cast<std::size_t>(k)];
  c.ffn = c.size * 4;
  if (c.layers > 0) {
    const std::string inter = prefix + "0.encoder.layer.0.intermediate.dense.weight";
    if (!f.contains(inter)) throw Error(file + ": missing tensor " + inter);
    const auto& ishape = f.info(inter).shape;
    if (ishape.size() != 2) throw Error(file + ": " + inter + " must be 2-D");
    c.ffn = ishape[0];
  }
  if (c.size % heads != 0)
    throw Error("--adapter-heads " + std::to_string(heads) + " does not divide the adapter width " +
                std::to_string(c.size) + " read from " + file);
  return c;
}

inline index_t rows_of(const io::SafetensorsFile& f, const std::string& name) {
  if (!f.contains(name)) throw Error(f.path().string() + ": missing tensor " + name);
  if (f.info(name).shape.size() != 2) throw Error(f.path().string() + ": " + name + " must be 2-D (labels, hidden)");
  return f.info(name).shape[0];
}

/// A float (B, T) or (B, C) tensor of the batch file, shape-checked.
template <class T>
std::vector<T> read_float_field(const io::SafetensorsFile& f, const std::string& field,
                                std::vector<std::int64_t> shape) {
  if (!f.contains(field)) throw Error(f.path().string() + ": missing tensor '" + field + "'");
  if (!is_floating(f.info(field).dtype))
    throw Error(f.path().string() + ": tensor '" + field + "' has dtype " +
                std::string(dtype_name(f.info(field).dtype)) + ", expected F32");
  std::vector<T> v = f.read<T>(field, shape);
  io::require_finite(std::span<const T>(v), f.path().string(), "'" + field + "'");
  return v;
}

}  // namespace detail

/// What `kadapter grads` computes, as a request (the command line fills it).
struct GradsRequest {
  std::string model, adapter, batch;  ///< backbone dir, adapter/head tensors, batch file
  std::string task;                   ///< fac | lin | entity-typing | relation | multiple-choice
  std::vector<long long> adapter_list;
  index_t heads = 0, skip = 0, choices = 4;
  std::string fusion;                 ///< "", "concat" or "add"
  bool official = false;
  double qa_a_rate = 1.0, qa_b_rate = 1.0;  ///< the authors' CosmosQA pre-fusion weights
};

/// Loss, logits and every parameter gradient of one forward/backward pass.
template <class T>
struct GradsResult {
  T loss{};
  std::vector<T> logits;
  std::vector<std::int64_t> logits_shape;
  struct Grad {
    std::string name;
    std::vector<std::int64_t> shape;
    std::vector<T> values;
  };
  std::vector<Grad> grads;
  index_t sequences = 0;
};

/// @tparam B backend of the backbone and the task model (Cuda needs kadapter_cuda.hpp)
template <class T, class B = Cpu>
GradsResult<T> compute_grads(const GradsRequest& req) {
  using namespace detail;
  const Task task = parse_task(req.task);
  const bool official = req.official;
  io::SafetensorsFile adapter_file(req.adapter);
  io::SafetensorsFile batch_file(req.batch);
  const std::vector<long long>& plug_in = req.adapter_list;
  const index_t heads = req.heads;
  const index_t skip = req.skip;

  // Which adapters the file holds, and their sizes.
  TaskConfig tc;
  tc.task = task;
  tc.compat = official ? Compat::official : Compat::standard;
  tc.dropout = 0.0f;
  tc.qa_a_rate = req.qa_a_rate;
  tc.qa_b_rate = req.qa_b_rate;
  std::string first_prefix;
  if (tc.pretraining()) {
    tc.adapters = {task == Task::fac ? "fac" : "lin"};
    first_prefix = "adapter.";
  } else {
    for (const char* name : {"fac", "lin"})
      if (adapter_file.contains(std::string(name) + "_adapter.adapter.0.down_project.weight"))
        tc.adapters.push_back(name);
    if (!tc.adapters.empty()) first_prefix = tc.adapters[0] + "_adapter.adapter.";
  }
  AdapterConfig ac;
  if (!first_prefix.empty()) {
    ac = adapter_config_from(adapter_file, first_prefix, heads, skip, plug_in);
    for (std::size_t j = 1; j < tc.adapters.size(); ++j)
      if (!(adapter_config_from(adapter_file, tc.adapters[j] + "_adapter.adapter.", heads, skip,
                                plug_in) == ac))
        throw Error(adapter_file.path().string() + ": the " + tc.adapters[j] +
                    " adapter's sizes differ from the " + tc.adapters[0] + " adapter's");
  }
  const std::string& fusion_flag = req.fusion;
  if (!tc.pretraining()) {
    const bool has_concat = adapter_file.contains("task_dense.weight");
    tc.fusion = has_concat ? Fusion::concat : Fusion::add;
    if (!fusion_flag.empty() && fusion_flag != (has_concat ? "concat" : "add"))
      throw Error(adapter_file.path().string() + ": --fusion " + fusion_flag + " but the file " +
                  (has_concat ? "holds task_dense.* (concat fusion)" : "has no task_dense.* (add fusion)"));
  }
  tc.num_labels = rows_of(adapter_file, task == Task::multiple_choice ? "classifier.weight" : "out_proj.weight");
  if (task == Task::multiple_choice) tc.num_labels = req.choices;

  // The pass, given the encoder's config and forward: compiled once, not once per preset as
  // the callable of with_encoder_dir is.
  using Forward = std::function<void(HiddenStates<T, B>&, const TokenBatch&, const ForwardOptions&)>;
  auto with_encoder = [&](const EncoderConfig& ec, const Forward& forward) -> GradsResult<T> {
    if (first_prefix.empty()) {  // head only: the adapter config only carries H
      ac.hidden = ec.hidden;
      ac.size = ac.heads = ac.ffn = 1;
      ac.count = 1;
    }
    if (ac.hidden != ec.hidden)
      throw Error(adapter_file.path().string() + ": adapters project from H = " +
                  std::to_string(ac.hidden) + " but the backbone has H = " + std::to_string(ec.hidden));
    for (std::size_t k = 0; k < plug_in.size(); ++k) {
      if (plug_in[k] > ec.layers)
        throw Error("--adapter-list names hidden state " + std::to_string(plug_in[k]) +
                    " but the backbone has states 0.." + std::to_string(ec.layers));
      if (k > 0 && plug_in[k] <= plug_in[k - 1])
        throw Error("--adapter-list: the plug-in points must increase (" + std::to_string(plug_in[k - 1]) +
                    " is followed by " + std::to_string(plug_in[k]) + "), as the adapter chain runs up the encoder");
    }
    TaskModel<dynamic_adapter, T, B> model(tc, ac);
    io::load_parameters(model.parameters(), adapter_file);

    // The batch. Multiple choice also takes the authors' (questions, choices, T) layout.
    index_t Bn = -1, S = -1;
    std::vector<std::int64_t> ids, mask;
    if (task == Task::multiple_choice && batch_file.contains("input_ids") &&
        batch_file.info("input_ids").shape.size() == 3) {
      const auto shape = batch_file.info("input_ids").shape;
      if (shape[1] != tc.num_labels)
        throw Error(batch_file.path().string() + ": input_ids has " + std::to_string(shape[1]) +
                    " choices per question, but --choices is " + std::to_string(tc.num_labels));
      Bn = shape[0] * shape[1];
      S = shape[2];
      ids = batch_file.read<std::int64_t>("input_ids", shape);
      mask = batch_file.read<std::int64_t>("attention_mask", shape);
    } else {
      ids = read_token_field(batch_file, "input_ids", Bn, S);
      mask = read_token_field(batch_file, "attention_mask", Bn, S);
    }
    std::vector<std::int64_t> labels;
    std::vector<T> targets, subj, obj, start;
    if (task == Task::lin) {
      labels = read_token_field(batch_file, "labels", Bn, S);
    } else if (task == Task::entity_typing) {
      targets = read_float_field<T>(batch_file, "labels", {Bn, tc.num_labels});
    } else {
      if (task == Task::multiple_choice && Bn % tc.num_labels != 0)
        throw Error(batch_file.path().string() + ": input_ids has " + std::to_string(Bn) +
                    " rows, not a multiple of --choices " + std::to_string(tc.num_labels) +
                    " (one row per answer of each question)");
      const std::vector<std::int64_t> want{task == Task::multiple_choice ? Bn / tc.num_labels : Bn};
      if (!batch_file.contains("labels")) throw Error(batch_file.path().string() + ": missing tensor 'labels'");
      labels = batch_file.read<std::int64_t>("labels", want);
    }
    if (task == Task::fac || task == Task::relation) {
      subj = read_float_field<T>(batch_file, "subj_special_start_id", {Bn, S});
      obj = read_float_field<T>(batch_file, "obj_special_start_id", {Bn, S});
    }
    if (task == Task::entity_typing) start = read_float_field<T>(batch_file, "start_id", {Bn, S});

    // The frozen backbone: keep the plug-in points and the last state.
    std::vector<index_t> keep(plug_in.begin(), plug_in.end());
    keep.push_back(ec.layers);
    HiddenStates<T, B> states(ec.layers, keep);
    ForwardOptions eo;
    if (official) {
      eo.positions = PositionScheme::official;
      eo.mask_fill = MaskFill::minus_10000;
    }
    try {
      forward(states, TokenBatch{Bn, S, ids, mask, {}}, eo);
    } catch (const Error& e) {
      throw Error(batch_file.path().string() + ": " + e.what());
    }
    const TaskBatch<T, B> tb{.batch = Bn, .seq = S, .hidden = &states, .last = ec.layers, .attention_mask = mask,
                          .labels = labels, .targets = targets, .subj = subj, .obj = obj, .start = start};
    StepInfo step;
    step.training = true;  // keep activations; dropout is 0
    T loss;
    try {
      loss = model.forward(tb, step);
    } catch (const Error& e) {
      throw Error(batch_file.path().string() + ": " + e.what());
    }
    model.backward();

    GradsResult<T> r;
    r.loss = loss;
    r.sequences = Bn;
    const auto logits = model.logits();
    r.logits.resize(static_cast<std::size_t>(logits.size()));
    copy_to_host(B{}, std::span<T>(r.logits), logits.data());
    r.logits_shape = {logits.extent(0), logits.extent(1)};
    if (task == Task::lin) r.logits_shape = {Bn, S, logits.extent(1)};
    for (const auto& s : model.parameters().table())
      if (s.grad)
        r.grads.push_back({s.name, std::vector<std::int64_t>(s.shape.begin(), s.shape.end()),
                           std::vector<T>(s.grad, s.grad + s.size())});
    return r;
  };
  return io::with_encoder_dir<T, B>(req.model, [&](auto& enc, const io::EncoderLoadReport&) {
    return with_encoder(enc.config(), [&enc](HiddenStates<T, B>& states, const TokenBatch& batch, const ForwardOptions& eo) {
      enc.forward(states, batch, eo);
    });
  });
}

#if defined(KA_CLI_WITH_CUDA)
/// compute_grads<float, Cuda> with the products in @p dtype ("fp32", "tf32" or "bf16"),
/// compiled by nvcc in cli/train_cuda.cu.
GradsResult<float> compute_grads_cuda(const GradsRequest& req, const std::string& dtype);
#endif

namespace detail {

template <class T>
int run_grads_typed(const Args& args, bool on_gpu, const std::string& gpu_dtype = "fp32") {
  GradsRequest req;
  req.model = args.get("model");
  req.adapter = args.get("adapter");
  req.batch = args.get("batch");
  req.task = args.get("task");
  req.adapter_list = args.integer_list("adapter-list");
  req.heads = static_cast<index_t>(args.integer("adapter-heads", 1, 4096));
  req.skip = static_cast<index_t>(args.integer("adapter-skip-layers", 0, 64));
  req.choices = static_cast<index_t>(args.integer("choices", 2, 64));
  req.fusion = args.get("fusion");
  req.official = args.get("compat") == "official";
  req.qa_a_rate = args.number("qa-a-rate");
  req.qa_b_rate = args.number("qa-b-rate");
  GradsResult<T> r;
  if (on_gpu) {
#if defined(KA_CLI_WITH_CUDA)
    if constexpr (std::is_same_v<T, float>) r = compute_grads_cuda(req, gpu_dtype);
#else
    static_cast<void>(gpu_dtype);  // run_grads refused --device cuda already
#endif
  } else {
    r = compute_grads<T>(req);
  }
  io::SafetensorsWriter w;
  w.add<T>("loss", {}, std::span<const T>(&r.loss, 1));
  w.add<T>("logits", r.logits_shape, std::span<const T>(r.logits));
  for (const auto& g : r.grads) w.add<T>(g.name + ".grad", g.shape, std::span<const T>(g.values));
  w.set_metadata("task", req.task);
  w.set_metadata("compat", req.official ? "official" : "standard");
  w.write(args.get("out"));
  std::fprintf(stderr, "%s: loss %.8g over %lld sequences; wrote logits and %zu gradients to %s\n",
               req.task.c_str(), static_cast<double>(r.loss), static_cast<long long>(r.sequences),
               r.grads.size(), args.get("out").c_str());
  return 0;
}

}  // namespace detail

inline int run_grads(const std::vector<std::string>& argv) {
  Args args("grads",
            {{"model", "DIR", "backbone directory with config.json and model.safetensors", true, ""},
             {"adapter", "IN.safetensors", "adapters and head under the authors' state-dict names", true, ""},
             {"batch", "BATCH.safetensors", "input_ids, attention_mask, labels and marker rows as the authors' batches hold them", true, ""},
             {"task", "fac|lin|entity-typing|relation|multiple-choice", "the task model", true, ""},
             {"adapter-list", "LIST", "plug-in points, e.g. 0,11,22", true, ""},
             {"adapter-heads", "N", "attention heads inside the adapters", true, ""},
             {"adapter-skip-layers", "K", "skip connections every K adapter layers (0: none)", false, "0"},
             {"fusion", "concat|add", "downstream fusion (checked against the file's tensors)", false, ""},
             {"choices", "C", "multiple choice: sequences per question", false, "4"},
             {"qa-a-rate", "X", "multiple choice, official: weight of the backbone in each adapter's pre-fusion", false, "1"},
             {"qa-b-rate", "X", "multiple choice, official: weight of the adapter in its pre-fusion", false, "1"},
             {"compat", "standard|official", "official: the authors' quirks (see docs/compat.md)", false, "standard"},
             {"dtype", "fp32|fp64|tf32|bf16", "compute precision (tf32, bf16: the GPU's tensor cores for the products, with --device cuda; f32 and f64 are accepted too)", false, "fp32"},
             {"device", "cpu|cuda", "where the pass runs (cuda: f32 only)", false, "cpu"},
             {"out", "OUT.safetensors", "receives loss, logits and NAME.grad", true, ""}},
            argv);
  if (args.help()) {
    std::fputs(args.usage().c_str(), stdout);
    return 0;
  }
  args.choice("task", {"fac", "lin", "entity-typing", "relation", "multiple-choice"});
  args.choice("compat", {"standard", "official"});
  if (args.has("fusion")) args.choice("fusion", {"concat", "add"});
  std::string dtype = args.choice("dtype", {"fp32", "fp64", "tf32", "bf16", "f32", "f64"});
  if (dtype == "fp32" || dtype == "fp64") dtype.erase(1, 1);  // f32 or f64 from here on
  const bool f64 = dtype == "f64";
  const bool on_gpu = args.choice("device", {"cpu", "cuda"}) == "cuda";
  if (!on_gpu && (dtype == "tf32" || dtype == "bf16"))
    throw Error("--dtype " + dtype + " needs --device cuda (the CPU computes in fp32 or fp64)");
  if (on_gpu) {
#if defined(KA_CLI_WITH_CUDA)
    if (f64) throw Error("--device cuda computes in fp32, tf32 or bf16 (--dtype fp64 runs on the CPU)");
#else
    throw Error("--device cuda: this kadapter was built without the CUDA backend (configure with the CUDA toolkit "
                "installed, or pass -DKADAPTER_CUDA=ON)");
#endif
  }
  if (f64) return detail::run_grads_typed<double>(args, false);
  return detail::run_grads_typed<float>(args, on_gpu, dtype == "f32" ? "fp32" : dtype);
}

}  // namespace kadapter::cli
