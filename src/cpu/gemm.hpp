// Internal: the few fp32 matrix products the CPU backend needs, on row-major buffers, through
// CBLAS (OpenBLAS). Called inside OpenMP regions, the OpenMP build of OpenBLAS runs them on the
// calling thread, so parallel loops over heads or clusters do not oversubscribe the cores.
#pragma once

#include <cstdint>

namespace svoo::cpu {

// C[m x n] = alpha * A[m x k] * B[n x k]^T + beta * C
void gemm_nt(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a, std::int64_t lda,
             const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc);

// C[m x n] = alpha * A[m x k] * B[k x n] + beta * C
void gemm_nn(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a, std::int64_t lda,
             const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc);

}  // namespace svoo::cpu
