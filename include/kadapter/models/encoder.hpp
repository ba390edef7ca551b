/// @file encoder.hpp
/// @brief The frozen RoBERTa/BERT encoder: forward only, no gradient state at all.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "kadapter/backend/eigen/kernels.hpp"
#include "kadapter/config/encoder_config.hpp"
#include "kadapter/core/aligned.hpp"
#include "kadapter/core/dtype.hpp"
#include "kadapter/core/error.hpp"
#include "kadapter/core/tensor.hpp"
#include "kadapter/core/workspace.hpp"
#include "kadapter/layers/embeddings.hpp"
#include "kadapter/layers/encoder_layer.hpp"
#include "kadapter/models/parameters.hpp"

namespace kadapter {

/// @brief How position ids are numbered (RoBERTa; BERT always counts 0..T-1).
enum class PositionScheme {
  /// Current HuggingFace: real tokens count from pad_id + 1 in order, padding keeps pad_id.
  huggingface,
  /// The K-Adapter authors' code: pad_id + 1 .. pad_id + T for every row, padding included.
  official,
};

/// @brief The additive value that masks a padded key in attention.
enum class MaskFill {
  lowest,       ///< the dtype's lowest value, as current HuggingFace code adds
  minus_10000,  ///< -10000, as the K-Adapter authors' (older) code adds
};

/// @brief Options of one encoder forward pass.
struct ForwardOptions {
  PositionScheme positions = PositionScheme::huggingface;
  MaskFill mask_fill = MaskFill::lowest;
};

/// @brief A batch of token ids, row-major (B, T), borrowed from the caller.
struct TokenBatch {
  index_t batch = 0;                               ///< B
  index_t seq = 0;                                 ///< T
  std::span<const std::int64_t> input_ids;         ///< (B, T) token ids, row-major
  std::span<const std::int64_t> attention_mask;    ///< (B, T) 1 = real token, 0 = padding
  std::span<const std::int64_t> token_type_ids;    ///< (B, T), or empty for all zeros
};

/// @brief All parameters of an encoder, as views into one allocation.
template <class T>
struct EncoderParams {
  EmbeddingParams<T> embeddings;
  std::vector<EncoderLayerParams<T>> layers;  // L entries
};

namespace detail {

/// @brief Lay out the encoder's parameters in @p base (HuggingFace names, no model prefix).
template <class T>
EncoderParams<T> layout_encoder(const EncoderConfig& c, T* base, std::vector<ParamSlot<T>>& table) {
  ParamLayout<T> lay(base, nullptr, &table, false);
  EncoderParams<T> p;
  p.embeddings.word = lay.matrix("embeddings.word_embeddings.weight", c.vocab_size, c.hidden);
  p.embeddings.position =
      lay.matrix("embeddings.position_embeddings.weight", c.max_positions, c.hidden);
  p.embeddings.token_type =
      lay.matrix("embeddings.token_type_embeddings.weight", c.token_types, c.hidden);
  p.embeddings.norm = lay.norm("embeddings.LayerNorm", c.hidden);
  for (index_t l = 0; l < c.layers; ++l)
    p.layers.push_back(lay.encoder_layer("encoder.layer." + std::to_string(l) + ".", c.hidden, c.ffn));
  KA_ASSERT(lay.used() == c.parameter_count());
  return p;
}

inline std::string batch_position(index_t i, index_t seq) {
  // Appended piece by piece: `"[" + std::to_string(...)` trips GCC 12's -Wrestrict false
  // positive (GCC bug 105329) at -O2 and above.
  std::string s("[");
  s += std::to_string(i / seq);
  s += "][";
  s += std::to_string(i % seq);
  s += "]";
  return s;
}

}  // namespace detail

/// @brief Hidden states of a batch, numbered as HuggingFace numbers them: 0 is the embedding
/// output, k the output of encoder layer k (1-based). Only the indices asked for are stored,
/// in the memory of backend @p B (host memory for Cpu, device memory for Cuda).
template <class T, class B = Cpu>
class HiddenStates {
 public:
  /// @brief Storage for the states @p keep of an encoder with @p num_layers layers
  /// (an empty @p keep keeps all L + 1 states).
  explicit HiddenStates(index_t num_layers, std::vector<index_t> keep = {})
      : num_layers_(num_layers), keep_(std::move(keep)) {
    if (keep_.empty())
      for (index_t k = 0; k <= num_layers; ++k) keep_.push_back(k);
    std::sort(keep_.begin(), keep_.end());
    keep_.erase(std::unique(keep_.begin(), keep_.end()), keep_.end());
    for (index_t k : keep_)
      if (k < 0 || k > num_layers)
        throw Error("hidden state " + std::to_string(k) + " does not exist: the encoder has " +
                    std::to_string(num_layers) + " layers, so states are numbered 0.." +
                    std::to_string(num_layers));
  }

