// Per-head fp32 products of centroid matrices (at most a few thousand rows each): the profile
// G = Ck Cq^T, the projected centroids G Cq, and the block logits s Cq Ck^T. SIMT fp32 so the
// results keep the CPU's precision (tensor-core tf32 would move assignments at near-ties).
// A block of 64 threads computes a 64 x 64 tile (32 x 64 where 64-row tiles would leave SMs
// idle), k in steps of 8 through shared memory, the next step loaded into registers while this
// one is multiplied. A thread owns 8 (or 4) x 8 outputs, rows {4 tr + i, 32 + 4 tr + i} and
// columns {4 tc + j, 32 + 4 tc + j}, so a k step costs it 4 vector loads from shared memory (each
// one conflict-free wavefront for the warp) for 64 FMAs; 4 x 4 outputs of 256 threads (8 scalar
// loads per 16 FMAs) were bound by shared memory at ~19 TFLOP/s on an H100.
#include <cstdint>
#include <cstdlib>

#include "kernels.cuh"

namespace svoo::cuda::detail {
namespace {

constexpr int kTile = 64, kStep = 8, kThreads = 64, kHalf = kTile / 2;
// Below this many 64-row blocks, 32-row blocks (4 x 8 outputs a thread) keep more SMs busy: the
// query side's G Ck (Kq = 256 rows, k = Kk = 1024) is 8 blocks a head.
constexpr long kFewBlocks = 512;

// c = alpha * a * op(b) + beta * c; op(b) = b^T (b is [nb, k]) when kTransB, else b ([k, nb]).
// A block covers kRows (64 or 32) rows x 64 columns.
template <bool kTransB, int kRows>
__global__ void __launch_bounds__(kThreads) gemm_kernel(int ma, int nb, int k, float alpha, const float* __restrict__ a,
                                                        const float* __restrict__ b, float beta, float* __restrict__ c) {
  constexpr int kTM = kRows / 8;  // output rows a thread: 8 (rows 4 tr + i, 32 + 4 tr + i) or 4
  __shared__ __align__(16) float sa[kStep][kRows + 4];  // pitch 68 / 36: rows stay 16-byte aligned
  __shared__ __align__(16) float sb[kStep][kTile + 4];
  const int h = blockIdx.z;
  a += static_cast<std::int64_t>(h) * ma * k;
  b += static_cast<std::int64_t>(h) * nb * k;
  c += static_cast<std::int64_t>(h) * ma * nb;
  const int row0 = blockIdx.y * kRows, col0 = blockIdx.x * kTile;
  const int tr = threadIdx.x / 8, tc = threadIdx.x % 8;  // 8 x 8 threads
  float acc[kTM][8] = {};
  // The next k step's tile is loaded into registers while this one is multiplied.
  constexpr int kPerA = kRows * kStep / kThreads, kPerB = kTile * kStep / kThreads;
  float ra[kPerA], rb[kPerB];
  auto load = [&](int k0) {
#pragma unroll
    for (int p = 0; p < kPerA; ++p) {  // a: kRows rows x kStep, consecutive threads along k
      const int e = threadIdx.x + p * kThreads;
      const int r = e / kStep, kk = e % kStep, gr = row0 + r, gk = k0 + kk;
      ra[p] = (gr < ma && gk < k) ? a[static_cast<std::int64_t>(gr) * k + gk] : 0.0f;
    }
#pragma unroll
    for (int p = 0; p < kPerB; ++p) {
      const int e = threadIdx.x + p * kThreads;
      if (kTransB) {
        const int n = e / kStep, kk = e % kStep, gn = col0 + n, gk = k0 + kk;
        rb[p] = (gn < nb && gk < k) ? b[static_cast<std::int64_t>(gn) * k + gk] : 0.0f;
      } else {
        const int kk = e / kTile, n = e % kTile, gn = col0 + n, gk = k0 + kk;
        rb[p] = (gn < nb && gk < k) ? b[static_cast<std::int64_t>(gk) * nb + gn] : 0.0f;
      }
    }
  };
  load(0);
  for (int k0 = 0; k0 < k; k0 += kStep) {
#pragma unroll
    for (int p = 0; p < kPerA; ++p) {  // a stored transposed (sa[kk][row])
      const int e = threadIdx.x + p * kThreads;
      sa[e % kStep][e / kStep] = ra[p];
    }
#pragma unroll
    for (int p = 0; p < kPerB; ++p) {  // b as sb[kk][col]
      const int e = threadIdx.x + p * kThreads;
      if (kTransB) sb[e % kStep][e / kStep] = rb[p];
      else sb[e / kTile][e % kTile] = rb[p];
    }
    __syncthreads();
    if (k0 + kStep < k) load(k0 + kStep);
#pragma unroll
    for (int kk = 0; kk < kStep; ++kk) {
      float av[kTM], bv[8];
      const float4 a0 = *reinterpret_cast<const float4*>(&sa[kk][tr * 4]);
      av[0] = a0.x, av[1] = a0.y, av[2] = a0.z, av[3] = a0.w;
      if constexpr (kTM == 8) {
        const float4 a1 = *reinterpret_cast<const float4*>(&sa[kk][kHalf + tr * 4]);
        av[4] = a1.x, av[5] = a1.y, av[6] = a1.z, av[7] = a1.w;
      }
      const float4 b0 = *reinterpret_cast<const float4*>(&sb[kk][tc * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&sb[kk][kHalf + tc * 4]);
      bv[0] = b0.x, bv[1] = b0.y, bv[2] = b0.z, bv[3] = b0.w, bv[4] = b1.x, bv[5] = b1.y, bv[6] = b1.z, bv[7] = b1.w;
#pragma unroll
      for (int i = 0; i < kTM; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const int r = row0 + (i < 4 ? tr * 4 + i : kHalf + tr * 4 + i - 4);
    if (r >= ma) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int n = col0 + (j < 4 ? tc * 4 + j : kHalf + tc * 4 + j - 4);
      if (n >= nb) continue;
      float* out = c + static_cast<std::int64_t>(r) * nb + n;
      *out = alpha * acc[i][j] + (beta != 0.0f ? beta * *out : 0.0f);
    }
  }
}

// 64-row blocks, or 32-row ones where 64-row blocks would be few (SVOO_GEMM_ROWS=64 / 32 forces one).
int rows_for(int heads, int ma, int nb) {
  static const int forced = [] {
    const char* e = std::getenv("SVOO_GEMM_ROWS");
    return e ? std::atoi(e) : 0;
  }();
  if (forced == 32 || forced == 64) return forced;
  const long blocks64 = static_cast<long>(heads) * ((ma + 63) / 64) * ((nb + kTile - 1) / kTile);
  return blocks64 < kFewBlocks ? 32 : 64;
}

template <bool kTransB>
void launch(int heads, int ma, int nb, int k, float alpha, const float* a, const float* b, float beta, float* c,
            cudaStream_t stream) {
  if (heads == 0 || ma == 0 || nb == 0) return;
  const unsigned cols = static_cast<unsigned>((nb + kTile - 1) / kTile);
  if (rows_for(heads, ma, nb) == 32)
    gemm_kernel<kTransB, 32><<<dim3(cols, (ma + 31) / 32, heads), kThreads, 0, stream>>>(ma, nb, k, alpha, a, b, beta, c);
  else
    gemm_kernel<kTransB, 64><<<dim3(cols, (ma + 63) / 64, heads), kThreads, 0, stream>>>(ma, nb, k, alpha, a, b, beta, c);
}

}  // namespace

void launch_gemm_nt(int heads, int ma, int nb, int k, float alpha, const float* a, const float* b, float beta, float* c,
                    cudaStream_t stream) {
  launch<true>(heads, ma, nb, k, alpha, a, b, beta, c, stream);
}

void launch_gemm_nn(int heads, int ma, int nb, int k, const float* a, const float* b, float* c, cudaStream_t stream) {
  launch<false>(heads, ma, nb, k, 1.0f, a, b, 0.0f, c, stream);
}

}  // namespace svoo::cuda::detail
