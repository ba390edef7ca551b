/// @file dtype.hpp
/// @brief Element types: float/double for compute, half and bfloat16 as storage types.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#include <xtl/xhalf_float.hpp>

#include "kadapter/config.hpp"

namespace kadapter {

/// @brief IEEE binary16 storage type (xtl's implementation).
using half = xtl::half_float;

/// @brief bfloat16 storage type: the upper 16 bits of an IEEE binary32.
///
/// Conversion from float rounds to nearest even; NaN stays NaN. Arithmetic is done after
/// converting to float.
struct bfloat16 {
  std::uint16_t bits = 0;

  constexpr bfloat16() = default;
  /// @brief Round a float to the nearest bfloat16 (ties to even).
  explicit bfloat16(float f) noexcept : bits(from_float(f)) {}
  /// @brief Widen to float (exact).
  explicit operator float() const noexcept { return to_float(bits); }

  /// @brief Reinterpret raw bits as a bfloat16.
  static constexpr bfloat16 from_bits(std::uint16_t b) noexcept {
    bfloat16 r;
    r.bits = b;
    return r;
  }
  static float to_float(std::uint16_t b) noexcept {
    std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  static std::uint16_t from_float(float f) noexcept {
    std::uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
    std::uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return static_cast<std::uint16_t>((u + rounding) >> 16);
  }
};

/// @brief Widen IEEE binary16 bits to float (exact; subnormals, infinities and NaN kept).
inline float half_bits_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exponent = (h >> 10) & 0x1fu;
  std::uint32_t mantissa = h & 0x3ffu;
  std::uint32_t bits;
  if (exponent == 0x1f) {  // infinity or NaN
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal: rebias 15 -> 127
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // signed zero
    bits = sign;
  } else {  // subnormal: normalise the mantissa
    exponent = 113u;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

/// @brief Element type tags as they appear in safetensors headers.
enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

/// @brief Size in bytes of one element of @p d.
constexpr std::size_t dtype_size(DType d) noexcept {
  switch (d) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 0;
}

/// @brief The safetensors name of @p d ("F32", "BF16", ...).
constexpr std::string_view dtype_name(DType d) noexcept {
  switch (d) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

/// @brief Parse a safetensors dtype name; returns false when the name is unknown.
constexpr bool parse_dtype(std::string_view s, DType& out) noexcept {
  for (DType d : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32,
                  DType::I16, DType::I8, DType::U8, DType::BOOL}) {
    if (dtype_name(d) == s) {
      out = d;
      return true;
    }
  }
  return false;
}

/// @brief True for the floating-point dtypes (F64, F32, F16, BF16).
constexpr bool is_floating(DType d) noexcept {
  return d == DType::F64 || d == DType::F32 || d == DType::F16 || d == DType::BF16;
}

/// @brief The DType tag of a C++ element type (float, double, half, bfloat16, int64, int32).
template <class T>
constexpr DType dtype_of() noexcept {
  if constexpr (std::is_same_v<T, double>) return DType::F64;
  else if constexpr (std::is_same_v<T, float>) return DType::F32;
  else if constexpr (std::is_same_v<T, half>) return DType::F16;
  else if constexpr (std::is_same_v<T, bfloat16>) return DType::BF16;
  else if constexpr (std::is_same_v<T, std::int64_t>) return DType::I64;
  else if constexpr (std::is_same_v<T, std::int32_t>) return DType::I32;
  else static_assert(sizeof(T) == 0, "no DType for this element type");
}

/// @brief Compute types: the element types the kernels run in.
template <class T>
concept ComputeScalar = std::is_same_v<T, float> || std::is_same_v<T, double>;

/// @brief Read one element of dtype @p d from unaligned little-endian bytes, widened to @p T.
template <class T>
inline T load_element(const std::byte* p, DType d) noexcept {
  switch (d) {
    case DType::F64: { double v; std::memcpy(&v, p, 8); return static_cast<T>(v); }
    case DType::F32: { float v; std::memcpy(&v, p, 4); return static_cast<T>(v); }
    case DType::F16: { std::uint16_t b; std::memcpy(&b, p, 2); return static_cast<T>(half_bits_to_float(b)); }
    case DType::BF16: { std::uint16_t b; std::memcpy(&b, p, 2);
                        return static_cast<T>(bfloat16::to_float(b)); }
    case DType::I64: { std::int64_t v; std::memcpy(&v, p, 8); return static_cast<T>(v); }
    case DType::I32: { std::int32_t v; std::memcpy(&v, p, 4); return static_cast<T>(v); }
    case DType::I16: { std::int16_t v; std::memcpy(&v, p, 2); return static_cast<T>(v); }
    case DType::I8: { std::int8_t v; std::memcpy(&v, p, 1); return static_cast<T>(v); }
    case DType::U8: case DType::BOOL: { std::uint8_t v; std::memcpy(&v, p, 1); return static_cast<T>(v); }
  }
  return T{};
}

}  // namespace kadapter