  /// @brief Whether state @p k is stored.
  bool has(index_t k) const noexcept {
    return std::binary_search(keep_.begin(), keep_.end(), k);
  }
  /// @brief The stored indices, ascending.
  const std::vector<index_t>& kept() const noexcept { return keep_; }
  /// @brief L, the encoder's layer count (states are numbered 0..L).
  index_t num_layers() const noexcept { return num_layers_; }
  index_t batch() const noexcept { return batch_; }    ///< B of the last prepare()
  index_t seq() const noexcept { return seq_; }        ///< T of the last prepare()
  index_t hidden() const noexcept { return hidden_; }  ///< H of the last prepare()

  /// @brief State @p k as a (B, T, H) view.
  /// @throws Error when @p k is not one of kept()
  TensorView<const T, dynamic, dynamic, dynamic> operator[](index_t k) const {
    return {slot_const(k), batch_, seq_, hidden_};
  }

  /// @brief Size the storage for (B, T, H); allocates only when it grows.
  void prepare(index_t batch, index_t seq, index_t hidden) {
    batch_ = batch;
    seq_ = seq;
    hidden_ = hidden;
    const std::size_t need = static_cast<std::size_t>(batch * seq * hidden) * keep_.size();
    if (storage_.size() < need) storage_.resize(need);  // 64-byte aligned (device: 256)
  }

  /// @brief Copy the states of @p src, which must keep the same indices, into this object's
  /// memory: host to device, device to host, or within one backend.
  template <class B2>
  void assign(const HiddenStates<T, B2>& src) {
    if (src.kept() != keep_ || src.num_layers() != num_layers_)
      throw Error("HiddenStates::assign: the two objects keep different hidden states");
    prepare(src.batch(), src.seq(), src.hidden());
    const std::size_t n = static_cast<std::size_t>(batch_ * seq_ * hidden_);
    for (index_t k : keep_) {
      const T* from = src[k].data();
      if constexpr (std::is_same_v<B2, Cpu>) {
        copy_from_host(B{}, slot(k), std::span<const T>(from, n));
      } else {
        static_assert(std::is_same_v<B, Cpu>, "device-to-device assign is not needed");
        copy_to_host(B2{}, std::span<T>(slot(k), n), from);
      }
    }
  }

  /// @brief Mutable storage of state @p k (for the encoder that fills it).
  T* slot(index_t k) { return const_cast<T*>(slot_const(k)); }

