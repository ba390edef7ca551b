// The CUDA toolchain behind kadapter::cuda: a kernel and a cuBLASLt matrix product checked
// against the CPU. Compiled and linked everywhere the toolkit is; skipped without a GPU.
#define BOOST_TEST_MODULE cuda_smoke
#include "support/skippable_main.hpp"
#include "cuda/device_check.hpp"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cmath>
#include <vector>

#include "kadapter/config.hpp"

static_assert(KA_WITH_CUDA == 1, "kadapter::cuda defines KA_WITH_CUDA");

bool ka_test_can_run(std::string& why_not) { return cuda_device_present(why_not); }

namespace {

__global__ void scale_kernel(float* x, float a, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= a;
}

#define CUDA_OK(call) BOOST_REQUIRE_EQUAL(static_cast<int>(call), 0)

}  // namespace

BOOST_AUTO_TEST_CASE(kernel_runs) {
  const int n = 1000;
  std::vector<float> host(n, 2.0f);
  float* dev = nullptr;
  CUDA_OK(cudaMalloc(&dev, n * sizeof(float)));
  CUDA_OK(cudaMemcpy(dev, host.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  scale_kernel<<<(n + 255) / 256, 256>>>(dev, 1.5f, n);
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaMemcpy(host.data(), dev, n * sizeof(float), cudaMemcpyDeviceToHost));
  CUDA_OK(cudaFree(dev));
  for (float v : host) BOOST_TEST(v == 3.0f);
}

BOOST_AUTO_TEST_CASE(cublaslt_matmul_matches_cpu) {
  // Row-major Y (M, N) = X (M, K) * W^T with W (N, K), computed as column-major
  // Y^T (N, M) = W (N, K as column-major K x N, transposed) * X^T.
  const int M = 33, N = 17, K = 29;
  std::vector<float> x(M * K), w(N * K), y(M * N, 0.0f), ref(M * N, 0.0f);
  for (int i = 0; i < M * K; ++i) x[i] = std::sin(0.1f * i);
  for (int i = 0; i < N * K; ++i) w[i] = std::cos(0.07f * i);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k) ref[m * N + n] += x[m * K + k] * w[n * K + k];
  float *dx, *dw, *dy;
  CUDA_OK(cudaMalloc(&dx, x.size() * 4));
  CUDA_OK(cudaMalloc(&dw, w.size() * 4));
  CUDA_OK(cudaMalloc(&dy, y.size() * 4));
  CUDA_OK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dw, w.data(), w.size() * 4, cudaMemcpyHostToDevice));
  cublasLtHandle_t lt;
  CUDA_OK(cublasLtCreate(&lt));
  cublasLtMatmulDesc_t op;
  CUDA_OK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans = CUBLAS_OP_T, no = CUBLAS_OP_N;
  CUDA_OK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof trans));
  CUDA_OK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &no, sizeof no));
  cublasLtMatrixLayout_t a, b, c;
  CUDA_OK(cublasLtMatrixLayoutCreate(&a, CUDA_R_32F, K, N, K));  // W^T as stored: K x N
  CUDA_OK(cublasLtMatrixLayoutCreate(&b, CUDA_R_32F, K, M, K));  // X^T: K x M
  CUDA_OK(cublasLtMatrixLayoutCreate(&c, CUDA_R_32F, N, M, N));  // Y^T: N x M
  const float alpha = 1.0f, beta = 0.0f;
  CUDA_OK(cublasLtMatmul(lt, op, &alpha, dw, a, dx, b, &beta, dy, c, dy, c, nullptr, nullptr, 0, 0));
  CUDA_OK(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost));
  for (int i = 0; i < M * N; ++i) BOOST_TEST(y[i] == ref[i], boost::test_tools::tolerance(1e-4f));
  cublasLtMatrixLayoutDestroy(a);
  cublasLtMatrixLayoutDestroy(b);
  cublasLtMatrixLayoutDestroy(c);
  cublasLtMatmulDescDestroy(op);
  cublasLtDestroy(lt);
  cudaFree(dx);
  cudaFree(dw);
  cudaFree(dy);
}
