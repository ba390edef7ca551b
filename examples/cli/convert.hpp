// `kadapter convert`: a PyTorch checkpoint (torch.save of a state dict, such as the K-Adapter
// authors' released pytorch_model.bin) as a safetensors file under the same tensor names; with
// the authors' training_args.bin beside it, also the adapter_config.json that --adapter-dirs
// checks a fine-tuning run's flags against.
#pragma once

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/args.hpp"
#include "cli/train.hpp"
#include "kadapter/kadapter.hpp"

namespace kadapter::cli {

namespace detail {

/// The adapter_config.json of a pre-trained adapter of the K-Adapter authors: @p args is their
/// training_args.bin (read from @p args_file: the argparse.Namespace of fac-adapter.py or
/// lin-adapter.py), checked against the adapter's tensors in @p weights. The heads inside the
/// adapter are not among their arguments (their code fixes 12): @p heads.
inline nlohmann::json authors_adapter_config(const nlohmann::json& args, const fs::path& args_file,
                                             const io::TorchCheckpoint& weights, long long heads) {
  const std::string where = args_file.string();
  if (!args.is_object())
    throw Error(where + ": holds " + std::string(args.type_name()) +
                ", expected the arguments of the authors' pre-training script (an argparse.Namespace)");
  auto field = [&](const char* name) -> const nlohmann::json& {
    const auto it = args.find(name);
    if (it == args.end())
      throw Error(where + ": no argument \"" + name + "\" (expected the training_args.bin of the authors' fac-adapter.py or lin-adapter.py)");
    return *it;
  };
  auto count = [&](const char* name, long long lo) {
    const nlohmann::json& v = field(name);
    if (!v.is_number_integer() || v.get<long long>() < lo)
      throw Error(where + ": \"" + name + "\" is " + v.dump() + ", expected an integer of at least " + std::to_string(lo));
    return v.get<long long>();
  };
  const nlohmann::json& task_name = field("task_name");
  std::string task;
  if (task_name == "trex") task = "fac";
  else if (task_name == "find_head") task = "lin";
  else
    throw Error(where + ": \"task_name\" is " + task_name.dump() +
                ", expected one of the authors' pre-training tasks: \"trex\" (the fac adapter) or \"find_head\" (the lin adapter)");
  const long long size = count("adapter_size", 1), layers = count("adapter_transformer_layers", 0);
  const long long skip = count("adapter_skip_layers", 0), max_len = count("max_seq_length", 1);
  // Their main() turns "--adapter_list 0,11,22" into a list of ints before saving; the string
  // form is read too.
  std::vector<long long> plug;
  const nlohmann::json& list = field("adapter_list");
  auto bad_list = [&] {
    return Error(where + ": \"adapter_list\" is " + list.dump() + ", expected increasing plug-in points (a list of integers, or \"0,11,22\")");
  };
  if (list.is_array()) {
    for (const auto& x : list) {
      if (!x.is_number_integer()) throw bad_list();
      plug.push_back(x.get<long long>());
    }
  } else if (list.is_string()) {
    const std::string s = list.get<std::string>();
    for (std::size_t b = 0; b <= s.size();) {
      const std::size_t e = std::min(s.find(',', b), s.size());
      long long x = 0;
      const auto [p, ec] = std::from_chars(s.data() + b, s.data() + e, x);
      if (ec != std::errc() || p != s.data() + e) throw bad_list();
      plug.push_back(x);
      b = e + 1;
    }
  } else {
    throw bad_list();
  }
  if (plug.empty() || plug[0] < 0) throw bad_list();
  for (std::size_t j = 1; j < plug.size(); ++j)
    if (plug[j] <= plug[j - 1]) throw bad_list();
  if (size % heads != 0)
    throw Error("--adapter-heads " + std::to_string(heads) + " does not divide \"adapter_size\": " + std::to_string(size) + " in " + where +
                " (give the number of attention heads inside the adapter)");
  // The tensors must be that adapter: one adapter.K per plug-in point, each of the width and
  // depth the arguments say.
  const std::string wfile = weights.path().string();
  long long hidden = -1;
  for (std::size_t k = 0; k <= plug.size(); ++k) {
    const std::string down = "adapter." + std::to_string(k) + ".down_project.weight";
    if (k == plug.size()) {
      if (weights.contains(down))
        throw Error(wfile + " has tensor '" + down + "' but \"adapter_list\" in " + where + " has " + std::to_string(plug.size()) +
                    " plug-in points " + list.dump());
      break;
    }
    if (!weights.contains(down))
      throw Error(wfile + " has no tensor '" + down + "' (\"adapter_list\" in " + where + " has " + std::to_string(plug.size()) +
                  " plug-in points " + list.dump() + "; expected the authors' adapter model)");
    const auto& shape = weights.tensor(down).shape;
    if (shape.size() != 2 || shape[0] != size || (hidden >= 0 && shape[1] != hidden))
      throw Error(wfile + ": tensor '" + down + "' has shape " + nlohmann::json(shape).dump() + ", expected [" + std::to_string(size) +
                  ", hidden size] (\"adapter_size\": " + std::to_string(size) + " in " + where + ")");
    hidden = shape[1];
    const std::string prefix = "adapter." + std::to_string(k) + ".encoder.layer.";
    const bool has_last = layers == 0 || weights.contains(prefix + std::to_string(layers - 1) + ".attention.self.query.weight");
    if (!has_last || weights.contains(prefix + std::to_string(layers) + ".attention.self.query.weight"))
      throw Error(wfile + ": adapter " + std::to_string(k) + " does not have " + std::to_string(layers) +
                  " transformer layers (\"adapter_transformer_layers\" in " + where + ")");
  }
  nlohmann::json source = nlohmann::json::object();
  for (const auto& [key, file] : {std::pair{"weights", weights.path()}, std::pair{"training_args", args_file}}) {
    try {  // a file name that is not UTF-8 is left out (JSON)
      (void)io::unicode::decode_utf8(file.filename().string());
      source[key] = file.filename().string();
    } catch (const Error&) {
    }
  }
  if (const auto it = args.find("model_name_or_path"); it != args.end() && it->is_string()) source["model_name_or_path"] = *it;
  return {{"task", task},
          {"hidden", hidden},
          {"adapter_size", size},
          {"adapter_transformer_layers", layers},
          {"adapter_heads", heads},
          {"adapter_list", plug},
          {"adapter_skip_layers", skip},
          {"max_seq_length", max_len},
          {"adapters", {task}},
          {"compat", "official"},
          {"converted_from", source}};
}

/// Whether @p args are those of the authors' adapter pre-training (fac-adapter.py:
/// task_name "trex"; lin-adapter.py: "find_head"), rather than of another script (their
/// fine-tuning scripts save a training_args.bin too).
inline bool authors_pretraining_args(const nlohmann::json& args) {
  if (!args.is_object()) return false;
  const auto it = args.find("task_name");
  return it != args.end() && (*it == "trex" || *it == "find_head");
}

/// @p config without what does not describe the adapter (where it was converted from).
inline nlohmann::json adapter_fields(nlohmann::json config) {
  if (config.is_object()) config.erase("converted_from");
  return config;
}

}  // namespace detail

inline int run_convert(const std::vector<std::string>& argv) {
  Args args("convert",
            {{"in", "FILE", "a PyTorch checkpoint: torch.save of a state dict (zip format, or the legacy format of torch < 1.6)", true, ""},
             {"out", "OUT.safetensors", "the tensors under the same names and element types (a pre-trained adapter: DIR/model.safetensors, for --adapter-dirs DIR)", true, ""},
             {"training-args", "FILE|none", "the authors' training_args.bin of a pre-trained adapter (default: the one beside --in, if it is a pre-training run's): adapter_config.json is then written beside --out; none: do not write it", false, ""},
             {"adapter-heads", "A", "attention heads inside the adapter, for adapter_config.json (not among the authors' arguments: their code fixes 12)", false, "12"}},
            argv);
  if (args.help()) {
    std::fputs(args.usage().c_str(), stdout);
    return 0;
  }
  const fs::path in = args.get("in"), out = args.get("out");
  std::error_code ec;
  if (fs::equivalent(in, out, ec)) throw Error("--out " + out.string() + " is the --in file");
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  if (!fs::is_directory(parent) || fs::is_directory(out))
    throw Error("--out " + out.string() + ": expected a file in an existing directory");
  const long long heads = args.integer("adapter-heads", 1, 1024);
  fs::path args_file = args.get("training-args");
  const bool named = !args_file.empty() && args_file != "none";
  if (args_file == "none") {
    args_file.clear();
  } else if (args_file.empty()) {
    const fs::path beside = (in.has_parent_path() ? in.parent_path() : fs::path(".")) / "training_args.bin";
    if (fs::is_regular_file(beside)) args_file = beside;
  } else if (!fs::is_regular_file(args_file)) {
    throw Error("--training-args " + args_file.string() + ": " + (fs::exists(args_file) ? "not a file" : "not found") +
                " (expected the authors' training_args.bin)");
  }
  if (!args_file.empty() && fs::equivalent(args_file, out, ec))
    throw Error("--out " + out.string() + " is the training arguments file " + args_file.string());
  // Everything is read and checked before anything is written.
  const io::TorchCheckpoint ckpt(in);
  nlohmann::json config;
  std::string args_note;
  if (!args_file.empty()) {
    nlohmann::json saved;
    try {
      saved = io::read_torch_object(args_file);
    } catch (const Error& e) {
      if (named) throw;
      args_note = std::string(e.what()) + ": not read";
    }
    if (args_note.empty() && !named && !detail::authors_pretraining_args(saved)) {
      const auto task = saved.is_object() ? saved.find("task_name") : saved.end();
      args_note = args_file.string() + " is not the arguments of the authors' adapter pre-training (\"task_name\": " +
                  (saved.is_object() && task != saved.end() ? task->dump() : std::string("none")) + ")";
    }
    if (args_note.empty()) {
      try {
        config = detail::authors_adapter_config(saved, args_file, ckpt, heads);
      } catch (const Error& e) {
        if (named) throw;
        throw Error(std::string(e.what()) + " (" + args_file.string() +
                    " was found beside --in; --training-args none converts without adapter_config.json)");
      }
    }
  }
  const fs::path config_file = parent / "adapter_config.json";
  const std::string config_text = config.is_null() ? std::string() : config.dump(1) + "\n";
  if (!config.is_null()) {
    if (out.filename() == "adapter_config.json")
      throw Error("--out " + out.string() + ": the adapter_config.json made from " + args_file.string() +
                  " goes there (name the weights model.safetensors)");
    if (fs::exists(config_file) && detail::adapter_fields(detail::read_run_config(config_file)) != detail::adapter_fields(config))
      throw Error(config_file.string() + " exists and differs from the adapter_config.json made from " + args_file.string() +
                  " (the directory of another run?): remove it, or write --out elsewhere");
  }
  ckpt.save_safetensors(out);
  std::size_t elements = 0;
  for (const auto& name : ckpt.names()) elements += ckpt.tensor(name).data.size() / dtype_size(ckpt.tensor(name).dtype);
  for (const auto& name : ckpt.skipped()) std::fprintf(stderr, "note: %s: '%s' is not a tensor; left out\n", in.c_str(), name.c_str());
  std::fprintf(stderr, "converted %s (%s format): %zu tensors, %zu elements -> %s\n", in.c_str(), ckpt.format().c_str(),
               ckpt.names().size(), elements, out.c_str());
  if (!config.is_null()) {
    detail::write_text_file(config_file, config_text);
    std::fprintf(stderr, "wrote %s from %s (the %s adapter: plug-in points %s, width %lld, %lld layers, %lld heads)\n",
                 config_file.c_str(), args_file.c_str(), config["task"].get<std::string>().c_str(), config["adapter_list"].dump().c_str(),
                 config["adapter_size"].get<long long>(), config["adapter_transformer_layers"].get<long long>(), heads);
  } else if (fs::exists(config_file)) {
    std::fprintf(stderr, "note: %s%s was already there and is kept: --adapter-dirs checks these weights against it\n",
                 args_note.empty() ? "" : (args_note + "; ").c_str(), config_file.c_str());
  } else {
    std::fprintf(stderr, "note: %sno adapter_config.json written (the authors' training_args.bin of a pre-training run gives it), so "
                 "--adapter-dirs checks only the tensors' shapes against the adapter flags\n",
                 args_note.empty() ? "" : (args_note + "; ").c_str());
  }
  return 0;
}

}  // namespace kadapter::cli