 private:
  const T* slot_const(index_t k) const {
    auto it = std::lower_bound(keep_.begin(), keep_.end(), k);
    if (it == keep_.end() || *it != k)
      throw Error("hidden state " + std::to_string(k) + " was not kept (kept: " + kept_list() + ")");
    return storage_.data() + (it - keep_.begin()) * batch_ * seq_ * hidden_;
  }
  std::string kept_list() const {
    std::string s;
    for (index_t k : keep_) s += (s.empty() ? "" : ", ") + std::to_string(k);
    return s;
  }
  index_t num_layers_;
  std::vector<index_t> keep_;
  index_t batch_ = 0, seq_ = 0, hidden_ = 0;
  BackendVector<T, B> storage_;
};

/// @brief A frozen, forward-only RoBERTa/BERT encoder.
///
/// It owns its parameters in one allocation and has no gradients, no activation cache and no
/// backward pass: nothing is stored for training, and the hidden states that adapters read
/// are plain outputs.
///
/// @tparam C compile-time sizes (a preset such as `roberta_large`), or `dynamic_encoder` for
///           sizes given at run time; both compute the same numbers.
/// @tparam T compute type, float or double (float on Cuda).
/// @tparam B backend: Cpu, or Cuda (include kadapter_cuda.hpp from a .cu file). On Cuda the
///           parameters live twice: the host array that loaders fill (parameters(),
///           parameter_table()) and a device copy that forward() reads. The device copy is
///           refreshed by upload_parameters(), and by the first forward() after a call of the
///           non-const parameters().
template <EncoderConfig C, ComputeScalar T = float, class B = Cpu>
  requires Backend<B>
class FrozenEncoder {
  static_assert(std::is_same_v<B, Cpu> || std::is_same_v<T, float>, "the CUDA backend computes in fp32");

 public:
  /// @brief The compile-time config (`dynamic_encoder` when sizes are run-time).
  static constexpr EncoderConfig static_config = C;
  /// @brief The compute type.
  using scalar_type = T;
  /// @brief The backend tag.
  using backend_type = B;
  static constexpr bool is_dynamic = C.is_dynamic();
  /// @brief H as a compile-time extent, or `dynamic`.
  static constexpr index_t static_hidden = is_dynamic ? dynamic : C.hidden;
  static_assert(is_dynamic || C.valid(), "invalid compile-time encoder config");

  /// @brief A (B, T, H) view of one hidden state, H static when the config is.
  using StateView = TensorView<const T, dynamic, dynamic, static_hidden>;

  /// @brief An encoder of the compile-time sizes (parameters zero until loaded).
  FrozenEncoder()
    requires(!is_dynamic)
      : FrozenEncoder(C) {}

  /// @brief An encoder of run-time sizes @p cfg. For a static config, @p cfg must equal it.
  explicit FrozenEncoder(const EncoderConfig& cfg) : cfg_(cfg) {
    if (!cfg.valid())
      throw Error("encoder config is inconsistent: sizes must be positive, hidden (" +
                  std::to_string(cfg.hidden) + ") divisible by heads (" +
                  std::to_string(cfg.heads) + "), pad id inside the vocabulary");
    if (!is_dynamic && cfg != C)
      throw Error("encoder config does not match the compile-time preset " + preset_name(C));
    params_storage_.assign(static_cast<std::size_t>(cfg_.parameter_count()), T(0));
    params_ = detail::layout_encoder(cfg_, params_storage_.data(), table_);
    if constexpr (!std::is_same_v<B, Cpu>) {
      device_params_.resize(params_storage_.size());
      std::vector<ParamSlot<T>> device_table;
      params_ = detail::layout_encoder(cfg_, device_params_.data(), device_table);
    }
  }

  FrozenEncoder(const FrozenEncoder&) = delete;
  FrozenEncoder& operator=(const FrozenEncoder&) = delete;

  /// @brief The sizes of this encoder.
  const EncoderConfig& config() const noexcept { return cfg_; }
  /// @brief Parameter views, by layer, in the backend's memory (what forward() reads).
  const EncoderParams<T>& params() const noexcept { return params_; }
  /// @brief Every parameter with its HuggingFace name (no `roberta.`/`bert.` prefix),
  /// pointing into the host array.
  const std::vector<ParamSlot<T>>& parameter_table() const noexcept { return table_; }
  /// @brief All parameters as one flat host array, in parameter_table() order. On Cuda,
  /// the next forward() copies it to the device.
  std::span<T> parameters() noexcept {
    uploaded_ = false;
    return params_storage_;
  }
  /// @brief All parameters as one flat host array (read only).
  std::span<const T> parameters() const noexcept { return params_storage_; }
  /// @brief Copy the host parameters to the backend's memory (a no-op on Cpu). Call it after
  /// writing them through parameter_table(); forward() does it after parameters().
  void upload_parameters() {
    if constexpr (!std::is_same_v<B, Cpu>)
      copy_from_host(B{}, device_params_.data(), std::span<const T>(params_storage_));
    uploaded_ = true;
  }
  /// @brief How often the scratch arena has allocated (stays constant once warmed up).
  std::size_t workspace_allocations() const noexcept { return ws_.allocations(); }

