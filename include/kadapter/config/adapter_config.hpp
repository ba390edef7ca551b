/// @file adapter_config.hpp
/// @brief Compile-time configuration of a knowledge adapter, and the paper's settings.
#pragma once

#include <array>
#include <string>

#include "kadapter/config.hpp"

namespace kadapter {

/// @brief Most plug-in points an adapter may have.
inline constexpr std::size_t kMaxPlugPoints = 16;

/// @brief Sizes of one knowledge adapter: K adapter layers at plug-in points p_1..p_K of the
/// backbone, each a down-projection H -> Ha, N transformer layers of width Ha, and an
/// up-projection Ha -> H with a residual. A structural type: usable as a template argument.
///
/// The all-zero value `dynamic_adapter` stands for sizes known at run time.
struct AdapterConfig {
  index_t hidden = 0;       ///< H, width of the backbone
  index_t size = 0;         ///< Ha, width inside the adapter
  index_t layers = 0;       ///< N, transformer layers per adapter layer
  index_t heads = 0;        ///< attention heads inside the adapter
  index_t ffn = 0;          ///< feed-forward width inside the adapter
  index_t skip_layers = 0;  ///< `adapter_skip_layers`: 0 for none (every published run)
  index_t count = 0;        ///< K, number of plug-in points
  std::array<index_t, kMaxPlugPoints> plug_in{};  ///< hidden-state indices p_1..p_K
  double layer_norm_eps = 1e-5;                   ///< LayerNorm eps inside the adapter

  /// @brief True for the run-time-sized placeholder `dynamic_adapter`.
  constexpr bool is_dynamic() const noexcept { return size == 0; }
  /// @brief Whether the sizes are consistent: all positive, the adapter size divisible by the
  /// heads, 1..kMaxPlugPoints plug-in points that increase.
  constexpr bool valid() const noexcept {
    if (hidden <= 0 || size <= 0 || layers < 0 || heads <= 0 || ffn <= 0 || size % heads != 0 ||
        count <= 0 || count > static_cast<index_t>(kMaxPlugPoints) || skip_layers < 0 ||
        layer_norm_eps <= 0)
      return false;
    for (index_t k = 0; k < count; ++k)
      if (plug_in[static_cast<std::size_t>(k)] < 0 ||
          (k > 0 && plug_in[static_cast<std::size_t>(k)] <= plug_in[static_cast<std::size_t>(k - 1)]))
        return false;
    return true;
  }
  /// @brief Parameters of one adapter layer (down, N inner layers, up).
  constexpr index_t layer_parameter_count() const noexcept {
    const index_t inner = 4 * (size * size + size) + 2 * size + 2 * size * ffn + ffn + size + 2 * size;
    return (hidden * size + size) + layers * inner + (size * hidden + hidden);
  }
  /// @brief Parameters of the whole adapter (K adapter layers).
  constexpr index_t parameter_count() const noexcept { return count * layer_parameter_count(); }

  friend constexpr bool operator==(const AdapterConfig&, const AdapterConfig&) = default;
};

/// @brief Run-time-sized placeholder (like Eigen's `Dynamic`).
inline constexpr AdapterConfig dynamic_adapter{};

/// @brief The paper's adapter on RoBERTa-large: plug-in points 0, 11, 22, two transformer
/// layers of width 768 with 12 heads and FFN 3072 per adapter layer.
inline constexpr AdapterConfig paper_adapter_large{1024, 768, 2, 12, 3072, 0, 3, {0, 11, 22}, 1e-5};

// Counted exactly: 3 x (787,200 down + 2 x 7,087,872 inner + 787,456 up) = 47,251,200. The
// paper quotes "about 42M" per adapter; the authors' code builds the layers counted here.
static_assert(paper_adapter_large.valid());
static_assert(paper_adapter_large.parameter_count() == 47'251'200);

}  // namespace kadapter
