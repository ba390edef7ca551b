/// @file kadapter.hpp
/// @brief Umbrella header of the CPU library. `kadapter_cuda.hpp` adds the GPU backend.
#pragma once

#include "kadapter/version.hpp"
#include "kadapter/config.hpp"
#include "kadapter/core/backend.hpp"
#include "kadapter/core/dtype.hpp"
#include "kadapter/core/error.hpp"
#include "kadapter/core/tensor.hpp"
#include "kadapter/core/workspace.hpp"
#include "kadapter/config/encoder_config.hpp"
#include "kadapter/layers/linear.hpp"
#include "kadapter/layers/layernorm.hpp"
#include "kadapter/layers/embeddings.hpp"
#include "kadapter/layers/encoder_layer.hpp"
#include "kadapter/backend/eigen/kernels.hpp"
#include "kadapter/models/encoder.hpp"
#include "kadapter/io/safetensors.hpp"
#include "kadapter/io/hf_config.hpp"
#include "kadapter/io/encoder_checkpoint.hpp"
#include "kadapter/io/model_dir.hpp"
