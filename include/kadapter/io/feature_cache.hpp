/// @file feature_cache.hpp
/// @brief The backbone feature cache: the frozen encoder's hidden states of every training
/// sequence, computed once and reused by every later epoch and every adapter trained on the
/// same data, kept in memory or in a memory-mapped safetensors file.
///
/// The backbone is frozen and takes nothing from the adapters, so its hidden states at the
/// adapters' plug-in points (and the last one) are a pure function of the model, the token ids
/// and the forward options. The cache stores, for each sequence, only its first `length` rows
/// (its real tokens when batches are trimmed, all `max_seq_length` rows when the authors'
/// full padding is kept), in fp16, bf16 or fp32.
///
/// A cache file is a valid safetensors file: tensors `lengths` (I32, rows) and `state.K`
/// (dtype, total rows × H) for every kept state K, with the key in `__metadata__`. It is
/// written to `PATH.tmp` and renamed when complete, so a file that exists is whole; a file
/// whose key or shapes do not match what is asked for is an error naming the file and field.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "kadapter/core/aligned.hpp"
#include "kadapter/core/dtype.hpp"
#include "kadapter/core/error.hpp"
#include "kadapter/core/random.hpp"
#include "kadapter/io/safetensors.hpp"
#include "kadapter/models/encoder.hpp"

namespace kadapter::io {

/// @brief A 64-bit fingerprint of bytes (word-wise SplitMix64 chaining; not cryptographic).
/// Used to key the feature cache by the model's weights and the data's token ids.
inline std::uint64_t fingerprint(std::span<const std::byte> bytes, std::uint64_t seed = 0) noexcept {
  std::uint64_t h = mix64(seed ^ 0x6b61646170746572ull ^ bytes.size());
  std::size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    h = mix64(h ^ w);
  }
  std::uint64_t tail = 0;
  std::memcpy(&tail, bytes.data() + i, bytes.size() - i);
  return mix64(h ^ tail ^ (static_cast<std::uint64_t>(bytes.size() - i) << 56));
}

/// @brief Fingerprint of a span of trivially copyable values.
template <class V>
std::uint64_t fingerprint_of(std::span<const V> values, std::uint64_t seed = 0) noexcept {
  return fingerprint(std::as_bytes(values), seed);
}

/// @brief 16 lowercase hex digits of @p v.
inline std::string hex64(std::uint64_t v) {
  static const char* digits = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[static_cast<std::size_t>(i)] = digits[v & 15];
  return s;
}

/// @brief The identity of a frozen encoder's weights: a fingerprint of its parameters (as
/// fp32, whatever type it computes in) and their count, `"<16 hex digits>:<count>"`.
///
/// `kadapter pretrain` and `finetune` record it as `"backbone"` in a run's
/// adapter_config.json and checkpoint, so that an adapter is never used on other weights than
/// it was trained on.
template <class Enc>
std::string backbone_id(const Enc& enc) {
  using T = typename Enc::scalar_type;
  const std::span<const T> params = enc.parameters();
  constexpr std::size_t chunk = std::size_t{1} << 20;
  std::vector<float> buf;
  std::uint64_t h = 0;
  for (std::size_t i = 0; i < params.size(); i += chunk) {
    const auto part = params.subspan(i, std::min(chunk, params.size() - i));
    if constexpr (std::is_same_v<T, float>) {
      h = fingerprint_of(part, h);
    } else {
      buf.resize(part.size());
      for (std::size_t k = 0; k < part.size(); ++k) buf[k] = static_cast<float>(part[k]);
      h = fingerprint_of(std::span<const float>(buf), h);
    }
  }
  return hex64(h) + ":" + std::to_string(params.size());
}

/// @brief What a feature cache holds and what it is keyed by.
struct FeatureCacheSpec {
  std::vector<index_t> states;         ///< hidden-state indices kept (HuggingFace numbering)
  index_t hidden = 0;                  ///< H
  DType dtype = DType::F16;            ///< F16, BF16 or F32
  std::vector<std::int32_t> lengths;   ///< rows stored per sequence
  /// Identity of the contents: model, data, tokenizer, max length, forward options. Every
  /// entry is written to the file's metadata and checked when the file is opened again.
  std::map<std::string, std::string> key;

