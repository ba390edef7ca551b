#!/usr/bin/env bash
# Build the GPU test and benchmark programs here (no GPU needed) and gather them in .gpu/, for
# a GPU machine that lacks this project's build dependencies: bench/gpu_check.sh --prebuilt .gpu
# runs them there. Targets Hopper (sm_90: H100, H200) and Ampere (sm_80), with no -march=native,
# so the host code runs on another machine's processor.
#
#   scripts/gpu_bundle.sh            # -> .gpu/bin/{test_cuda_smoke,test_cuda_kernels,test_cuda_models,bench_gpu_step}
#                                    #    .gpu/lib/ (Boost.Test's shared library)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DKADAPTER_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=80;90" \
  -DKADAPTER_NATIVE=OFF -DKADAPTER_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build-gpu -j"$jobs" --target test_cuda_smoke test_cuda_kernels test_cuda_models bench_gpu_step
rm -rf .gpu && mkdir -p .gpu/bin .gpu/lib
cp build-gpu/tests/cuda/test_cuda_smoke build-gpu/tests/cuda/test_cuda_kernels build-gpu/tests/cuda/test_cuda_models \
  build-gpu/bench/bench_gpu_step .gpu/bin/
# Shared libraries the programs need that a CUDA machine may not have (CUDA's own come from
# the machine's toolkit or PyTorch's wheels; see bench/gpu_check.sh).
for lib in $(ldd .gpu/bin/test_cuda_kernels .gpu/bin/test_cuda_models | awk '/boost|gomp/ {print $3}' | sort -u); do cp "$lib" .gpu/lib/; done
git describe --always --dirty >.gpu/REVISION 2>/dev/null || echo unknown >.gpu/REVISION
scripts/source_hash.sh >.gpu/SOURCES
du -sh .gpu
echo "gpu_bundle: ready; on the GPU machine run: bench/gpu_check.sh --prebuilt .gpu --out DIR"