  /// @brief Run the encoder on @p in and store the hidden states @p out keeps.
  ///
  /// @param[out] out hidden states; sized here (allocates only when it must grow)
  /// @param in token ids, attention mask and optional token types, (B, T) each
  /// @param opt position numbering and mask fill
  /// @throws Error when an id, token type or position falls outside the model's tables
  void forward(HiddenStates<T, B>& out, const TokenBatch& in, const ForwardOptions& opt = {}) {
    const index_t Bt = in.batch, S = in.seq, H = cfg_.hidden, F = cfg_.ffn, N = Bt * S;
    if (out.num_layers() != cfg_.layers)
      throw Error("HiddenStates was made for " + std::to_string(out.num_layers()) +
                  " layers, the encoder has " + std::to_string(cfg_.layers));
    validate(in);
    out.prepare(Bt, S, H);
    if (!uploaded_) upload_parameters();

    // Plan the step's scratch: the key mask, two ping-pong states and one layer's scratch.
    const std::size_t n = static_cast<std::size_t>(N);
    using WS = Workspace<T, B>;
    const LayerDims dims{Bt, S, H, cfg_.heads, F, cfg_.layer_norm_eps};
    ws_.reset();
    ws_.reserve(WS::padded(n) + 2 * WS::padded(n * H) +
                encoder_layer_forward_scratch<T, B>(dims, false));
    positions_.resize(n);  // grows only when N grows
    make_positions(in, opt.positions);
    std::span<T> key_mask(ws_.take(n), n);
    const T fill = opt.mask_fill == MaskFill::lowest ? std::numeric_limits<T>::lowest() : T(-10000);
    std::span<const std::int64_t> ids = in.input_ids, positions = positions_, types = in.token_type_ids;
    if constexpr (std::is_same_v<B, Cpu>) {
      additive_key_mask<T>(key_mask, in.attention_mask, fill);
    } else {
      // The kernels read ids and the mask from device memory.
      mask_host_.resize(n);
      additive_key_mask<T>(std::span<T>(mask_host_), in.attention_mask, fill);
      copy_from_host(B{}, key_mask.data(), std::span<const T>(mask_host_));
      if (device_ids_.size() < 3 * n) device_ids_.resize(3 * n);
      std::int64_t* d = device_ids_.data();
      copy_from_host(B{}, d, ids);
      copy_from_host(B{}, d + n, positions);
      copy_from_host(B{}, d + 2 * n, types);
      ids = std::span<const std::int64_t>(d, n);
      positions = std::span<const std::int64_t>(d + n, n);
      if (!types.empty()) types = std::span<const std::int64_t>(d + 2 * n, n);
    }
    T* ping[2] = {ws_.take(n * H), ws_.take(n * H)};
    const std::size_t mark = ws_.used();

    const T eps = static_cast<T>(cfg_.layer_norm_eps);
    T* x = out.has(0) ? out.slot(0) : ping[0];
    embeddings_forward(B{}, MatrixView<T>(x, N, H), nullptr, ids, positions, types, params_.embeddings, eps);
    for (index_t l = 0; l < cfg_.layers; ++l) {
      T* y = out.has(l + 1) ? out.slot(l + 1) : (x == ping[0] ? ping[1] : ping[0]);
      ws_.rewind(mark);
      encoder_layer_forward(B{}, MatrixView<T>(y, N, H), nullptr, MatrixView<const T>(x, N, H),
                            std::span<const T>(key_mask), params_.layers[static_cast<std::size_t>(l)],
                            dims, nullptr, ws_);
      x = y;
    }
  }