  /// @brief Fingerprint of everything above: the cache file's name.
  std::uint64_t id() const {
    std::string s = std::string(dtype_name(dtype)) + "|" + std::to_string(hidden) + "|";
    for (index_t k : states) s += std::to_string(k) + ",";
    for (const auto& [k, v] : key) s += "|" + k + "=" + v;
    return fingerprint_of(std::span<const std::int32_t>(lengths),
                          fingerprint_of(std::span<const char>(s.data(), s.size())));
  }
};

/// @brief Hidden states of many sequences, stored once, read back as float batches.
class FeatureCache {
 public:
  FeatureCache() = default;
  FeatureCache(const FeatureCache&) = delete;
  FeatureCache& operator=(const FeatureCache&) = delete;
  FeatureCache(FeatureCache&& o) noexcept { *this = std::move(o); }
  FeatureCache& operator=(FeatureCache&& o) noexcept {
    if (this != &o) {
      release();
      spec_ = std::move(o.spec_);
      offsets_ = std::move(o.offsets_);
      memory_ = std::move(o.memory_);
      file_ = std::move(o.file_);
      path_ = std::move(o.path_);
      map_ = std::exchange(o.map_, nullptr);
      map_size_ = std::exchange(o.map_size_, 0);
      base_ = std::exchange(o.base_, nullptr);
      total_rows_ = o.total_rows_;
      state_bytes_ = o.state_bytes_;
      complete_ = o.complete_;
    }
    return *this;
  }
  ~FeatureCache() { release(); }

  /// @brief An empty cache in memory; fill it with store(), then finish().
  static FeatureCache in_memory(FeatureCacheSpec spec) {
    FeatureCache c;
    c.init(std::move(spec));
    c.memory_.assign(c.state_bytes_ * c.spec_.states.size(), std::byte{0});
    c.base_ = c.memory_.data();
    return c;
  }

  /// @brief The cache file for @p spec in @p dir: opened when it exists (complete() is then
  /// true), otherwise created as `NAME.tmp`, to be filled with store() and finish()ed.
  /// @throws Error naming the file when an existing file does not match @p spec.
  static FeatureCache open_or_create(const std::filesystem::path& dir, FeatureCacheSpec spec) {
    FeatureCache c;
    c.init(std::move(spec));
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw Error(dir.string() + ": cannot create the feature-cache directory: " + ec.message());
    c.path_ = dir / ("features-" + hex64(c.spec_.id()) + ".safetensors");
    if (std::filesystem::exists(c.path_)) {
      c.open_existing();
    } else {
      c.create_file();
    }
    return c;
  }

  const FeatureCacheSpec& spec() const noexcept { return spec_; }
  /// @brief The file behind the cache (empty for an in-memory cache).
  const std::filesystem::path& path() const noexcept { return path_; }
  /// @brief True once every sequence is stored (a reopened file is complete).
  bool complete() const noexcept { return complete_; }
  /// @brief Number of sequences.
  index_t rows() const noexcept { return static_cast<index_t>(spec_.lengths.size()); }
  /// @brief Stored rows of sequence @p r.
  /// @throws Error when @p r is not in 0..rows() - 1
  index_t length(index_t r) const {
    if (r < 0 || r >= rows())
      throw Error("feature cache: sequence " + std::to_string(r) + " is not in 0.." + std::to_string(rows() - 1));
    return spec_.lengths[static_cast<std::size_t>(r)];
  }
  /// @brief Bytes of hidden states held.
  std::size_t bytes() const noexcept { return state_bytes_ * spec_.states.size(); }

