/// @file safetensors.hpp
/// @brief Reader (memory-mapped) and writer for the safetensors file format.
///
/// Layout of a safetensors file: 8 bytes little-endian u64 N, then N bytes of UTF-8 JSON (an
/// object), then the data area. Every JSON entry except "__metadata__" describes one tensor:
/// `{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}` with byte offsets relative
/// to the start of the data area. "__metadata__" is an optional object of string -> string.
#pragma once

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "kadapter/core/dtype.hpp"
#include "kadapter/core/error.hpp"

namespace kadapter::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts are not supported");

/// @brief Largest header the reader accepts (the reference implementation uses the same bound).
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

namespace detail {

/// @brief Format a shape as "[2, 3]" ("[]" for a scalar).
inline std::string format_shape(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i != 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  text += "]";
  return text;
}

/// @brief Comma-separated list of every dtype name the library knows.
inline std::string known_dtype_names() {
  std::string text;
  for (DType d : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32,
                  DType::I16, DType::I8, DType::U8, DType::BOOL}) {
    if (!text.empty()) text += ", ";
    text += dtype_name(d);
  }
  return text;
}

/// @brief Multiply with overflow detection; returns false when a * b does not fit in u64.
inline bool checked_multiply(std::uint64_t a, std::uint64_t b, std::uint64_t& product) noexcept {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return false;
  product = a * b;
  return true;
}

/// @brief The element types read_into() can produce.
template <class T>
concept ReadTarget = std::is_same_v<T, float> || std::is_same_v<T, double> ||
                     std::is_same_v<T, std::int64_t> || std::is_same_v<T, std::int32_t>;

}  // namespace detail

/// @brief Description of one tensor stored in a safetensors file.
struct TensorInfo {
  std::string name;                 ///< Key in the JSON header.
  DType dtype = DType::F32;         ///< Element type as stored.
  std::vector<std::int64_t> shape;  ///< Extents, outermost first; empty for a scalar.
  std::size_t begin = 0;            ///< First byte, relative to the start of the data area.
  std::size_t end = 0;              ///< One past the last byte, relative to the data area.

  /// @brief Number of elements: the product of the shape (1 for a scalar, shape []).
  std::int64_t numel() const {
    std::int64_t count = 1;
    for (std::int64_t extent : shape) count *= extent;
    return count;
  }

  /// @brief The shape as text, e.g. "[2, 3]".
  std::string shape_string() const { return detail::format_shape(shape); }
};

/// @brief A safetensors file opened read-only and memory-mapped.
///
/// The whole header is validated in the constructor; afterwards every tensor's span is known to
/// lie inside the data area, match its shape and dtype, and not overlap any other tensor.
/// Move-only; the mapping is released in the destructor.
class SafetensorsFile {
 public:
  /// @brief Open, map and validate @p path.
  /// @param path File to open.
  /// @throws Error whose message starts with the path when the file cannot be opened or is
  ///         malformed.
  explicit SafetensorsFile(const std::filesystem::path& path) : path_(path) {
    map_file();
    try {
      parse_header();
    } catch (...) {
      unmap();
      throw;
    }
  }

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  /// @brief Take over the mapping of @p other, which is left empty.
  SafetensorsFile(SafetensorsFile&& other) noexcept
      : path_(std::move(other.path_)),
        mapping_(std::exchange(other.mapping_, nullptr)),
        mapping_size_(std::exchange(other.mapping_size_, 0)),
        data_area_(std::exchange(other.data_area_, nullptr)),
        data_area_size_(std::exchange(other.data_area_size_, 0)),
        tensors_(std::move(other.tensors_)),
        metadata_(std::move(other.metadata_)) {}

  /// @brief Release the current mapping and take over the mapping of @p other.
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept {
    if (this != &other) {
      unmap();
      path_ = std::move(other.path_);
      mapping_ = std::exchange(other.mapping_, nullptr);
      mapping_size_ = std::exchange(other.mapping_size_, 0);
      data_area_ = std::exchange(other.data_area_, nullptr);
      data_area_size_ = std::exchange(other.data_area_size_, 0);
      tensors_ = std::move(other.tensors_);
      metadata_ = std::move(other.metadata_);
    }
    return *this;
  }

