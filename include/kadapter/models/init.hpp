/// @file init.hpp
/// @brief Parameter initialisation as the authors' code does it.
#pragma once

#include <cmath>
#include <random>
#include <string>

#include "kadapter/models/parameters.hpp"

namespace kadapter {

/// @brief Initialise every tensor of @p store by its name, as the authors' models start:
/// - adapter `down_project` / `up_project` weights ~ N(0, @p adapter_std²) (0.0002), biases 0;
/// - LayerNorm weights 1, biases 0;
/// - every other Linear (inner adapter layers, com_dense, dense, out_proj, task_dense*,
///   the lin head's attention, classifier): PyTorch's default, weight and bias
///   ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)).
/// Deterministic for a given @p seed (std::mt19937_64; the numbers differ from PyTorch's).
template <class T>
void init_parameters(ParameterStore<T>& store, std::uint64_t seed, double adapter_std = 0.0002) {
  std::mt19937_64 rng(seed);
  auto ends_with = [](const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  const auto& table = store.table();
  for (std::size_t i = 0; i < table.size(); ++i) {
    const auto& s = table[i];
    const bool is_projection = s.name.find("down_project.") != std::string::npos ||
                               s.name.find("up_project.") != std::string::npos;
    if (s.name.find("LayerNorm.") != std::string::npos) {
      const T v = ends_with(s.name, ".weight") ? T(1) : T(0);
      std::fill(s.data, s.data + s.size(), v);
    } else if (is_projection) {
      std::normal_distribution<double> normal(0.0, adapter_std);
      for (index_t k = 0; k < s.size(); ++k)
        s.data[k] = ends_with(s.name, ".weight") ? static_cast<T>(normal(rng)) : T(0);
    } else {
      // fan_in is the weight's second dimension; a bias uses its weight's fan_in.
      index_t fan_in = s.shape.size() == 2 ? s.shape[1] : 1;
      if (ends_with(s.name, ".bias") && i > 0 && table[i - 1].shape.size() == 2)
        fan_in = table[i - 1].shape[1];
      const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
      std::uniform_real_distribution<double> uniform(-bound, bound);
      for (index_t k = 0; k < s.size(); ++k) s.data[k] = static_cast<T>(uniform(rng));
    }
  }
}

}  // namespace kadapter