  /// @brief Store state @p state of sequence @p r: length(r) rows of H floats, row-major.
  /// @throws Error when a value does not fit the cache's dtype (fp16 beyond ±65504), when
  /// the cache is complete, or when @p r or @p state is not one of the cache's.
  void store(index_t r, index_t state, const float* rows) {
    if (complete_) throw Error("feature cache: store() on a complete cache (after finish(), or reopened)");
    const std::size_t n = static_cast<std::size_t>(length(r) * spec_.hidden);
    std::byte* dst = slot(state) + offsets_[static_cast<std::size_t>(r)] * elem();
    switch (spec_.dtype) {
      case DType::F32:
        std::memcpy(dst, rows, n * sizeof(float));
        break;
      case DType::BF16:
        for (std::size_t i = 0; i < n; ++i) {
          const std::uint16_t b = bfloat16::from_float(rows[i]);
          std::memcpy(dst + 2 * i, &b, 2);
        }
        break;
      default:
        for (std::size_t i = 0; i < n; ++i) {
          if (!(std::fabs(rows[i]) <= 65504.0f))
            throw Error("feature cache: hidden state " + std::to_string(state) + " of sequence " +
                        std::to_string(r) + " holds " + std::to_string(rows[i]) +
                        ", which fp16 cannot represent; use --cache-dtype bf16 or fp32");
          const half v(rows[i]);
          static_assert(sizeof(half) == 2);
          std::memcpy(dst + 2 * i, &v, 2);
        }
    }
  }

  /// @brief Mark the cache complete; a file is synced and renamed to its final name.
  void finish() {
    if (complete_) return;
    if (map_) {
      if (::msync(map_, map_size_, MS_SYNC) != 0) fail_io("cannot sync");
      std::filesystem::path tmp = path_;
      tmp += ".tmp";
      if (::rename(tmp.c_str(), path_.c_str()) != 0) fail_io("cannot replace it with " + tmp.string());
    }
    complete_ = true;
  }

  /// @brief Write state @p state of sequence @p r into @p out as @p seq rows of H floats: the
  /// stored rows, then zero rows up to @p seq (padding, which correct masks ignore).
  ///
  /// To fill a batch of HiddenStates (prepared for (B, T, H)) from rows `rows[i]`:
  /// `cache.load(rows[i], k, states.slot(k) + i * T * H, T)` for each kept state k.
  /// @throws Error when @p r or @p state is not one of the cache's, or @p seq < length(r)
  void load(index_t r, index_t state, float* out, index_t seq) const {
    const index_t len = length(r), h = spec_.hidden;
    if (seq < len)
      throw Error("feature cache: sequence " + std::to_string(r) + " has " + std::to_string(len) +
                  " stored rows, more than the " + std::to_string(seq) + " asked for");
    const std::size_t n = static_cast<std::size_t>(len * h);
    const std::byte* src = slot(state) + offsets_[static_cast<std::size_t>(r)] * elem();
    switch (spec_.dtype) {
      case DType::F32:
        std::memcpy(out, src, n * sizeof(float));
        break;
      case DType::BF16:
        for (std::size_t i = 0; i < n; ++i) {
          std::uint16_t b;
          std::memcpy(&b, src + 2 * i, 2);
          out[i] = bfloat16::to_float(b);
        }
        break;
      default:
        for (std::size_t i = 0; i < n; ++i) {
          std::uint16_t b;
          std::memcpy(&b, src + 2 * i, 2);
          out[i] = half_bits_to_float(b);
        }
    }
    std::fill(out + n, out + static_cast<std::size_t>(seq * h), 0.0f);
  }