  ~SafetensorsFile() { unmap(); }

  /// @brief The path the file was opened from.
  const std::filesystem::path& path() const noexcept { return path_; }

  /// @brief True when the file holds a tensor called @p name.
  bool contains(std::string_view name) const noexcept {
    return tensors_.find(name) != tensors_.end();
  }

  /// @brief Description of tensor @p name.
  /// @throws Error "PATH: no tensor 'NAME'" when there is no such tensor.
  const TensorInfo& info(std::string_view name) const {
    auto found = tensors_.find(name);
    if (found == tensors_.end()) fail("no tensor '" + std::string(name) + "'");
    return found->second;
  }

  /// @brief Names of all tensors, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> result;
    result.reserve(tensors_.size());
    for (const auto& entry : tensors_) result.push_back(entry.first);
    return result;
  }

  /// @brief The "__metadata__" entries (empty when the header has none).
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

  /// @brief Size in bytes of the data area (everything after the header).
  std::size_t data_size() const noexcept { return data_area_size_; }

  /// @brief The raw little-endian bytes of tensor @p name (valid while this object lives).
  /// @throws Error when there is no such tensor.
  std::span<const std::byte> bytes(std::string_view name) const {
    const TensorInfo& tensor = info(name);
    return {data_area_ + tensor.begin, tensor.end - tensor.begin};
  }

  /// @brief Copy tensor @p name into @p out, converting element types.
  ///
  /// Floating dtypes (F64, F32, F16, BF16) convert to float or double; integer dtypes (I64, I32,
  /// I16, I8, U8, BOOL) convert to std::int64_t or std::int32_t.
  /// @tparam T float, double, std::int64_t or std::int32_t.
  /// @param name Tensor to read.
  /// @param out Destination; its size must equal the tensor's numel().
  /// @throws Error when the tensor is missing, the kinds (floating/integer) differ, the sizes
  ///         differ, or an I64 value does not fit in std::int32_t.
  template <detail::ReadTarget T>
  void read_into(std::string_view name, std::span<T> out) const {
    const TensorInfo& tensor = info(name);
    constexpr DType target = dtype_of<T>();
    if (is_floating(tensor.dtype) != is_floating(target)) {
      fail("tensor '" + tensor.name + "' has dtype " + std::string(dtype_name(tensor.dtype)) +
           ", which cannot be read as " + std::string(dtype_name(target)) + " (" +
           (is_floating(target) ? "floating" : "integer") + " target from " +
           (is_floating(tensor.dtype) ? "floating" : "integer") + " data)");
    }
    const auto count = static_cast<std::size_t>(tensor.numel());
    if (out.size() != count) {
      fail("tensor '" + tensor.name + "' has " + std::to_string(count) +
           " elements, but the output buffer holds " + std::to_string(out.size()));
    }
    const std::byte* source = data_area_ + tensor.begin;
    if (tensor.dtype == target) {
      if (count != 0) std::memcpy(out.data(), source, count * sizeof(T));
      return;
    }
    const std::size_t stride = dtype_size(tensor.dtype);
    if constexpr (std::is_same_v<T, std::int32_t>) {
      if (tensor.dtype == DType::I64) {  // narrowing: check every value
        for (std::size_t i = 0; i < count; ++i) {
          const auto wide = load_element<std::int64_t>(source + i * stride, tensor.dtype);
          if (wide < std::numeric_limits<std::int32_t>::min() ||
              wide > std::numeric_limits<std::int32_t>::max()) {
            fail("tensor '" + tensor.name + "' element " + std::to_string(i) + " (" +
                 std::to_string(wide) + ") does not fit in I32");
          }
          out[i] = static_cast<std::int32_t>(wide);
        }
        return;
      }
    }
    for (std::size_t i = 0; i < count; ++i) {
      out[i] = load_element<T>(source + i * stride, tensor.dtype);
    }
  }

  /// @brief Read tensor @p name into a new vector, converting as read_into() does.
  /// @tparam T float, double, std::int64_t or std::int32_t.
  template <detail::ReadTarget T>
  std::vector<T> read(std::string_view name) const {
    std::vector<T> values(static_cast<std::size_t>(info(name).numel()));
    read_into<T>(name, std::span<T>(values));
    return values;
  }

  /// @brief Read tensor @p name after checking that its shape is @p expected_shape.
  /// @tparam T float, double, std::int64_t or std::int32_t.
  /// @throws Error "PATH: tensor 'NAME' has shape [a, b], expected [c, d]" on a mismatch.
  template <detail::ReadTarget T>
  std::vector<T> read(std::string_view name,
                      const std::vector<std::int64_t>& expected_shape) const {
    const TensorInfo& tensor = info(name);
    if (tensor.shape != expected_shape) {
      fail("tensor '" + tensor.name + "' has shape " + tensor.shape_string() + ", expected " +
           detail::format_shape(expected_shape));
    }
    return read<T>(name);
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw Error(path_.string() + ": " + problem);
  }

  void unmap() noexcept {
    if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
    mapping_ = nullptr;
    mapping_size_ = 0;
    data_area_ = nullptr;
    data_area_size_ = 0;
  }

  void map_file() {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(std::string("cannot open: ") + std::strerror(errno));
    struct stat file_status {};
    if (::fstat(fd, &file_status) != 0) {
      const int saved_errno = errno;
      ::close(fd);
      fail(std::string("cannot stat: ") + std::strerror(saved_errno));
    }
    if (!S_ISREG(file_status.st_mode)) {
      ::close(fd);
      fail("not a regular file");
    }
    const auto file_size = static_cast<std::size_t>(file_status.st_size);
    if (file_size < 8) {
      ::close(fd);
      fail("file is " + std::to_string(file_size) +
           " bytes, shorter than the 8-byte header length field");
    }
    void* mapped = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int saved_errno = errno;
    ::close(fd);
    if (mapped == MAP_FAILED) fail(std::string("cannot mmap: ") + std::strerror(saved_errno));
    mapping_ = mapped;
    mapping_size_ = file_size;
  }

  void parse_header() {
    const auto* file_bytes = static_cast<const unsigned char*>(mapping_);
    std::uint64_t header_length = 0;
    for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | file_bytes[i];
    if (header_length > kMaxSafetensorsHeaderBytes) {
      fail("header length " + std::to_string(header_length) + " exceeds the limit of " +
           std::to_string(kMaxSafetensorsHeaderBytes) +
           " bytes (is it a safetensors file? one starts with its header's length, 8 bytes little-endian)");
    }
    if (header_length > mapping_size_ - 8) {
      fail("header length " + std::to_string(header_length) +
           " is larger than the file size minus 8 (" + std::to_string(mapping_size_ - 8) + ")");
    }
    const auto header_size = static_cast<std::size_t>(header_length);
    data_area_ = static_cast<const std::byte*>(mapping_) + 8 + header_size;
    data_area_size_ = mapping_size_ - 8 - header_size;

    const char* header_begin = reinterpret_cast<const char*>(file_bytes + 8);
    nlohmann::json header;
    std::string duplicate_key;
    // nlohmann keeps the last of duplicate keys silently; catch them while parsing instead.
    std::vector<std::set<std::string>> keys_per_depth;
    auto on_parse_event = [&](int depth, nlohmann::json::parse_event_t event,
                              nlohmann::json& parsed) {
      using Event = nlohmann::json::parse_event_t;
      const auto level = static_cast<std::size_t>(depth);
      if (event == Event::object_start) {
        if (keys_per_depth.size() <= level + 1) keys_per_depth.resize(level + 2);
        keys_per_depth[level + 1].clear();
      } else if (event == Event::key && level < keys_per_depth.size()) {
        const auto& key = parsed.get_ref<const std::string&>();
        if (!keys_per_depth[level].insert(key).second && duplicate_key.empty()) {
          duplicate_key = key;
        }
      }
      return true;
    };
    try {
      header = nlohmann::json::parse(header_begin, header_begin + header_size, on_parse_event);
    } catch (const nlohmann::json::exception& parse_error) {  // a syntax error or a number too large
      fail(std::string("header is not valid JSON: ") + parse_error.what());
    }
    if (!duplicate_key.empty()) fail("header has duplicate key '" + duplicate_key + "'");
    if (!header.is_object()) {
      fail(std::string("header JSON is not an object (it is ") + header.type_name() + ")");
    }

    for (const auto& [key, value] : header.items()) {
      if (key == "__metadata__") {
        parse_metadata(value);
      } else {
        TensorInfo tensor = parse_tensor_entry(key, value);
        tensors_.emplace(key, std::move(tensor));
      }
    }
    check_no_overlaps();
  }

  void parse_metadata(const nlohmann::json& value) {
    if (!value.is_object()) {
      fail(std::string("\"__metadata__\" is not an object of strings (it is ") + value.type_name() +
           ")");
    }
    for (const auto& [key, entry] : value.items()) {
      if (!entry.is_string()) {
        fail("\"__metadata__\" is not an object of strings: value of '" + key + "' is " +
             entry.type_name());
      }
      metadata_.emplace(key, entry.get<std::string>());
    }
  }

  static bool read_non_negative(const nlohmann::json& value, std::uint64_t& out) {
    if (!value.is_number_unsigned()) return false;
    out = value.get<std::uint64_t>();
    return true;
  }

  TensorInfo parse_tensor_entry(const std::string& name, const nlohmann::json& entry) const {
    const std::string where = "tensor '" + name + "'";
    if (!entry.is_object()) {
      fail(where + ": entry is not an object (it is " + entry.type_name() + ")");
    }
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!entry.contains(field)) fail(where + ": missing \"" + field + "\"");
    }

    TensorInfo tensor;
    tensor.name = name;

    const nlohmann::json& dtype_field = entry["dtype"];
    if (!dtype_field.is_string()) {
      fail(where + ": \"dtype\" is not a string (it is " + dtype_field.type_name() + ")");
    }
    const auto& dtype_text = dtype_field.get_ref<const std::string&>();
    if (!parse_dtype(dtype_text, tensor.dtype)) {
      fail(where + ": unknown dtype '" + dtype_text + "' (known: " + detail::known_dtype_names() +
           ")");
    }

    const nlohmann::json& shape_field = entry["shape"];
    if (!shape_field.is_array()) {
      fail(where + ": \"shape\" is not an array (it is " + shape_field.type_name() + ")");
    }
    for (const nlohmann::json& extent_field : shape_field) {
      std::uint64_t extent = 0;
      if (!read_non_negative(extent_field, extent) ||
          extent > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        fail(where + ": \"shape\" entries must be non-negative integers, got " +
             extent_field.dump());
      }
      tensor.shape.push_back(static_cast<std::int64_t>(extent));
    }

    const nlohmann::json& offsets_field = entry["data_offsets"];
    std::uint64_t begin = 0;
    std::uint64_t end = 0;
    if (!offsets_field.is_array() || offsets_field.size() != 2 ||
        !read_non_negative(offsets_field[0], begin) || !read_non_negative(offsets_field[1], end)) {
      fail(where + ": \"data_offsets\" must be exactly two non-negative integers, got " +
           offsets_field.dump());
    }
    if (begin > end) {
      fail(where + ": \"data_offsets\" begin " + std::to_string(begin) + " is after end " +
           std::to_string(end));
    }

    // Product of the shape times the element size, guarding every multiplication.
    std::uint64_t expected_bytes = dtype_size(tensor.dtype);
    const bool has_zero_extent =
        std::find(tensor.shape.begin(), tensor.shape.end(), 0) != tensor.shape.end();
    if (has_zero_extent) {
      expected_bytes = 0;
    } else {
      for (std::int64_t extent : tensor.shape) {
        if (!detail::checked_multiply(expected_bytes, static_cast<std::uint64_t>(extent),
                                      expected_bytes)) {
          fail(where + ": shape " + tensor.shape_string() + " with dtype " +
               std::string(dtype_name(tensor.dtype)) + " overflows the byte count");
        }
      }
    }
    if (expected_bytes != end - begin) {
      fail(where + ": shape " + tensor.shape_string() + " with dtype " +
           std::string(dtype_name(tensor.dtype)) + " needs " + std::to_string(expected_bytes) +
           " bytes, but data_offsets span " + std::to_string(end - begin) + " bytes");
    }
    if (end > data_area_size_) {
      fail(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
           "] ends beyond the data area of " + std::to_string(data_area_size_) + " bytes");
    }
    tensor.begin = static_cast<std::size_t>(begin);
    tensor.end = static_cast<std::size_t>(end);
    return tensor;
  }

  void check_no_overlaps() const {
    std::vector<const TensorInfo*> by_begin;
    for (const auto& entry : tensors_) {
      if (entry.second.begin != entry.second.end) by_begin.push_back(&entry.second);
    }
    std::sort(by_begin.begin(), by_begin.end(), [](const TensorInfo* a, const TensorInfo* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
    });
    // Track the tensor reaching furthest so far: any later span starting before its end overlaps.
    const TensorInfo* furthest = nullptr;
    for (const TensorInfo* tensor : by_begin) {
      if (furthest != nullptr && tensor->begin < furthest->end) {
        fail("tensors '" + furthest->name + "' [" + std::to_string(furthest->begin) + ", " +
             std::to_string(furthest->end) + ") and '" + tensor->name + "' [" +
             std::to_string(tensor->begin) + ", " + std::to_string(tensor->end) + ") overlap");
      }
      if (furthest == nullptr || tensor->end > furthest->end) furthest = tensor;
    }
  }

  std::filesystem::path path_;
  void* mapping_ = nullptr;
  std::size_t mapping_size_ = 0;
  const std::byte* data_area_ = nullptr;
  std::size_t data_area_size_ = 0;
  std::map<std::string, TensorInfo, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// @brief Collects tensors and metadata in memory and writes them as one safetensors file.
