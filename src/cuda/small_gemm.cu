// Per-head fp32 products of centroid matrices (at most a few thousand rows each): the Gram matrix
// C^T C and the projected centroids C' (C^T C) of a clustering step, and the block logits s Cq Ck^T.
//
// Default path: tensor cores at fp32 accuracy ("3xTF32"). Each operand x is split into
// hi = tf32(x) and lo = tf32(x - hi), and a*b is taken as a_hi*b_lo + a_lo*b_hi + a_hi*b_hi on
// mma.sync m16n8k8 tf32 with fp32 accumulators. Only a_lo*b_lo (~2^-22 relative) is dropped, so the
// products keep the CPU's fp32 precision (a single tf32 product, 2^-11, would move assignments at
// near-ties). A block of 128 threads (2 x 2 warps of 32 x 32) computes a 64 x 64 tile, k in steps
// of 32 through shared memory, the next step loaded into registers while this one is multiplied.
// The SIMT path below it was bound at ~19 TFLOP/s on an H100 (0.14 ms a product at 40 heads x
// 1024 x 256 x 128); SVOO_GEMM=simt selects it (A/B, and a fallback if a device lacks tf32 mma).
//
// SIMT path: a block of 64 threads computes a 64 x 64 tile (32 x 64 where 64-row tiles would
// leave SMs idle), k in steps of 8 through shared memory, the next step loaded into registers
// while this one is multiplied. A thread owns 8 (or 4) x 8 outputs, rows {4 tr + i, 32 + 4 tr + i}
// and columns {4 tc + j, 32 + 4 tc + j}, so a k step costs it 4 vector loads from shared memory
// (each one conflict-free wavefront for the warp) for 64 FMAs.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels.cuh"
#include "ptx.cuh"