 private:
  void init(FeatureCacheSpec spec) {
    spec_ = std::move(spec);
    if (spec_.dtype != DType::F16 && spec_.dtype != DType::BF16 && spec_.dtype != DType::F32)
      throw Error("feature cache: dtype must be F16, BF16 or F32, got " + std::string(dtype_name(spec_.dtype)));
    if (spec_.hidden <= 0 || spec_.states.empty()) throw Error("feature cache: no hidden size or no state to keep");
    std::sort(spec_.states.begin(), spec_.states.end());
    offsets_.resize(spec_.lengths.size());
    std::size_t rows = 0;
    for (std::size_t i = 0; i < spec_.lengths.size(); ++i) {
      if (spec_.lengths[i] < 0) throw Error("feature cache: negative length");
      offsets_[i] = rows * static_cast<std::size_t>(spec_.hidden);
      rows += static_cast<std::size_t>(spec_.lengths[i]);
    }
    total_rows_ = rows;
    state_bytes_ = rows * static_cast<std::size_t>(spec_.hidden) * elem();
  }
  std::size_t elem() const noexcept { return dtype_size(spec_.dtype); }
  std::size_t state_index(index_t state) const {
    auto it = std::lower_bound(spec_.states.begin(), spec_.states.end(), state);
    if (it == spec_.states.end() || *it != state) {
      std::string kept;
      for (index_t k : spec_.states) kept += (kept.empty() ? "" : ", ") + std::to_string(k);
      throw Error("feature cache: hidden state " + std::to_string(state) + " is not kept (kept: " + kept + ")");
    }
    return static_cast<std::size_t>(it - spec_.states.begin());
  }
  std::byte* slot(index_t state) const { return base_ + state_index(state) * state_bytes_; }

  // Safetensors layout: `lengths`, then `state.K` for the kept states in ascending K, back to
  // back (no gaps, so any safetensors reader accepts the file).
  std::string header_json(std::size_t& data_start) const {
    nlohmann::ordered_json h = nlohmann::ordered_json::object();
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    meta["format"] = "kadapter-feature-cache";
    meta["version"] = "1";
    for (const auto& [k, v] : spec_.key) meta[k] = v;
    h["__metadata__"] = meta;
    const std::size_t len_bytes = spec_.lengths.size() * 4;
    h["lengths"] = {{"dtype", "I32"}, {"shape", {spec_.lengths.size()}}, {"data_offsets", {0, len_bytes}}};
    std::size_t off = len_bytes;
    for (index_t k : spec_.states) {
      h["state." + std::to_string(k)] = {{"dtype", std::string(dtype_name(spec_.dtype))},
                                          {"shape", {total_rows_, static_cast<std::size_t>(spec_.hidden)}},
                                          {"data_offsets", {off, off + state_bytes_}}};
      off += state_bytes_;
    }
    std::string s = h.dump();
    while ((8 + s.size()) % 8 != 0) s.push_back(' ');  // data area 8-byte aligned
    data_start = 8 + s.size();
    data_end_ = off;
    return s;
  }

  void create_file() {
    std::size_t data_start = 0;
    const std::string header = header_json(data_start);
    std::filesystem::path tmp = path_;
    tmp += ".tmp";
    const int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail_io("cannot create", tmp);
    map_size_ = data_start + data_end_;
    // Reserve the blocks now (not just the size, as ftruncate would): writing through the
    // mapping into a hole on a full disk kills the process with SIGBUS instead of failing.
    if (const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(map_size_)); rc != 0) {
      ::close(fd);
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      errno = rc;
      fail_io("cannot reserve " + std::to_string(map_size_) + " bytes", tmp);
    }
    void* m = ::mmap(nullptr, map_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int saved = errno;
    ::close(fd);
    if (m == MAP_FAILED) {
      errno = saved;
      fail_io("cannot mmap", tmp);
    }
    map_ = m;
    auto* bytes = static_cast<std::byte*>(map_);
    const std::uint64_t hl = header.size();
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<std::byte>(hl >> (8 * i));
    std::memcpy(bytes + 8, header.data(), header.size());
    std::memcpy(bytes + data_start, spec_.lengths.data(), spec_.lengths.size() * 4);
    base_ = bytes + data_start + spec_.lengths.size() * 4;
  }

