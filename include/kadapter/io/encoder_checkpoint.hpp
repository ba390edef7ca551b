/// @file encoder_checkpoint.hpp
/// @brief Load a frozen encoder's weights from a HuggingFace safetensors checkpoint.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "kadapter/core/error.hpp"
#include "kadapter/io/safetensors.hpp"
#include "kadapter/io/tensor_report.hpp"
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

}  // namespace detail

/// @brief Load every encoder parameter of @p enc from the checkpoint @p file.
///
/// Tensor names are HuggingFace's, with or without the family prefix (`roberta.` or
/// `bert.`). F32, F64, F16 and BF16 tensors are converted to the compute type. Missing,
/// unexpected and wrongly shaped tensors are all collected and reported in one Error that
/// names each of them; known unused tensors (pooler, id buffers, pre-training heads) are
/// skipped and listed in the returned report. On Cuda the weights are then copied to the
/// device.
template <EncoderConfig C, ComputeScalar T, class B>
EncoderLoadReport load_encoder_weights(FrozenEncoder<C, T, B>& enc, const SafetensorsFile& file) {
  const std::string family_prefix =
      enc.config().family == Family::roberta ? "roberta." : "bert.";
  EncoderLoadReport report;
  bool any_prefixed = false;
  for (const auto& name : file.names())
    if (name.rfind(family_prefix, 0) == 0) any_prefixed = true;
  report.prefix = any_prefixed ? family_prefix : "";

  std::set<std::string> used;
  TensorMismatch bad;
  for (const auto& slot : enc.parameter_table()) {
    const std::string name = report.prefix + slot.name;
    if (!file.contains(name)) {
      bad.missing.push_back(name);
      continue;
    }
    used.insert(name);
    const TensorInfo& info = file.info(name);
    std::vector<index_t> shape(info.shape.begin(), info.shape.end());
    if (shape != slot.shape) {
      bad.misshaped.push_back(name + " has shape " + shape_to_string(shape) + ", expected " +
                          shape_to_string(slot.shape));
      continue;
    }
    if (!is_floating(info.dtype)) {
      bad.misshaped.push_back(name + " has dtype " + std::string(dtype_name(info.dtype)) +
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
      bad.unexpected.push_back(name);
    }
  }
  bad.throw_if_any(file.path().string() + ": checkpoint does not fit the " +
                   preset_name(enc.config()) + " encoder (" +
                   (enc.config().family == Family::roberta ? "roberta" : "bert") + ", H=" +
                   std::to_string(enc.config().hidden) + ", L=" +
                   std::to_string(enc.config().layers) + ")");
  for (const auto& slot : enc.parameter_table()) {
    file.read_into<T>(report.prefix + slot.name,
                      std::span<T>(slot.data, static_cast<std::size_t>(slot.size())));
    require_finite(std::span<const T>(slot.data, static_cast<std::size_t>(slot.size())), file.path().string(),
                   report.prefix + slot.name);
  }
  enc.upload_parameters();
  return report;
}

}  // namespace kadapter::io
