/// @file model_dir.hpp
/// @brief Open a HuggingFace model directory (`config.json` + `model.safetensors`) as the
/// matching compiled preset, or as the run-time-sized encoder when no preset fits.
#pragma once

#include <filesystem>
#include <utility>

#include "kadapter/io/encoder_checkpoint.hpp"
#include "kadapter/io/hf_config.hpp"

namespace kadapter::io {

/// @brief Read `DIR/config.json`, build the encoder it describes, load `DIR/model.safetensors`,
/// then call `f(encoder, report)` with a `FrozenEncoder<P, T>&` where P is the preset equal to
/// the config, or `dynamic_encoder`.
/// @tparam T compute type (float or double)
/// @return whatever @p f returns
template <ComputeScalar T, class F>
decltype(auto) with_encoder_dir(const std::filesystem::path& dir, F&& f) {
  if (!std::filesystem::is_directory(dir))
    throw Error(dir.string() + ": not a directory (expected a model directory holding "
                               "config.json and model.safetensors)");
  const EncoderConfig cfg = read_hf_config(dir / "config.json");
  const auto weights = dir / "model.safetensors";
  if (!std::filesystem::exists(weights))
    throw Error(weights.string() + ": not found (the model directory needs model.safetensors)");
  SafetensorsFile file(weights);
  return dispatch_encoder_config(cfg, [&](auto tag) -> decltype(auto) {
    FrozenEncoder<decltype(tag)::value, T> enc(cfg);
    EncoderLoadReport report = load_encoder_weights(enc, file);
    return f(enc, report);
  });
}

}  // namespace kadapter::io