class SafetensorsWriter {
 public:
  /// @brief Add a tensor from raw little-endian bytes (copied).
  /// @param name Tensor name; must be unique, non-empty and not "__metadata__".
  /// @param dtype Element type of @p data.
  /// @param shape Extents (non-negative); empty for a scalar.
  /// @param data Bytes; the size must be the shape's product times dtype_size(dtype).
  /// @throws Error on a duplicate or reserved name, a negative extent or a size mismatch.
  void add(std::string name, DType dtype, std::vector<std::int64_t> shape,
           std::span<const std::byte> data) {
    if (name.empty()) throw Error("SafetensorsWriter: tensor name is empty");
    if (name == "__metadata__") {
      throw Error("SafetensorsWriter: tensor name '__metadata__' is reserved");
    }
    if (tensors_.contains(name)) {
      throw Error("SafetensorsWriter: duplicate tensor name '" + name + "'");
    }
    std::uint64_t expected_bytes = dtype_size(dtype);
    bool overflow = false;
    for (std::int64_t extent : shape) {
      if (extent < 0) {
        throw Error("SafetensorsWriter: tensor '" + name + "' has negative extent in shape " +
                    detail::format_shape(shape));
      }
      overflow =
          overflow || !detail::checked_multiply(expected_bytes, static_cast<std::uint64_t>(extent),
                                                expected_bytes);
    }
    if (overflow || expected_bytes != data.size()) {
      throw Error("SafetensorsWriter: tensor '" + name + "' with shape " +
                  detail::format_shape(shape) + " and dtype " + std::string(dtype_name(dtype)) +
                  " needs " +
                  (overflow ? std::string("too many") : std::to_string(expected_bytes)) +
                  " bytes, but " + std::to_string(data.size()) + " were given");
    }
    tensors_.emplace(
        std::move(name),
        PendingTensor{dtype, std::move(shape), std::vector<std::byte>(data.begin(), data.end())});
  }

