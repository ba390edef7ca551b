/// @file kadapter_cuda.hpp
/// @brief The GPU backend: `Cuda`-tag overloads of the kernels (cuBLASLt products, CUDA
/// kernels), the per-thread Context, device buffers, AdamW and the gradient norm (the hooks of
/// the Trainer's device optimizer). With it, FrozenEncoder<C, float, Cuda>,
/// TaskModel<A, float, Cuda> and Trainer<A, float, Cuda> run on the GPU.
///
/// Include from a .cu file compiled by nvcc and link `kadapter::cuda`. CPU-only code includes
/// kadapter.hpp and never sees a CUDA header.
#pragma once

#include "kadapter/backend/cuda/backward.hpp"
#include "kadapter/backend/cuda/gemm.hpp"
#include "kadapter/backend/cuda/kernels.hpp"
#include "kadapter/backend/cuda/optimizer.hpp"
#include "kadapter/backend/cuda/runtime.hpp"