  /// @brief State @p k of @p states as a (B, T, H) view whose H is static for a preset.
  StateView state(const HiddenStates<T, B>& states, index_t k) const {
    auto v = states[k];
    return StateView(v.data(), v.extent(0), v.extent(1), v.extent(2));
  }

  /// @brief The position ids of the last forward pass, (B, T).
  std::span<const std::int64_t> last_positions() const noexcept { return positions_; }

 private:
  void validate(const TokenBatch& in) const {
    if (in.batch < 0 || in.seq < 0)
      throw Error("token batch: B = " + std::to_string(in.batch) + " and T = " + std::to_string(in.seq) +
                  " must not be negative");
    const std::size_t n = static_cast<std::size_t>(in.batch * in.seq);
    if (in.input_ids.size() != n || in.attention_mask.size() != n ||
        (!in.token_type_ids.empty() && in.token_type_ids.size() != n))
      throw Error("token batch: input_ids, attention_mask and token_type_ids must each hold B*T = " +
                  std::to_string(n) + " values");
    for (std::size_t i = 0; i < n; ++i) {
      const std::int64_t id = in.input_ids[i];
      if (id < 0 || id >= cfg_.vocab_size)
        throw Error("input_ids" + detail::batch_position(static_cast<index_t>(i), in.seq) + " = " +
                    std::to_string(id) + " is outside the vocabulary [0, " +
                    std::to_string(cfg_.vocab_size) + ")");
      const std::int64_t m = in.attention_mask[i];
      if (m != 0 && m != 1)
        throw Error("attention_mask" + detail::batch_position(static_cast<index_t>(i), in.seq) +
                    " = " + std::to_string(m) + ", expected 0 or 1");
      if (!in.token_type_ids.empty()) {
        const std::int64_t t = in.token_type_ids[i];
        if (t < 0 || t >= cfg_.token_types)
          throw Error("token_type_ids" + detail::batch_position(static_cast<index_t>(i), in.seq) +
                      " = " + std::to_string(t) + " is outside [0, " +
                      std::to_string(cfg_.token_types) + ")");
      }
    }
  }

  void make_positions(const TokenBatch& in, PositionScheme scheme) {
    const index_t offset = cfg_.position_offset();
    const bool count_real_tokens =
        cfg_.family == Family::roberta && scheme == PositionScheme::huggingface;
    for (index_t b = 0; b < in.batch; ++b) {
      index_t real = 0;
      for (index_t t = 0; t < in.seq; ++t) {
        const std::size_t i = static_cast<std::size_t>(b * in.seq + t);
        std::int64_t pos;
        if (count_real_tokens) {
          // HuggingFace: cumulative count of non-pad ids; padding keeps pad_id.
          pos = in.input_ids[i] == cfg_.pad_id ? cfg_.pad_id : offset + real++;
        } else {
          pos = offset + t;
        }
        if (pos >= cfg_.max_positions)
          throw Error("sequence too long: token " + detail::batch_position(static_cast<index_t>(i), in.seq) +
                      " needs position id " + std::to_string(pos) + " but the model has " +
                      std::to_string(cfg_.max_positions) + " positions");
        positions_[i] = pos;
      }
    }
  }

  EncoderConfig cfg_;
  AlignedVector<T> params_storage_;
  std::vector<ParamSlot<T>> table_;
  EncoderParams<T> params_;
  Workspace<T, B> ws_;
  std::vector<std::int64_t> positions_;
  bool uploaded_ = std::is_same_v<B, Cpu>;
  // Cuda only: the device copy of the parameters, the ids and the host side of the key mask.
  BackendVector<T, B> device_params_;
  BackendVector<std::int64_t, B> device_ids_;
  std::vector<T> mask_host_;
};

}  // namespace kadapter