  /// @brief Add a tensor of C++ elements; the dtype is dtype_of<T>().
  /// @tparam T float, double, half, bfloat16, std::int64_t or std::int32_t.
  template <class T>
  void add(std::string name, std::vector<std::int64_t> shape, std::span<const T> data) {
    static_assert(std::is_trivially_copyable_v<T>);
    add(std::move(name), dtype_of<T>(), std::move(shape), std::as_bytes(data));
  }

  /// @brief Set a "__metadata__" entry (replaces an earlier value for the same key).
  void set_metadata(std::string key, std::string value) {
    metadata_.insert_or_assign(std::move(key), std::move(value));
  }

  /// @brief Write everything to @p path.
  ///
  /// Writes PATH.tmp, syncs it and renames it over @p path, so a reader never sees a
  /// half-written file. The header is padded with spaces so the data area starts 8-byte aligned;
  /// tensors are laid out contiguously in sorted-name order.
  /// @throws Error naming the path and strerror on any I/O failure, and (before anything is
  /// written) when a tensor name or metadata entry is not valid UTF-8
  void write(const std::filesystem::path& path) const {
    const std::string header = build_header();
    unsigned char length_field[8];
    for (int i = 0; i < 8; ++i) {
      length_field[i] =
          static_cast<unsigned char>(static_cast<std::uint64_t>(header.size()) >> (8 * i));
    }

    std::filesystem::path temporary_path = path;
    temporary_path += ".tmp";
    const int fd = ::open(temporary_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) io_failure(temporary_path, "cannot create");
    try {
      write_all(fd, temporary_path, length_field, sizeof length_field);
      write_all(fd, temporary_path, header.data(), header.size());
      for (const auto& entry : tensors_) {
        write_all(fd, temporary_path, entry.second.bytes.data(), entry.second.bytes.size());
      }
      if (::fsync(fd) != 0) io_failure(temporary_path, "cannot sync");
    } catch (...) {
      ::close(fd);
      ::unlink(temporary_path.c_str());
      throw;
    }
    if (::close(fd) != 0) {
      const int saved_errno = errno;
      ::unlink(temporary_path.c_str());
      errno = saved_errno;
      io_failure(temporary_path, "cannot close");
    }
    if (::rename(temporary_path.c_str(), path.c_str()) != 0) {
      const int saved_errno = errno;
      ::unlink(temporary_path.c_str());
      errno = saved_errno;
      io_failure(path, "cannot replace it with " + temporary_path.string() +
                           (std::filesystem::is_directory(path) ? " (it is a directory)" : ""));
    }
  }

