/// @file encoder_checkpoint.hpp
/// @brief Load a frozen encoder's weights from a HuggingFace safetensors checkpoint.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "kadapter/core/error.hpp"
#include "kadapter/io/safetensors.hpp"
#include "kadapter/models/encoder.hpp"

namespace kadapter::io {

/// @brief What load_encoder_weights found besides the tensors it loaded.
struct EncoderLoadReport {
  std::string prefix;                  ///< "roberta.", "bert." or ""
  std::vector<std::string> ignored;    ///< known tensors the frozen encoder does not use
};

namespace detail {

/// @brief Tensors a checkpoint may carry that the frozen encoder does not use: the pooler,
/// buffers of position / token-type ids, and pre-training heads.
inline bool is_ignorable(const std::string& name_without_prefix, const std::string& full_name) {
  auto starts = [](const std::string& s, const char* p) { return s.rfind(p, 0) == 0; };
  return starts(name_without_prefix, "pooler.") ||
         name_without_prefix == "embeddings.position_ids" ||
         name_without_prefix == "embeddings.token_type_ids" || starts(full_name, "lm_head.") ||
         starts(full_name, "cls.") || starts(full_name, "qa_outputs.") ||
         starts(full_name, "classifier.");
}

inline std::string shape_to_string(const std::vector<index_t>& s) {
  std::string r = "[";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace detail

/// @brief Load every encoder parameter of @p enc from the checkpoint @p file.
///
/// Tensor names are HuggingFace's, with or without the family prefix (`roberta.` or
/// `bert.`). F32, F64, F16 and BF16 tensors are converted to the compute type. Missing,
/// unexpected and wrongly shaped tensors are all collected and reported in one Error that
/// names each of them; known unused tensors (pooler, id buffers, pre-training heads) are
/// skipped and listed in the returned report.
template <EncoderConfig C, ComputeScalar T>
EncoderLoadReport load_encoder_weights(FrozenEncoder<C, T>& enc, const SafetensorsFile& file) {
  const std::string family_prefix =
      enc.config().family == Family::roberta ? "roberta." : "bert.";
  EncoderLoadReport report;
  bool any_prefixed = false;
  for (const auto& name : file.names())
    if (name.rfind(family_prefix, 0) == 0) any_prefixed = true;
  report.prefix = any_prefixed ? family_prefix : "";

  std::set<std::string> used;
  std::vector<std::string> missing, misshaped, unexpected;
  for (const auto& slot : enc.parameter_table()) {
    const std::string name = report.prefix + slot.name;
    if (!file.contains(name)) {
      missing.push_back(name);
      continue;
    }
    used.insert(name);
    const TensorInfo& info = file.info(name);
    std::vector<index_t> shape(info.shape.begin(), info.shape.end());
    if (shape != slot.shape) {
      misshaped.push_back(name + " has shape " + detail::shape_to_string(shape) + ", expected " +
                          detail::shape_to_string(slot.shape));
      continue;
    }
    if (!is_floating(info.dtype)) {
      misshaped.push_back(name + " has dtype " + std::string(dtype_name(info.dtype)) +
                          ", expected a floating type (F32, F64, F16, BF16)");
      continue;
    }
  }
  for (const auto& name : file.names()) {
    if (used.count(name)) continue;
    const bool has_prefix = !report.prefix.empty() && name.rfind(report.prefix, 0) == 0;
    const std::string bare = has_prefix ? name.substr(report.prefix.size()) : name;
    if (detail::is_ignorable(bare, name)) {
      report.ignored.push_back(name);
    } else {
      unexpected.push_back(name);
    }
  }
  if (!missing.empty() || !misshaped.empty() || !unexpected.empty()) {
    std::string msg = file.path().string() + ": checkpoint does not fit the " +
                      preset_name(enc.config()) + " encoder (" +
                      (enc.config().family == Family::roberta ? "roberta" : "bert") + ", H=" +
                      std::to_string(enc.config().hidden) + ", L=" +
                      std::to_string(enc.config().layers) + ")";
    auto list = [&msg](const char* what, const std::vector<std::string>& v) {
      if (v.empty()) return;
      msg += "\n  " + std::to_string(v.size()) + " " + what + ":";
      for (const auto& s : v) msg += "\n    " + s;
    };
    list("missing", missing);
    list("wrongly shaped or typed", misshaped);
    list("unexpected", unexpected);
    throw Error(msg);
  }
  for (const auto& slot : enc.parameter_table())
    file.read_into<T>(report.prefix + slot.name,
                      std::span<T>(slot.data, static_cast<std::size_t>(slot.size())));
  return report;
}

}  // namespace kadapter::io
