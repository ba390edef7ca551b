/// @file encoder_config.hpp
/// @brief Compile-time configuration of the frozen encoder, and the presets.
#pragma once

#include <string>

#include "kadapter/config.hpp"

namespace kadapter {

/// @brief Which pre-trained encoder family: they differ only in embeddings and defaults.
enum class Family {
  roberta,  ///< position ids start at pad_id + 1, one token type, LayerNorm eps 1e-5
  bert,     ///< position ids start at 0, two token types, LayerNorm eps 1e-12
};

/// @brief Sizes of a RoBERTa/BERT encoder. A structural type: usable as a template argument.
///
/// The all-zero value `dynamic_encoder` stands for "sizes known at run time": an encoder
/// instantiated with it takes its sizes from a run-time EncoderConfig and computes the same
/// numbers as one instantiated with a matching preset.
struct EncoderConfig {
  Family family = Family::roberta;
  index_t vocab_size = 0;        ///< rows of the word-embedding table
  index_t max_positions = 0;     ///< rows of the position-embedding table
  index_t token_types = 0;       ///< rows of the token-type table
  index_t hidden = 0;            ///< H, model width
  index_t layers = 0;            ///< L, number of encoder layers
  index_t heads = 0;             ///< A, attention heads (H / A = head width)
  index_t ffn = 0;               ///< width of the feed-forward inner layer
  double layer_norm_eps = 0.0;   ///< LayerNorm epsilon
  index_t pad_id = 0;            ///< id of the padding token

  /// @brief True for the run-time-sized placeholder `dynamic_encoder`.
  constexpr bool is_dynamic() const noexcept { return hidden == 0; }
  /// @brief Width of one attention head.
  constexpr index_t head_dim() const noexcept { return heads > 0 ? hidden / heads : 0; }
  /// @brief Whether the sizes are consistent (positive, H divisible by A).
  constexpr bool valid() const noexcept {
    return vocab_size > 0 && max_positions > 0 && token_types > 0 && hidden > 0 && layers > 0 &&
           heads > 0 && ffn > 0 && hidden % heads == 0 && layer_norm_eps > 0.0 && pad_id >= 0 &&
           pad_id < vocab_size;
  }
  /// @brief First position id of a sequence: pad_id + 1 for RoBERTa, 0 for BERT.
  constexpr index_t position_offset() const noexcept {
    return family == Family::roberta ? pad_id + 1 : 0;
  }
  /// @brief Number of parameters of the encoder (embeddings and layers, no pooler).
  constexpr index_t parameter_count() const noexcept {
    const index_t embeddings = (vocab_size + max_positions + token_types) * hidden + 2 * hidden;
    const index_t attention = 4 * (hidden * hidden + hidden) + 2 * hidden;
    const index_t feed_forward = 2 * hidden * ffn + ffn + hidden + 2 * hidden;
    return embeddings + layers * (attention + feed_forward);
  }

  friend constexpr bool operator==(const EncoderConfig&, const EncoderConfig&) = default;
};

/// @brief Run-time-sized placeholder (like Eigen's `Dynamic`).
inline constexpr EncoderConfig dynamic_encoder{};

/// @brief roberta-base: 12 layers, 768 hidden, 12 heads.
inline constexpr EncoderConfig roberta_base{Family::roberta, 50265, 514, 1, 768, 12, 12, 3072,
                                            1e-5, 1};
/// @brief roberta-large: 24 layers, 1024 hidden, 16 heads (the K-Adapter backbone).
inline constexpr EncoderConfig roberta_large{Family::roberta, 50265, 514, 1, 1024, 24, 16, 4096,
                                             1e-5, 1};
/// @brief bert-base-uncased: 12 layers, 768 hidden, 12 heads.
inline constexpr EncoderConfig bert_base_uncased{Family::bert, 30522, 512, 2, 768, 12, 12, 3072,
                                                 1e-12, 0};
/// @brief sentence-transformers/all-MiniLM-L6-v2: 6 layers, 384 hidden, 12 heads.
inline constexpr EncoderConfig minilm_l6_h384{Family::bert, 30522, 512, 2, 384, 6, 12, 1536,
                                              1e-12, 0};

static_assert(roberta_base.valid() && roberta_large.valid() && bert_base_uncased.valid() &&
              minilm_l6_h384.valid());
// HF RobertaModel / BertModel counts (124,645,632 / 109,482,240) minus the pooler (H*H + H).
static_assert(roberta_base.parameter_count() == 124'645'632 - (768 * 768 + 768));
static_assert(bert_base_uncased.parameter_count() == 109'482'240 - (768 * 768 + 768));

/// @brief A compile-time config as a type, for dispatching run-time configs to presets.
template <EncoderConfig C>
struct ConfigTag {
  static constexpr EncoderConfig value = C;
};

/// @brief Call `f(ConfigTag<P>{})` for the preset P equal to @p cfg, or with
/// `ConfigTag<dynamic_encoder>` when none matches.
template <class F>
decltype(auto) dispatch_encoder_config(const EncoderConfig& cfg, F&& f) {
  if (cfg == roberta_base) return f(ConfigTag<roberta_base>{});
  if (cfg == roberta_large) return f(ConfigTag<roberta_large>{});
  if (cfg == bert_base_uncased) return f(ConfigTag<bert_base_uncased>{});
  if (cfg == minilm_l6_h384) return f(ConfigTag<minilm_l6_h384>{});
  return f(ConfigTag<dynamic_encoder>{});
}

/// @brief Name of the preset equal to @p cfg, or "dynamic".
inline std::string preset_name(const EncoderConfig& cfg) {
  if (cfg == roberta_base) return "roberta_base";
  if (cfg == roberta_large) return "roberta_large";
  if (cfg == bert_base_uncased) return "bert_base_uncased";
  if (cfg == minilm_l6_h384) return "minilm_l6_h384";
  return "dynamic";
}

}  // namespace kadapter