 private:
  struct PendingTensor {
    DType dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> bytes;
  };

  std::string build_header() const {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata_.empty()) {
      nlohmann::ordered_json metadata = nlohmann::ordered_json::object();
      for (const auto& [key, value] : metadata_) metadata[key] = value;
      header["__metadata__"] = std::move(metadata);
    }
    std::size_t offset = 0;
    for (const auto& [name, tensor] : tensors_) {
      nlohmann::ordered_json entry = nlohmann::ordered_json::object();
      entry["dtype"] = std::string(dtype_name(tensor.dtype));
      entry["shape"] = tensor.shape;
      entry["data_offsets"] = {offset, offset + tensor.bytes.size()};
      offset += tensor.bytes.size();
      header[name] = std::move(entry);
    }
    std::string text;
    try {
      text = header.dump();
    } catch (const nlohmann::json::exception& e) {
      throw Error(std::string("SafetensorsWriter: a tensor name or metadata entry is not valid UTF-8 (") + e.what() + ")");
    }
    text.append((8 - text.size() % 8) % 8, ' ');
    return text;
  }

  [[noreturn]] static void io_failure(const std::filesystem::path& path, const std::string& what) {
    throw Error(path.string() + ": " + what + ": " + std::strerror(errno));
  }

  static void write_all(int fd, const std::filesystem::path& path, const void* data,
                        std::size_t size) {
    const auto* cursor = static_cast<const char*>(data);
    while (size > 0) {
      const ::ssize_t written = ::write(fd, cursor, size);
      if (written < 0) {
        if (errno == EINTR) continue;
        io_failure(path, "cannot write");
      }
      cursor += written;
      size -= static_cast<std::size_t>(written);
    }
  }

  std::map<std::string, PendingTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace kadapter::io
