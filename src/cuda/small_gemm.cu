// Per-head fp32 products of centroid matrices (at most a few thousand rows each): the profile
// G = Ck Cq^T, the projected centroids G Cq, and the block logits s Cq Ck^T. SIMT fp32 so the
// results keep the CPU's precision (tensor-core tf32 would move assignments at near-ties); a
// 64 x 64 tile per block, 4 x 4 outputs per thread, k in steps of 16 through shared memory.
#include <cstdint>

#include "kernels.cuh"

namespace svoo::cuda::detail {
namespace {

constexpr int kTile = 64, kStep = 16, kThreads = 256;

// c = alpha * a * op(b) + beta * c; op(b) = b^T (b is [nb, k]) when kTransB, else b ([k, nb]).
template <bool kTransB>
__global__ void __launch_bounds__(kThreads) gemm_kernel(int ma, int nb, int k, float alpha, const float* __restrict__ a,
                                                        const float* __restrict__ b, float beta, float* __restrict__ c) {
  __shared__ float sa[kStep][kTile + 4];
  __shared__ float sb[kStep][kTile + 4];
  const int h = blockIdx.z;
  a += static_cast<std::int64_t>(h) * ma * k;
  b += static_cast<std::int64_t>(h) * nb * k;
  c += static_cast<std::int64_t>(h) * ma * nb;
  const int row0 = blockIdx.y * kTile, col0 = blockIdx.x * kTile;
  const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;  // 16 x 16 threads, 4 x 4 outputs each
  float acc[4][4] = {};
  for (int k0 = 0; k0 < k; k0 += kStep) {
    // a tile: kTile rows x kStep, stored transposed (sa[kk][row]).
    for (int e = threadIdx.x; e < kTile * kStep; e += kThreads) {
      const int r = e / kStep, kk = e % kStep;
      const int gr = row0 + r, gk = k0 + kk;
      sa[kk][r] = (gr < ma && gk < k) ? a[static_cast<std::int64_t>(gr) * k + gk] : 0.0f;
    }
    for (int e = threadIdx.x; e < kTile * kStep; e += kThreads) {
      if (kTransB) {
        const int n = e / kStep, kk = e % kStep;
        const int gn = col0 + n, gk = k0 + kk;
        sb[kk][n] = (gn < nb && gk < k) ? b[static_cast<std::int64_t>(gn) * k + gk] : 0.0f;
      } else {
        const int kk = e / kTile, n = e % kTile;
        const int gn = col0 + n, gk = k0 + kk;
        sb[kk][n] = (gn < nb && gk < k) ? b[static_cast<std::int64_t>(gk) * nb + gn] : 0.0f;
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kStep; ++kk) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = sa[kk][tr * 4 + i], bv[i] = sb[kk][tc * 4 + i];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = row0 + tr * 4 + i;
    if (r >= ma) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = col0 + tc * 4 + j;
      if (n >= nb) continue;
      float* out = c + static_cast<std::int64_t>(r) * nb + n;
      *out = alpha * acc[i][j] + (beta != 0.0f ? beta * *out : 0.0f);
    }
  }
}

dim3 grid_of(int heads, int ma, int nb) {
  return dim3((nb + kTile - 1) / kTile, (ma + kTile - 1) / kTile, heads);
}

}  // namespace

void launch_gemm_nt(int heads, int ma, int nb, int k, float alpha, const float* a, const float* b, float beta, float* c,
                    cudaStream_t stream) {
  if (heads == 0 || ma == 0 || nb == 0) return;
  gemm_kernel<true><<<grid_of(heads, ma, nb), kThreads, 0, stream>>>(ma, nb, k, alpha, a, b, beta, c);
}

void launch_gemm_nn(int heads, int ma, int nb, int k, const float* a, const float* b, float* c, cudaStream_t stream) {
  if (heads == 0 || ma == 0 || nb == 0) return;
  gemm_kernel<false><<<grid_of(heads, ma, nb), kThreads, 0, stream>>>(ma, nb, k, 1.0f, a, b, 0.0f, c);
}

}  // namespace svoo::cuda::detail
