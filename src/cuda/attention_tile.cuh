// Internal: one warp's steps on a key tile in the portable attention kernel (attention.cu, mma.sync:
// sm_80, so sm_86 / sm_89 too), in a header of their own so that a benchmark of how the kernel's
// warps share the tensor cores (bench/sm80_pingpong_bench.cu) times the same code.
#pragma once

#include <cfloat>
#include <cstdint>

#include "ptx.cuh"

namespace svoo::cuda::detail::sm80 {

constexpr int kD = 128, kBN = 64, kPitch = kD + 8;  // head dim, keys a tile, a shared-memory row (padded: no bank conflicts)

using ptx::pack2;
__device__ __forceinline__ void ldsm_x4(std::uint32_t (&r)[4], const void* p) { ptx::ldmatrix_x4(r, p); }
__device__ __forceinline__ void ldsm_x4_t(std::uint32_t (&r)[4], const void* p) { ptx::ldmatrix_x4_trans(r, p); }
template <bool kBf16>
__device__ __forceinline__ void mma(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  ptx::mma16816<kBf16>(d, a, b0, b1);
}

// The per-tile steps of one warp for its first kA row tiles of 16 (kA < kMT where the item's
// rows end inside the warp's: those row tiles are skipped, so a short item's empty rows cost no
// tensor-core time, which the SM's other block then gets).
template <bool kBf16, int kMT, int kA>
__device__ __forceinline__ void tile_scores(float (&s)[kMT][kBN / 8][4], const std::uint32_t (&qf)[kMT == 1 ? kD / 16 : 1][4],
                                            const std::uint16_t* sq_warp, const std::uint16_t* sk, int lane) {
#pragma unroll
  for (int mt = 0; mt < kA; ++mt)
#pragma unroll
    for (int n = 0; n < kBN / 8; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
#pragma unroll
  for (int ks = 0; ks < kD / 16; ++ks) {
    std::uint32_t qa[kMT][4];
#pragma unroll
    for (int mt = 0; mt < kA; ++mt) {
      if constexpr (kMT == 1) {
#pragma unroll
        for (int e = 0; e < 4; ++e) qa[mt][e] = qf[ks][e];
      } else {
        ldsm_x4(qa[mt], sq_warp + (mt * 16 + (lane % 16)) * kPitch + ks * 16 + (lane / 16) * 8);
      }
    }
#pragma unroll
    for (int p = 0; p < kBN / 16; ++p) {
      std::uint32_t b[4];
      ldsm_x4(b, sk + (p * 16 + (lane % 8) + (lane / 16) * 8) * kPitch + ks * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
      for (int mt = 0; mt < kA; ++mt) {
        mma<kBf16>(s[mt][2 * p], qa[mt], b[0], b[1]);
        mma<kBf16>(s[mt][2 * p + 1], qa[mt], b[2], b[3]);
      }
    }
  }
}

// Online softmax of tile t (keys from t kBN on; L keys in all): s becomes P (unnormalised), O is
// rescaled only where a row maximum grew (exact: otherwise the factor is 1).
template <bool kBf16, int kMT, int kA>
__device__ __forceinline__ void tile_softmax(float (&s)[kMT][kBN / 8][4], float (&o)[kMT][kD / 8][4], float (&m_row)[kMT][2],
                                             float (&l_row)[kMT][2], int t, int L, int lane, float scale_log2) {
  if ((t + 1) * kBN > L) {  // mask keys past the end (last tile only)
#pragma unroll
    for (int n = 0; n < kBN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (t * kBN + n * 8 + (lane % 4) * 2 + (e % 2) >= L)
#pragma unroll
          for (int mt = 0; mt < kA; ++mt) s[mt][n][e] = -FLT_MAX;
  }
  float alpha[kMT][2];
  bool grew = false;
#pragma unroll
  for (int mt = 0; mt < kA; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float m0 = s[mt][0][half * 2], m1 = s[mt][0][half * 2 + 1];
#pragma unroll
      for (int n = 1; n < kBN / 8; ++n) m0 = fmaxf(m0, s[mt][n][half * 2]), m1 = fmaxf(m1, s[mt][n][half * 2 + 1]);
      float mx = fmaxf(m0, m1);
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      alpha[mt][half] = 1.f;
      if (mx > m_row[mt][half]) {
        alpha[mt][half] = ptx::ex2((m_row[mt][half] - mx) * scale_log2);
        m_row[mt][half] = mx;
        grew = true;
      }
      const float mxs = m_row[mt][half] * scale_log2;
      float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
      for (int n = 0; n < kBN / 8; ++n) {
        const float p0 = ptx::ex2(fmaf(s[mt][n][half * 2], scale_log2, -mxs));
        const float p1 = ptx::ex2(fmaf(s[mt][n][half * 2 + 1], scale_log2, -mxs));
        s[mt][n][half * 2] = p0, s[mt][n][half * 2 + 1] = p1;
        sum0 += p0, sum1 += p1;
      }
      l_row[mt][half] = l_row[mt][half] * alpha[mt][half] + (sum0 + sum1);
    }
  if (grew) {
#pragma unroll
    for (int mt = 0; mt < kA; ++mt)
#pragma unroll
      for (int n = 0; n < kD / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[mt][n][e] *= alpha[mt][e / 2];
  }
}

// O += P V with P from registers as the A operand (each V fragment serves every row tile).
template <bool kBf16, int kMT, int kA>
__device__ __forceinline__ void tile_pv(const float (&s)[kMT][kBN / 8][4], float (&o)[kMT][kD / 8][4], const std::uint16_t* sv,
                                        int lane) {
#pragma unroll
  for (int kk = 0; kk < kBN / 16; ++kk) {
    std::uint32_t pa[kMT][4];
#pragma unroll
    for (int mt = 0; mt < kA; ++mt) {
      pa[mt][0] = pack2<kBf16>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
      pa[mt][1] = pack2<kBf16>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
      pa[mt][2] = pack2<kBf16>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
      pa[mt][3] = pack2<kBf16>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
    }
#pragma unroll
    for (int p = 0; p < kD / 16; ++p) {
      std::uint32_t b[4];
      ldsm_x4_t(b, sv + (kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * kPitch + (2 * p + lane / 16) * 8);
#pragma unroll
      for (int mt = 0; mt < kA; ++mt) {
        mma<kBf16>(o[mt][2 * p], pa[mt], b[0], b[1]);
        mma<kBf16>(o[mt][2 * p + 1], pa[mt], b[2], b[3]);
      }
    }
  }
}

// Both: the softmax of tile t, then O += P V.
template <bool kBf16, int kMT, int kA>
__device__ __forceinline__ void tile_update(float (&s)[kMT][kBN / 8][4], float (&o)[kMT][kD / 8][4], float (&m_row)[kMT][2],
                                            float (&l_row)[kMT][2], const std::uint16_t* sv, int t, int L, int lane,
                                            float scale_log2) {
  tile_softmax<kBf16, kMT, kA>(s, o, m_row, l_row, t, L, lane, scale_log2);
  tile_pv<kBf16, kMT, kA>(s, o, sv, lane);
}

}  // namespace svoo::cuda::detail::sm80
