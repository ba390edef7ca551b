/// @file hf_config.hpp
/// @brief Read a HuggingFace `config.json` into an EncoderConfig.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "kadapter/config/encoder_config.hpp"
#include "kadapter/core/error.hpp"

namespace kadapter::io {

namespace detail {

inline index_t json_int(const nlohmann::json& j, const std::string& key, const std::string& file) {
  if (!j.contains(key)) throw Error(file + ": missing field \"" + key + "\"");
  const auto& v = j.at(key);
  if (!v.is_number_integer())
    throw Error(file + ": field \"" + key + "\" must be an integer, got " + v.dump());
  return static_cast<index_t>(v.get<std::int64_t>());
}

}  // namespace detail

/// @brief Parse the text of a HuggingFace `config.json` (RoBERTa or BERT).
///
/// Reads model_type, vocab_size, max_position_embeddings, type_vocab_size, hidden_size,
/// num_hidden_layers, num_attention_heads, intermediate_size, layer_norm_eps, pad_token_id,
/// and checks hidden_act ("gelu", the erf form) and position_embedding_type ("absolute").
/// @param text the JSON text
/// @param file the file name used in error messages
/// @throws Error naming the file and field for anything missing, mistyped or unsupported
inline EncoderConfig parse_hf_config(const std::string& text, const std::string& file) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // a syntax error or a number too large
    throw Error(file + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw Error(file + ": expected a JSON object at the top level");
  EncoderConfig c;
  if (!j.contains("model_type") || !j["model_type"].is_string())
    throw Error(file + ": missing string field \"model_type\" (expected \"roberta\" or \"bert\")");
  const std::string type = j["model_type"].get<std::string>();
  if (type == "roberta") {
    c.family = Family::roberta;
  } else if (type == "bert") {
    c.family = Family::bert;
  } else {
    throw Error(file + ": model_type \"" + type + "\" is not supported (expected \"roberta\" or \"bert\")");
  }
  c.vocab_size = detail::json_int(j, "vocab_size", file);
  c.max_positions = detail::json_int(j, "max_position_embeddings", file);
  c.token_types = detail::json_int(j, "type_vocab_size", file);
  c.hidden = detail::json_int(j, "hidden_size", file);
  c.layers = detail::json_int(j, "num_hidden_layers", file);
  c.heads = detail::json_int(j, "num_attention_heads", file);
  c.ffn = detail::json_int(j, "intermediate_size", file);
  c.pad_id = detail::json_int(j, "pad_token_id", file);
  if (!j.contains("layer_norm_eps") || !j["layer_norm_eps"].is_number())
    throw Error(file + ": missing numeric field \"layer_norm_eps\"");
  c.layer_norm_eps = j["layer_norm_eps"].get<double>();
  if (j.contains("hidden_act")) {
    if (!j["hidden_act"].is_string() || j["hidden_act"].get<std::string>() != "gelu")
      throw Error(file + ": hidden_act " + j["hidden_act"].dump() +
                  " is not supported (expected \"gelu\", the erf form)");
  }
  if (j.contains("position_embedding_type") &&
      j["position_embedding_type"] != nlohmann::json("absolute"))
    throw Error(file + ": position_embedding_type " + j["position_embedding_type"].dump() +
                " is not supported (expected \"absolute\")");
  if (c.hidden <= 0 || c.heads <= 0 || c.hidden % c.heads != 0)
    throw Error(file + ": hidden_size (" + std::to_string(c.hidden) +
                ") must be a positive multiple of num_attention_heads (" +
                std::to_string(c.heads) + ")");
  if (!c.valid())
    throw Error(file + ": sizes must be positive, layer_norm_eps > 0 and pad_token_id inside "
                       "the vocabulary");
  return c;
}

/// @brief Read a HuggingFace `config.json` from disk. @see parse_hf_config
inline EncoderConfig read_hf_config(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f || std::filesystem::is_directory(path)) throw Error(path.string() + ": cannot open the model config (missing, unreadable or a directory)");
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_hf_config(ss.str(), path.string());
}

}  // namespace kadapter::io