  void open_existing() {
    file_.emplace(path_);
    const auto& meta = file_->metadata();
    auto expect = [&](const std::string& field, const std::string& want) {
      auto it = meta.find(field);
      const std::string got = it == meta.end() ? "(missing)" : it->second;
      if (got != want)
        throw Error(path_.string() + ": __metadata__." + field + " is '" + got + "', expected '" + want +
                    "'; delete the file to rebuild the cache");
    };
    expect("format", "kadapter-feature-cache");
    expect("version", "1");
    for (const auto& [k, v] : spec_.key) expect(k, v);
    // Both ways: a file made with more to its key (token type ids, say) is another data set.
    for (const auto& [k, v] : meta)
      if (k != "format" && k != "version" && !spec_.key.contains(k))
        throw Error(path_.string() + ": __metadata__." + k + " is '" + v + "', expected none (the key of this data has no " + k +
                    "); delete the file to rebuild the cache");
    const std::vector<std::int32_t> lengths = file_->read<std::int32_t>("lengths");
    if (lengths != spec_.lengths)
      throw Error(path_.string() + ": tensor 'lengths' does not match the sequences of the data; delete the file to rebuild the cache");
    for (std::size_t i = 0; i < spec_.states.size(); ++i) {
      const std::string name = "state." + std::to_string(spec_.states[i]);
      const TensorInfo& t = file_->info(name);
      const std::vector<std::int64_t> want{static_cast<std::int64_t>(total_rows_), spec_.hidden};
      if (t.dtype != spec_.dtype || t.shape != want)
        throw Error(path_.string() + ": tensor '" + name + "' is " + std::string(dtype_name(t.dtype)) + " " +
                    t.shape_string() + ", expected " + std::string(dtype_name(spec_.dtype)) + " " +
                    detail::format_shape(want));
    }
    // Reading goes through one base pointer, states back to back, as create_file() lays them out.
    const auto first = file_->bytes("state." + std::to_string(spec_.states[0]));
    base_ = const_cast<std::byte*>(first.data());
    for (std::size_t i = 1; i < spec_.states.size(); ++i) {
      const auto b = file_->bytes("state." + std::to_string(spec_.states[i]));
      if (b.data() != base_ + i * state_bytes_)
        throw Error(path_.string() + ": tensor 'state." + std::to_string(spec_.states[i]) +
                    "' is not where kadapter lays it out; delete the file to rebuild the cache");
    }
    complete_ = true;
  }

  [[noreturn]] void fail_io(const std::string& what, const std::filesystem::path& p = {}) const {
    const int e = errno;
    throw Error((p.empty() ? path_ : p).string() + ": " + what + ": " + std::strerror(e));
  }

  void release() noexcept {
    if (map_) {
      ::munmap(map_, map_size_);
      if (!complete_) {
        std::filesystem::path tmp = path_;
        tmp += ".tmp";
        ::unlink(tmp.c_str());  // an unfinished cache is never left behind
      }
    }
    map_ = nullptr;
    file_.reset();
  }

  FeatureCacheSpec spec_;
  std::vector<std::size_t> offsets_;  // element offset of each sequence within a state
  AlignedVector<std::byte> memory_;
  std::optional<SafetensorsFile> file_;
  std::filesystem::path path_;
  void* map_ = nullptr;
  std::size_t map_size_ = 0;
  std::byte* base_ = nullptr;
  std::size_t total_rows_ = 0;
  std::size_t state_bytes_ = 0;
  mutable std::size_t data_end_ = 0;
  bool complete_ = false;
};

/// @brief Rows stored per sequence: its real length (the position after its last real token)
/// when batches are trimmed, else @p seq for every sequence.
/// @param mask (n, seq) attention masks
inline std::vector<std::int32_t> cache_lengths(std::span<const std::int64_t> mask, index_t seq, bool trim) {
  const std::size_t n = mask.size() / static_cast<std::size_t>(seq);
  std::vector<std::int32_t> out(n, static_cast<std::int32_t>(seq));
  if (!trim) return out;
  for (std::size_t r = 0; r < n; ++r) {
    index_t len = 0;
    for (index_t t = 0; t < seq; ++t)
      if (mask[r * static_cast<std::size_t>(seq) + static_cast<std::size_t>(t)]) len = t + 1;
    out[r] = static_cast<std::int32_t>(std::max<index_t>(len, 1));
  }
  return out;
}

