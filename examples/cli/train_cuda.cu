// The command line's GPU paths: training and `grads` with the backbone, the task model and
// AdamW on the Cuda backend. Compiled by nvcc when the CUDA toolkit is found; the rest of the
// program is C++ and calls these through the declarations in train.hpp and grads.hpp.
#include "kadapter/kadapter_cuda.hpp"

#include "cli/grads.hpp"
#include "cli/train.hpp"

namespace kadapter::cli {

namespace {
/// Check for a device and set the arithmetic of this thread's products.
void prepare_device(const std::string& dtype) {
  if (!cuda::device_available())
    throw Error("--device cuda: no usable CUDA device (the CUDA runtime found none; run on the CPU with --device cpu)");
  cuda::context().math = dtype == "bf16" ? cuda::Math::bf16 : dtype == "tf32" ? cuda::Math::tf32 : cuda::Math::fp32;
}
}  // namespace

TrainResult run_training_cuda(const Args& args, bool finetune, bool evaluate_only) {
  prepare_device(args.get("dtype"));
  return run_training_on<Cuda>(args, finetune, evaluate_only);
}

GradsResult<float> compute_grads_cuda(const GradsRequest& req, const std::string& dtype) {
  prepare_device(dtype);
  return compute_grads<float, Cuda>(req);
}

}  // namespace kadapter::cli
