// Whether the GPU tests can run here: a CUDA device the runtime can use.
#pragma once

#include <cuda_runtime.h>

#include <string>

/// @brief True when a CUDA device is usable; otherwise false, with the reason in @p why_not.
inline bool cuda_device_present(std::string& why_not) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    why_not = std::string("no CUDA device (") + cudaGetErrorString(err) + ")";
    return false;
  }
  return true;
}
