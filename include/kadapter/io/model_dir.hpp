/// @file model_dir.hpp
/// @brief Open a HuggingFace model directory (`config.json` + `model.safetensors`) as the
/// matching compiled preset, or as the run-time-sized encoder when no preset fits.
#pragma once

#include <filesystem>
#include <string>
#include <utility>

#include "kadapter/io/encoder_checkpoint.hpp"
#include "kadapter/io/hf_config.hpp"

namespace kadapter::io {

/// @brief Read `DIR/config.json`, build the encoder it describes, load `DIR/model.safetensors`,
/// then call `f(encoder, report)` with a `FrozenEncoder<P, T, B>&` where P is the preset equal
/// to the config, or `dynamic_encoder`.
/// @tparam T compute type (float or double; float on Cuda)
/// @tparam B backend (Cuda needs kadapter_cuda.hpp)
/// @return whatever @p f returns
template <ComputeScalar T, class B = Cpu, class F>
decltype(auto) with_encoder_dir(const std::filesystem::path& dir, F&& f) {
  if (!std::filesystem::is_directory(dir))
    throw Error(dir.string() + ": not a directory (expected a model directory holding "
                               "config.json and model.safetensors)");
  const EncoderConfig cfg = read_hf_config(dir / "config.json");
  const auto weights = dir / "model.safetensors";
  if (!std::filesystem::exists(weights))
    throw Error(weights.string() + ": not found (the model directory needs model.safetensors)");
  SafetensorsFile file(weights);
  // Before allocating the encoder: a config that asks for more weights than the file holds
  // (a wrong or damaged config.json) would otherwise fail only after a huge allocation.
  double held = 0;
  for (const auto& name : file.names()) {
    double count = 1;
    for (const auto d : file.info(name).shape) count *= static_cast<double>(d);
    held += count;
  }
  const double needed = (static_cast<double>(cfg.vocab_size) + static_cast<double>(cfg.max_positions) +
                         static_cast<double>(cfg.token_types)) * static_cast<double>(cfg.hidden) +
                        static_cast<double>(cfg.layers) * static_cast<double>(cfg.hidden) *
                            (4.0 * static_cast<double>(cfg.hidden) + 2.0 * static_cast<double>(cfg.ffn));
  if (needed > held)
    throw Error((dir / "config.json").string() + ": describes an encoder of about " + std::to_string(needed) +
                " weights (vocab_size " + std::to_string(cfg.vocab_size) + ", max_position_embeddings " +
                std::to_string(cfg.max_positions) + ", hidden_size " + std::to_string(cfg.hidden) +
                ", num_hidden_layers " + std::to_string(cfg.layers) + ", intermediate_size " + std::to_string(cfg.ffn) +
                ") but " + weights.string() + " holds " + std::to_string(held) + " values");
  return dispatch_encoder_config(cfg, [&](auto tag) -> decltype(auto) {
    FrozenEncoder<decltype(tag)::value, T, B> enc(cfg);
    EncoderLoadReport report = load_encoder_weights(enc, file);
    return f(enc, report);
  });
}

}  // namespace kadapter::io
