// A second .cu file that includes the GPU backend (see kernels_link_from_two_units).
#include <span>

#include "kadapter/kadapter_cuda.hpp"

void second_unit_gelu(std::span<float> x) { kadapter::gelu_inplace(kadapter::Cuda{}, x); }