namespace svoo::cuda::detail {
namespace {

constexpr int kTile = 64, kStep = 8, kThreads = 64, kHalf = kTile / 2;
// Below this many 64-row blocks, 32-row blocks (4 x 8 outputs a thread) keep more SMs busy: the
// query side's G Ck (Kq = 256 rows, k = Kk = 1024) is 8 blocks a head.
constexpr long kFewBlocks = 512;

// c = alpha * op(a) * op(b) + beta * c; op(a) = a^T (a is [k, ma]) when kTransA, else a ([ma, k]);
// op(b) = b^T (b is [nb, k]) when kTransB, else b ([k, nb]). A block covers kRows (64 or 32) rows x
// 64 columns.
// One k step of an operand for the SIMT kernel: kN rows (of a, or columns of b) x kStep k values,
// stored in memory as [n][k] (kKMajor) or [k][n], zero past the edges. Element e of the tile is
// (n, kk) with consecutive threads along the contiguous direction. Loads into registers; store
// puts them in shared memory as [kk][n].
template <bool kKMajor, int kN>
struct SimtOperand {
  static constexpr int kPer = kN * kStep / kThreads;
  __device__ static void coords(int e, int& n, int& kk) {
    if (kKMajor) n = e / kStep, kk = e % kStep;
    else kk = e / kN, n = e % kN;
  }
  __device__ static void load(float (&r)[kPer], const float* src, int n0, int n_total, int k0, int k) {
#pragma unroll
    for (int p = 0; p < kPer; ++p) {
      int n, kk;
      coords(threadIdx.x + p * kThreads, n, kk);
      const int gn = n0 + n, gk = k0 + kk;
      r[p] = (gn < n_total && gk < k)
                 ? src[kKMajor ? static_cast<std::int64_t>(gn) * k + gk : static_cast<std::int64_t>(gk) * n_total + gn]
                 : 0.0f;
    }
  }
  template <int kPitch>
  __device__ static void store(const float (&r)[kPer], float (*dst)[kPitch]) {
#pragma unroll
    for (int p = 0; p < kPer; ++p) {
      int n, kk;
      coords(threadIdx.x + p * kThreads, n, kk);
      dst[kk][n] = r[p];
    }
  }
};

template <bool kTransA, bool kTransB, int kRows>
__global__ void __launch_bounds__(kThreads) gemm_simt_kernel(int ma, int nb, int k, float alpha, const float* __restrict__ a,
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
  using A = SimtOperand<!kTransA, kRows>;
  using B = SimtOperand<kTransB, kTile>;
  float ra[A::kPer], rb[B::kPer];
  auto load = [&](int k0) {
    A::load(ra, a, row0, ma, k0, k);
    B::load(rb, b, col0, nb, k0, k);
  };
  load(0);
  for (int k0 = 0; k0 < k; k0 += kStep) {
    A::store(ra, sa);
    B::store(rb, sb);
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


// ---- 3xTF32 tensor-core path ----
constexpr int kTcTile = 64, kTcK = 32, kTcThreads = 128;
constexpr int kTcPitchK = kTcK + 4;      // [row][k] tiles: fragment reads hit banks 4 g + t, all distinct
constexpr int kTcPitchN = kTcTile + 8;   // [k][col] tile (b not transposed): banks 8 t + g

// x = hi + lo with both parts tf32 (lo carries the next 11 bits of the mantissa).
__device__ __forceinline__ void split_tf32(float x, std::uint32_t& hi, std::uint32_t& lo) {
  hi = ptx::to_tf32(x);
  lo = ptx::to_tf32(x - __uint_as_float(hi));
}

// Same contract as gemm_simt_kernel. Warp (wm, wn) owns rows 32 wm + [0, 32) and columns
// 32 wn + [0, 32) of the tile: 2 x 4 m16n8 accumulators. Fragment layout of m16n8k8 tf32 (g = lane / 4,
// t = lane % 4): a {(g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4)}, b {(k t, n g), (k t + 4, n g)},
// c {(g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1)}.
template <bool kTransA, bool kTransB>
__global__ void __launch_bounds__(kTcThreads) gemm_tf32x3_kernel(int ma, int nb, int k, float alpha,
                                                                 const float* __restrict__ a,
                                                                 const float* __restrict__ b, float beta,
                                                                 float* __restrict__ c) {
  constexpr int kBRows = kTransB ? kTcTile : kTcK, kBPitch = kTransB ? kTcPitchK : kTcPitchN;
  constexpr int kARows = kTransA ? kTcK : kTcTile, kAPitch = kTransA ? kTcPitchN : kTcPitchK;
  // Two stages: cp.async fills one while the other is used. Rows are 16-byte aligned (pitches 36, 72).
  // a is held as [row][k], or as [k][row] when transposed (the layout it has in memory).
  __shared__ __align__(16) float sa[2][kARows][kAPitch];
  __shared__ __align__(16) float sb[2][kBRows][kBPitch];
  const int h = blockIdx.z;
  a += static_cast<std::int64_t>(h) * ma * k;
  b += static_cast<std::int64_t>(h) * nb * k;
  c += static_cast<std::int64_t>(h) * ma * nb;
  const int row0 = blockIdx.y * kTcTile, col0 = blockIdx.x * kTcTile;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int wm = warp / 2, wn = warp % 2;
  constexpr int kPer = kTcTile * kTcK / kTcThreads;  // 16 elements of each operand a thread per k step
  // Where rows are whole float4s (k % 4 == 0, nb % 4 == 0 for b not transposed, ma % 4 == 0 for a
  // transposed; the planner's shapes), 16-byte copies: 4 of each operand a thread per k step.
  // Otherwise 4-byte copies, 16 of each. Both zero-fill past the edges. a: (row, k) with a warp
  // reading contiguous bytes of a row; b^T likewise; b and a^T (stored [k][col]): (k, col).
  const bool vec = (kTransA ? ma % 4 == 0 : k % 4 == 0) && (kTransB ? k % 4 == 0 : nb % 4 == 0);
  // One k step's copies, kW floats each (4 or 1).
  auto copies = [&](auto width_tag, int stage, int k0) {
    constexpr int kW = decltype(width_tag)::value, kBytes = 4 * kW;
#pragma unroll 4
    for (int p = 0; p < kPer / kW; ++p) {
      const int e = tid + p * kTcThreads;
      const int r = e / (kTcK / kW), kk = (e % (kTcK / kW)) * kW, gr = row0 + r, gk = k0 + kk;
      if (kTransA) {
        const int ka = e / (kTcTile / kW), m = (e % (kTcTile / kW)) * kW, gm = row0 + m, gka = k0 + ka;
        const bool ok = gm < ma && gka < k;
        ptx::cp_async<kBytes>(&sa[stage][ka][m], a + (ok ? static_cast<std::int64_t>(gka) * ma + gm : 0), ok);
      } else {
        const bool ok_a = gr < ma && gk < k;
        ptx::cp_async<kBytes>(&sa[stage][r][kk], a + (ok_a ? static_cast<std::int64_t>(gr) * k + gk : 0), ok_a);
      }
      if (kTransB) {
        const int gn = col0 + r;
        const bool ok = gn < nb && gk < k;
        ptx::cp_async<kBytes>(&sb[stage][r][kk], b + (ok ? static_cast<std::int64_t>(gn) * k + gk : 0), ok);
      } else {
        const int kb = e / (kTcTile / kW), n = (e % (kTcTile / kW)) * kW, gn = col0 + n, gkb = k0 + kb;
        const bool ok = gn < nb && gkb < k;
        ptx::cp_async<kBytes>(&sb[stage][kb][n], b + (ok ? static_cast<std::int64_t>(gkb) * nb + gn : 0), ok);
      }
    }
  };
  auto load = [&](int stage, int k0) {
    if (vec) copies(std::integral_constant<int, 4>{}, stage, k0);
    else copies(std::integral_constant<int, 1>{}, stage, k0);
    ptx::cp_async_commit();
  };
  float acc[2][4][4] = {};
  load(0, 0);
  for (int k0 = 0, stage = 0; k0 < k; k0 += kTcK, stage ^= 1) {
    if (k0 + kTcK < k) {
      load(stage ^ 1, k0 + kTcK);
      ptx::cp_async_wait<1>();
    } else {
      ptx::cp_async_wait<0>();
    }
    __syncthreads();
#pragma unroll 2
    for (int k8 = 0; k8 < kTcK; k8 += 8) {
      std::uint32_t ahi[2][4], alo[2][4], bhi[4][2], blo[4][2];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const int r = wm * 32 + mt * 16 + g;
        // [k][row] reads hit banks 8 t + g, [row][k] ones 4 g + t: conflict-free either way.
        auto at = [&](int row, int kk) { return kTransA ? sa[stage][kk][row] : sa[stage][row][kk]; };
        split_tf32(at(r, k8 + t), ahi[mt][0], alo[mt][0]);
        split_tf32(at(r + 8, k8 + t), ahi[mt][1], alo[mt][1]);
        split_tf32(at(r, k8 + t + 4), ahi[mt][2], alo[mt][2]);
        split_tf32(at(r + 8, k8 + t + 4), ahi[mt][3], alo[mt][3]);
      }
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int n = wn * 32 + nt * 8 + g;
        const float b0 = kTransB ? sb[stage][n][k8 + t] : sb[stage][k8 + t][n];
        const float b1 = kTransB ? sb[stage][n][k8 + t + 4] : sb[stage][k8 + t + 4][n];
        split_tf32(b0, bhi[nt][0], blo[nt][0]);
        split_tf32(b1, bhi[nt][1], blo[nt][1]);
      }
      // Small terms first; each pass runs over the 8 accumulators so that consecutive MMAs are
      // independent (the asm statements keep their order).
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) ptx::mma1688_tf32(acc[mt][nt], alo[mt], bhi[nt][0], bhi[nt][1]);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) ptx::mma1688_tf32(acc[mt][nt], ahi[mt], blo[nt][0], blo[nt][1]);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) ptx::mma1688_tf32(acc[mt][nt], ahi[mt], bhi[nt][0], bhi[nt][1]);
    }
    __syncthreads();  // the stage just read is refilled by the next iteration's load
  }
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        const int r = row0 + wm * 32 + mt * 16 + g + (v >= 2 ? 8 : 0);
        const int n = col0 + wn * 32 + nt * 8 + 2 * t + (v & 1);
        if (r >= ma || n >= nb) continue;
        float* out = c + static_cast<std::int64_t>(r) * nb + n;
        *out = alpha * acc[mt][nt][v] + (beta != 0.0f ? beta * *out : 0.0f);
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

