/// @file checkpoint.hpp
/// @brief Save and load a model's parameters (and optimizer state) as safetensors under the
/// authors' state-dict names.
#pragma once

#include <charconv>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "kadapter/core/error.hpp"
#include "kadapter/io/safetensors.hpp"
#include "kadapter/io/tensor_report.hpp"
#include "kadapter/models/parameters.hpp"
#include "kadapter/train/optimizer.hpp"

namespace kadapter::io {

/// @brief Write every tensor of @p store under its name (F32, or F64 when @p as_f64).
template <class T>
void save_parameters(const ParameterStore<T>& store, const std::filesystem::path& path,
                     const std::map<std::string, std::string>& metadata = {}, bool as_f64 = false) {
  SafetensorsWriter w;
  for (const auto& s : store.table()) {
    std::vector<std::int64_t> shape(s.shape.begin(), s.shape.end());
    if (as_f64) {
      std::vector<double> v(s.data, s.data + s.size());
      w.add<double>(s.name, shape, std::span<const double>(v));
    } else {
      std::vector<float> v(s.data, s.data + s.size());
      w.add<float>(s.name, shape, std::span<const float>(v));
    }
  }
  for (const auto& [k, v] : metadata) w.set_metadata(k, v);
  w.write(path);
}

/// @brief Options of load_parameters.
struct LoadOptions {
  /// Tensors of the file with these name prefixes are skipped without complaint.
  std::vector<std::string> ignore_prefixes;
  /// When not empty, only tensors of the file with one of these prefixes are read.
  std::vector<std::string> only_prefixes;
  /// Rename: a file tensor starting with `from` is read as `to` + rest (applied first match).
  std::vector<std::pair<std::string, std::string>> rename;
  /// Model tensors with these prefixes may be absent from the file (they keep their values).
  std::vector<std::string> optional_prefixes;
  /// Complain about file tensors that match no model tensor.
  bool strict_unexpected = true;
};

/// @brief Load the tensors of @p store from @p file. Missing, unexpected and wrongly shaped
/// tensors are all reported in one Error that names each.
/// @return the names that were loaded
template <class T>
std::vector<std::string> load_parameters(ParameterStore<T>& store, const SafetensorsFile& file,
                                         const LoadOptions& opt = {}) {
  auto starts = [](const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; };
  std::map<std::string, std::string> model_to_file;
  TensorMismatch bad;
  for (const auto& name : file.names()) {
    bool ignored = false;
    for (const auto& p : opt.ignore_prefixes) ignored = ignored || starts(name, p);
    if (!opt.only_prefixes.empty()) {
      bool wanted = false;
      for (const auto& p : opt.only_prefixes) wanted = wanted || starts(name, p);
      ignored = ignored || !wanted;
    }
    if (ignored) continue;
    std::string mapped = name;
    for (const auto& [from, to] : opt.rename)
      if (starts(name, from)) {
        mapped = to + name.substr(from.size());
        break;
      }
    if (store.find(mapped)) {
      model_to_file[mapped] = name;
    } else if (opt.strict_unexpected) {
      bad.unexpected.push_back(name);
    }
  }
  std::vector<std::string> loaded;
  for (const auto& s : store.table()) {
    auto it = model_to_file.find(s.name);
    if (it == model_to_file.end()) {
      bool optional = false;
      for (const auto& p : opt.optional_prefixes) optional = optional || starts(s.name, p);
      if (!optional) bad.missing.push_back(s.name);
      continue;
    }
    const TensorInfo& info = file.info(it->second);
    const std::vector<index_t> shape(info.shape.begin(), info.shape.end());
    if (shape != s.shape) {
      bad.misshaped.push_back(it->second + " has shape " + info.shape_string() + ", expected " +
                              shape_to_string(s.shape));
    } else if (!is_floating(info.dtype)) {
      bad.misshaped.push_back(it->second + " has dtype " + std::string(dtype_name(info.dtype)) +
                          ", expected a floating type");
    }
  }
  bad.throw_if_any(file.path().string() + ": tensors do not fit the model");
  for (const auto& s : store.table()) {
    auto it = model_to_file.find(s.name);
    if (it == model_to_file.end()) continue;
    file.read_into<T>(it->second, std::span<T>(s.data, static_cast<std::size_t>(s.size())));
    require_finite(std::span<const T>(s.data, static_cast<std::size_t>(s.size())), file.path().string(), it->second);
    loaded.push_back(s.name);
  }
  return loaded;
}

/// @brief load_parameters from the safetensors file at @p path (as save_parameters writes it).
template <class T>
std::vector<std::string> load_parameters(ParameterStore<T>& store, const std::filesystem::path& path,
                                         const LoadOptions& opt = {}) {
  return load_parameters(store, SafetensorsFile(path), opt);
}

/// @brief Load a pre-trained adapter (a fac or lin pre-training checkpoint) into the
/// downstream adapter named @p adapter_name: keeps only `adapter.*` tensors and reads them
/// as `NAME_adapter.adapter.*`; the pre-training head (com_dense, self_attention, dense,
/// out_proj) is dropped, as the authors' load_pretrained_adapter does.
template <class T>
void load_pretrained_adapter(ParameterStore<T>& store, const SafetensorsFile& file,
                             const std::string& adapter_name) {
  const std::string target = adapter_name + "_adapter.adapter.";
  bool has_adapter = false;
  std::set<std::string> adapters;  // the model's downstream adapters, for the error
  for (const auto& s : store.table()) {
    has_adapter = has_adapter || s.name.rfind(target, 0) == 0;
    if (const auto at = s.name.find("_adapter.adapter."); at != std::string::npos) adapters.insert(s.name.substr(0, at));
  }
  if (!has_adapter) {
    std::string names;
    for (const auto& a : adapters) names += (names.empty() ? "" : ", ") + a;
    throw Error(file.path().string() + ": the model has no adapter \"" + adapter_name + "\" to load it into (its adapters: " +
                (names.empty() ? "none" : names) + ")");
  }
  LoadOptions opt;
  opt.only_prefixes = {"adapter."};
  opt.rename = {{"adapter.", target}};
  // Everything of the model except this adapter keeps its values.
  std::set<std::string> prefixes;
  for (const auto& s : store.table())
    if (s.name.rfind(target, 0) != 0) prefixes.insert(s.name);
  opt.optional_prefixes.assign(prefixes.begin(), prefixes.end());
  bool any = false;
  for (const auto& n : file.names()) any = any || n.rfind("adapter.", 0) == 0;
  if (!any)
    throw Error(file.path().string() + ": no adapter.* tensors (expected a fac or lin "
                                       "pre-training checkpoint)");
  load_parameters(store, file, opt);
}

/// @brief load_pretrained_adapter from the safetensors file at @p path (a pre-training run's
/// `model.safetensors`).
template <class T>
void load_pretrained_adapter(ParameterStore<T>& store, const std::filesystem::path& path, const std::string& adapter_name) {
  load_pretrained_adapter(store, SafetensorsFile(path), adapter_name);
}

/// @brief Save AdamW's moments and step count (`adamw.m.NAME`, `adamw.v.NAME`, metadata
/// `adamw.steps`) plus caller metadata (scheduler step, data position, seed).
template <class T>
void save_optimizer(const ParameterStore<T>& store, const AdamW<T>& opt, const std::filesystem::path& path,
                    std::map<std::string, std::string> metadata = {}) {
  SafetensorsWriter w;
  const auto& m = opt.first_moment();
  const auto& v = opt.second_moment();
  for (const auto& s : store.table()) {
    if (!s.trainable) continue;
    std::vector<std::int64_t> shape(s.shape.begin(), s.shape.end());
    const std::size_t n = static_cast<std::size_t>(s.size()), o = static_cast<std::size_t>(s.offset);
    if (m.size() == store.values().size()) {
      w.add<T>("adamw.m." + s.name, shape, std::span<const T>(m.data() + o, n));
      w.add<T>("adamw.v." + s.name, shape, std::span<const T>(v.data() + o, n));
    }
  }
  metadata["adamw.steps"] = std::to_string(opt.steps());
  for (const auto& [k, val] : metadata) w.set_metadata(k, val);
  w.write(path);
}

/// @brief Restore what save_optimizer wrote; returns the file's metadata.
template <class T>
std::map<std::string, std::string> load_optimizer(const ParameterStore<T>& store, AdamW<T>& opt,
                                                  const std::filesystem::path& path) {
  SafetensorsFile f(path);
  auto it = f.metadata().find("adamw.steps");
  if (it == f.metadata().end())
    throw Error(path.string() + ": metadata field \"adamw.steps\" is missing (not an optimizer state)");
  std::int64_t steps = -1;
  const std::string& sv = it->second;
  const auto [end, ec] = std::from_chars(sv.data(), sv.data() + sv.size(), steps);
  if (ec != std::errc() || end != sv.data() + sv.size() || steps < 0)
    throw Error(path.string() + ": metadata \"adamw.steps\" = \"" + sv + "\" is not a non-negative integer");
  auto& m = opt.first_moment();
  auto& v = opt.second_moment();
  m.assign(store.values().size(), T(0));
  v.assign(store.values().size(), T(0));
  if (steps > 0)
    for (const auto& s : store.table()) {
      if (!s.trainable) continue;
      const std::vector<std::int64_t> shape(s.shape.begin(), s.shape.end());
      const auto o = static_cast<std::ptrdiff_t>(s.offset);
      const auto mm = f.read<T>("adamw.m." + s.name, shape);
      const auto vv = f.read<T>("adamw.v." + s.name, shape);
      std::copy(mm.begin(), mm.end(), m.begin() + o);
      std::copy(vv.begin(), vv.end(), v.begin() + o);
    }
  opt.set_steps(steps);
  return f.metadata();
}

}  // namespace kadapter::io