/// @brief The identity of the encoder's states of a data set: the model's weights and sizes,
/// the token ids and masks (which capture the data, the tokenizer and the max length), the
/// token type ids when any is not 0, and the forward options.
/// @param types (n, seq) token type ids (BERT sentence pairs), or empty for all zeros; all
/// zeros give the same key as none
/// @throws Error when @p types is neither empty nor as long as @p ids
template <class Enc>
std::map<std::string, std::string> feature_cache_key(Enc& enc, std::span<const std::int64_t> ids,
                                                     std::span<const std::int64_t> mask,
                                                     std::span<const std::int64_t> types, index_t seq,
                                                     const kadapter::ForwardOptions& eo) {
  const EncoderConfig& c = enc.config();
  using T = typename Enc::scalar_type;
  const std::string sizes = std::to_string(static_cast<int>(c.family)) + "," + std::to_string(c.vocab_size) + "," +
                            std::to_string(c.max_positions) + "," + std::to_string(c.hidden) + "," +
                            std::to_string(c.layers) + "," + std::to_string(c.heads) + "," +
                            std::to_string(c.ffn) + "," + std::to_string(c.layer_norm_eps) + "," +
                            std::to_string(c.pad_id);
  if (!types.empty() && types.size() != ids.size())
    throw Error("feature_cache_key: types must be empty or hold as many values as ids (" + std::to_string(ids.size()) +
                "), got " + std::to_string(types.size()));
  const auto params = std::as_const(enc).parameters();
  std::map<std::string, std::string> key{
      {"model", hex64(fingerprint_of(std::span<const T>(params.data(), params.size()))) + ":" + sizes},
      {"data", hex64(fingerprint_of(mask, fingerprint_of(ids)))},
      {"max_seq_length", std::to_string(seq)},
      {"positions", eo.positions == PositionScheme::official ? "official" : "huggingface"},
      {"mask_fill", eo.mask_fill == MaskFill::lowest ? "lowest" : "-10000"}};
  if (std::any_of(types.begin(), types.end(), [](std::int64_t t) { return t != 0; }))
    key["token_types"] = hex64(fingerprint_of(types));
  return key;
}

/// @brief feature_cache_key() of sequences encoded with token type 0 everywhere.
template <class Enc>
std::map<std::string, std::string> feature_cache_key(Enc& enc, std::span<const std::int64_t> ids,
                                                     std::span<const std::int64_t> mask, index_t seq,
                                                     const kadapter::ForwardOptions& eo) {
  return feature_cache_key(enc, ids, mask, {}, seq, eo);
}