GemmPath default_path() {
  static const GemmPath path = [] {
    const char* e = std::getenv("SVOO_GEMM");
    return e && std::strcmp(e, "simt") == 0 ? GemmPath::simt : GemmPath::tf32x3;
  }();
  return path;
}

template <bool kTransA, bool kTransB>
void launch(GemmPath path, int heads, int ma, int nb, int k, float alpha, const float* a, const float* b, float beta,
            float* c, cudaStream_t stream) {
  if (heads == 0 || ma == 0 || nb == 0) return;
  if (path == GemmPath::automatic) path = default_path();
  const unsigned cols = static_cast<unsigned>((nb + kTile - 1) / kTile);
  if (path == GemmPath::tf32x3)
    gemm_tf32x3_kernel<kTransA, kTransB><<<dim3(cols, (ma + kTcTile - 1) / kTcTile, heads), kTcThreads, 0, stream>>>(
        ma, nb, k, alpha, a, b, beta, c);
  else if (rows_for(heads, ma, nb) == 32)
    gemm_simt_kernel<kTransA, kTransB, 32><<<dim3(cols, (ma + 31) / 32, heads), kThreads, 0, stream>>>(ma, nb, k, alpha, a, b,
                                                                                            beta, c);
  else
    gemm_simt_kernel<kTransA, kTransB, 64><<<dim3(cols, (ma + 63) / 64, heads), kThreads, 0, stream>>>(ma, nb, k, alpha, a, b,
                                                                                            beta, c);
}

}  // namespace

void launch_gemm_nt(int heads, int ma, int nb, int k, float alpha, const float* a, const float* b, float beta, float* c,
                    cudaStream_t stream, GemmPath path) {
  launch<false, true>(path, heads, ma, nb, k, alpha, a, b, beta, c, stream);
}

void launch_gemm_nn(int heads, int ma, int nb, int k, const float* a, const float* b, float* c, cudaStream_t stream,
                    GemmPath path) {
  launch<false, false>(path, heads, ma, nb, k, 1.0f, a, b, 0.0f, c, stream);
}

void launch_gemm_tn(int heads, int ma, int nb, int k, const float* a, const float* b, float* c, cudaStream_t stream,
                    GemmPath path) {
  launch<true, false>(path, heads, ma, nb, k, 1.0f, a, b, 0.0f, c, stream);
}

}  // namespace svoo::cuda::detail