/// @brief Run @p enc over every sequence and store the cache's states.
///
/// Sequences are encoded in batches of @p batch, sorted by stored length and padded only to
/// the longest stored length of the batch (the stored lengths decide: full `seq` when the
/// authors' padding is kept).
/// @param ids, mask (n, seq) token ids and attention masks, n = cache.rows()
/// @param types (n, seq) token type ids (BERT sentence pairs: 0 for the first segment, 1 for
/// the second), or empty for token type 0 everywhere (RoBERTa; BERT single sentences)
/// @param report called after each batch with the number of sequences done
/// @throws Error when the sizes do not fit the cache (ids or mask not n·seq values, types
/// neither empty nor n·seq values, a stored length beyond @p seq, another hidden size than
/// the encoder's, @p batch < 1), a token type id is outside the encoder's table, or the
/// cache is complete
template <class Enc, class Report>
void fill_feature_cache(FeatureCache& cache, Enc& enc, std::span<const std::int64_t> ids,
                        std::span<const std::int64_t> mask, std::span<const std::int64_t> types, index_t seq,
                        const kadapter::ForwardOptions& eo, index_t batch, const Report& report) {
  const index_t n = cache.rows(), H = cache.spec().hidden;
  if (seq < 1 || static_cast<index_t>(ids.size()) != n * seq || mask.size() != ids.size())
    throw Error("fill_feature_cache: ids and mask must each hold rows() * seq = " + std::to_string(n) + " * " +
                std::to_string(seq) + " values, got " + std::to_string(ids.size()) + " and " + std::to_string(mask.size()));
  if (!types.empty() && types.size() != ids.size())
    throw Error("fill_feature_cache: types must be empty or hold rows() * seq = " + std::to_string(n) + " * " +
                std::to_string(seq) + " values, got " + std::to_string(types.size()));
  for (std::size_t i = 0; i < types.size(); ++i)
    if (types[i] < 0 || types[i] >= enc.config().token_types)
      throw Error("fill_feature_cache: token type id " + std::to_string(types[i]) + " of sequence " +
                  std::to_string(static_cast<index_t>(i) / seq) + " at position " + std::to_string(static_cast<index_t>(i) % seq) +
                  " is outside the encoder's 0.." + std::to_string(enc.config().token_types - 1));
  if (batch < 1) throw Error("fill_feature_cache: batch must be positive, got " + std::to_string(batch));
  if (enc.config().hidden != H)
    throw Error("fill_feature_cache: the encoder's hidden size " + std::to_string(enc.config().hidden) +
                " is not the cache's " + std::to_string(H));
  if (cache.complete()) throw Error("fill_feature_cache: the cache is already complete");
  for (index_t r = 0; r < n; ++r)
    if (cache.length(r) > seq)
      throw Error("fill_feature_cache: sequence " + std::to_string(r) + " has length " + std::to_string(cache.length(r)) +
                  " beyond seq = " + std::to_string(seq));
  std::vector<index_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), index_t{0});
  std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return cache.length(a) < cache.length(b); });
  using T = typename Enc::scalar_type;
  using B = typename Enc::backend_type;
  static_assert(std::is_same_v<T, float>, "the feature cache stores float encoders' states");
  HiddenStates<T, B> states(enc.config().layers, cache.spec().states);
  HiddenStates<T> host(enc.config().layers, cache.spec().states);  // device encoders' states, copied back
  std::vector<std::int64_t> bid, bmask, btypes;
  for (index_t first = 0; first < n; first += batch) {
    const index_t m = std::min(batch, n - first);
    index_t len = 1;
    for (index_t i = 0; i < m; ++i) len = std::max(len, cache.length(order[static_cast<std::size_t>(first + i)]));
    bid.resize(static_cast<std::size_t>(m * len));
    bmask.resize(bid.size());
    btypes.resize(types.empty() ? 0 : bid.size());
    for (index_t i = 0; i < m; ++i) {
      const std::size_t src = static_cast<std::size_t>(order[static_cast<std::size_t>(first + i)] * seq);
      std::copy_n(ids.begin() + static_cast<std::ptrdiff_t>(src), len, bid.begin() + i * len);
      std::copy_n(mask.begin() + static_cast<std::ptrdiff_t>(src), len, bmask.begin() + i * len);
      if (!types.empty()) std::copy_n(types.begin() + static_cast<std::ptrdiff_t>(src), len, btypes.begin() + i * len);
    }
    enc.forward(states, TokenBatch{m, len, bid, bmask, btypes}, eo);
    const HiddenStates<T>* out = nullptr;
    if constexpr (std::is_same_v<B, Cpu>) {
      out = &states;
    } else {
      host.assign(states);
      out = &host;
    }
    for (index_t k : cache.spec().states)
      for (index_t i = 0; i < m; ++i)
        cache.store(order[static_cast<std::size_t>(first + i)], k, (*out)[k].data() + i * len * H);
    report(first + m);
  }
  cache.finish();
}

/// @brief fill_feature_cache() with token type 0 everywhere (RoBERTa; BERT single sentences).
template <class Enc, class Report>
void fill_feature_cache(FeatureCache& cache, Enc& enc, std::span<const std::int64_t> ids,
                        std::span<const std::int64_t> mask, index_t seq, const kadapter::ForwardOptions& eo,
                        index_t batch, const Report& report) {
  fill_feature_cache(cache, enc, ids, mask, {}, seq, eo, batch, report);
}

}  // namespace kadapter::io
