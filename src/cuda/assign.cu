// The nearest-projected-centroid step of co-clustering and k-means (spec 2.1), fused:
// labels[n] = argmax_j (x[n] . m[j] + bias[j]) over all clusters, without storing the N x K
// score matrix. Each block owns 128 rows of one head, keeps their bf16/f16 fragments in registers
// (ldmatrix, once) and streams the centroids through shared memory 64 at a time (cp.async, two
// stages), multiplying on tensor cores (mma.sync m16n8k16, fp32 accumulation; runs on sm_80 and
// sm_90) and folding each tile into a running (max, index) per row. Ties keep the lowest index,
// as on the CPU: within a thread columns are visited in increasing order with a strict compare,
// and merges across threads compare (value, index).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstdint>
#include <cstdlib>

#include "kernels.cuh"
#include "ptx.cuh"

namespace svoo::cuda::detail {

bool assign_wgmma_available();  // assign_wgmma.cu
void launch_assign_wgmma(const RowsView& x, const void* m, const float* bias, int clusters, std::int32_t* labels,
                         cudaStream_t stream);
void launch_assign_wgmma_pipelined(const RowsView& x, const void* m, const float* bias, int clusters,
                                   std::int32_t* labels, cudaStream_t stream);

namespace {

constexpr int kDim = 128;          // head dim (the only one instantiated)
constexpr int kPitch = kDim + 8;   // shared row pitch in elements: +16 B avoids ldmatrix bank conflicts
constexpr int kThreads = 256;      // 8 warps, each 32 rows x (kCols / kWarpsN) centroids of a tile

// Tile shapes: kCols centroids per stage, split across kWarpsN warps; rows per block follow.
template <int kCols, int kWarpsN>
struct Tiles {
  static constexpr int kRows = 32 * (8 / kWarpsN);
  static constexpr int kWarpCols = kCols / kWarpsN;
  static constexpr int kSmemBytes = (kRows + 2 * kCols) * kPitch * 2;
};

using ptx::cp_async16;
using ptx::cp_async_commit;
using ptx::cp_async_wait;
using ptx::ldmatrix_x4;
using ptx::mma16816;

__device__ __forceinline__ bool better(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

// Loads centroid tile `tile` (kCols rows of kDim) of one head into shared memory.
template <int kCols>
__device__ __forceinline__ void load_tile(std::uint16_t* dst, const std::uint16_t* m, int clusters, int tile) {
  for (int c = threadIdx.x; c < kCols * (kDim / 8); c += kThreads) {
    const int row = c / (kDim / 8), chunk = c % (kDim / 8);
    const int j = tile * kCols + row;
    const std::uint16_t* src = m + static_cast<std::int64_t>(j < clusters ? j : 0) * kDim + chunk * 8;
    cp_async16(dst + row * kPitch + chunk * 8, src, j < clusters ? 16 : 0);
  }
}

template <bool kBf16, int kCols, int kWarpsN, int kMinBlocks>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    assign_kernel(const std::uint16_t* __restrict__ x, std::int64_t tokens, std::int64_t head_stride,
                  std::int64_t row_stride, const std::uint16_t* __restrict__ m, const float* __restrict__ bias,
                  int clusters, std::int32_t* __restrict__ labels) {
  constexpr int kRows = Tiles<kCols, kWarpsN>::kRows, kWarpCols = Tiles<kCols, kWarpsN>::kWarpCols;
  constexpr int kNt = kWarpCols / 8;  // n-tiles of 8 centroids per warp
  extern __shared__ __align__(16) std::uint16_t smem[];
  std::uint16_t* sx = smem;                       // kRows x kPitch
  std::uint16_t* sm = smem + kRows * kPitch;      // 2 stages x kCols x kPitch
  __shared__ float red_v[kWarpsN][kRows];
  __shared__ int red_i[kWarpsN][kRows];

  const int head = blockIdx.y;
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) * kRows;
  const std::uint16_t* xh = x + head * head_stride;
  const std::uint16_t* mh = m + static_cast<std::int64_t>(head) * clusters * kDim;
  const float* bh = bias ? bias + static_cast<std::int64_t>(head) * clusters : nullptr;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp % (8 / kWarpsN), wn = warp / (8 / kWarpsN);
  const int tiles = (clusters + kCols - 1) / kCols;

  // Prologue: the row block and the first two centroid tiles.
  for (int c = threadIdx.x; c < kRows * (kDim / 8); c += kThreads) {
    const int r = c / (kDim / 8), chunk = c % (kDim / 8);
    const std::int64_t n = row0 + r;
    const std::uint16_t* src = xh + (n < tokens ? n : 0) * row_stride + chunk * 8;
    cp_async16(sx + r * kPitch + chunk * 8, src, n < tokens ? 16 : 0);
  }
  load_tile<kCols>(sm, mh, clusters, 0);
  cp_async_commit();
  if (tiles > 1) load_tile<kCols>(sm + kCols * kPitch, mh, clusters, 1);
  cp_async_commit();

  std::uint32_t afrag[2][kDim / 16][4];
  float best_v[2][2];
  int best_i[2][2];
#pragma unroll
  for (int a = 0; a < 2; ++a)
#pragma unroll
    for (int b = 0; b < 2; ++b) best_v[a][b] = -FLT_MAX, best_i[a][b] = 0x7fffffff;

  for (int t = 0; t < tiles; ++t) {
    cp_async_wait<1>();
    __syncthreads();
    if (t == 0) {
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int ks = 0; ks < kDim / 16; ++ks)
          ldmatrix_x4(afrag[mt][ks], sx + (wm * 32 + mt * 16 + (lane % 16)) * kPitch + ks * 16 + (lane / 16) * 8);
    }
    const std::uint16_t* tile = sm + (t & 1) * kCols * kPitch;
    float acc[2][kNt][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks) {
      std::uint32_t b[kNt / 2][4];  // ldmatrix.x4, each covering two n-tiles of 8 centroids
#pragma unroll
      for (int p = 0; p < kNt / 2; ++p) {
        const int n = wn * kWarpCols + p * 16 + (lane % 8) + (lane / 16) * 8;
        ldmatrix_x4(b[p], tile + n * kPitch + ks * 16 + ((lane / 8) % 2) * 8);
      }
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNt; ++nt)
          mma16816<kBf16>(acc[mt][nt], afrag[mt][ks], b[nt / 2][(nt % 2) * 2], b[nt / 2][(nt % 2) * 2 + 1]);
    }
    // Fold this tile into the running argmax. Bias and the mask of a partial last tile are
    // uniform branches; then per row a max over the thread's values, and only when it beats the
    // running best (rare after the first tiles) a search for its lowest column.
    if (bh) {
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int j = t * kCols + wn * kWarpCols + nt * 8 + (lane % 4) * 2 + e;
          const float bj = j < clusters ? __ldg(bh + j) : 0.0f;
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) acc[mt][nt][e] += bj, acc[mt][nt][2 + e] += bj;
        }
    }
    if ((t + 1) * kCols > clusters) {
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e)
          if (t * kCols + wn * kWarpCols + nt * 8 + (lane % 4) * 2 + e >= clusters)
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) acc[mt][nt][e] = acc[mt][nt][2 + e] = -FLT_MAX;
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float mx = acc[mt][0][half * 2];
#pragma unroll
        for (int nt = 0; nt < kNt; ++nt) mx = fmaxf(mx, fmaxf(acc[mt][nt][half * 2], acc[mt][nt][half * 2 + 1]));
        if (mx > best_v[mt][half]) {
          int found = 0x7fffffff;
#pragma unroll
          for (int nt = kNt - 1; nt >= 0; --nt)
#pragma unroll
            for (int e = 1; e >= 0; --e)
              if (acc[mt][nt][half * 2 + e] == mx) found = t * kCols + wn * kWarpCols + nt * 8 + (lane % 4) * 2 + e;
          best_v[mt][half] = mx;
          best_i[mt][half] = found;
        }
      }
    __syncthreads();  // every warp is done with this stage before it is refilled
    if (t + 2 < tiles) load_tile<kCols>(sm + (t & 1) * kCols * kPitch, mh, clusters, t + 2);
    cp_async_commit();
  }
  cp_async_wait<0>();

  // Merge the four lanes that share a row, then the two column halves through shared memory.
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float v = best_v[mt][half];
      int i = best_i[mt][half];
#pragma unroll
      for (int off = 1; off < 4; off <<= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, off);
        const int oi = __shfl_xor_sync(0xffffffffu, i, off);
        if (better(ov, oi, v, i)) v = ov, i = oi;
      }
      if (lane % 4 == 0) {
        const int r = wm * 32 + mt * 16 + half * 8 + lane / 4;
        red_v[wn][r] = v;
        red_i[wn][r] = i;
      }
    }
  __syncthreads();
  for (int r = threadIdx.x; r < kRows; r += kThreads) {
    const std::int64_t n = row0 + r;
    if (n >= tokens) continue;
    float v = red_v[0][r];
    int label = red_i[0][r];
#pragma unroll
    for (int w = 1; w < kWarpsN; ++w)
      if (better(red_v[w][r], red_i[w][r], v, label)) v = red_v[w][r], label = red_i[w][r];
    if (label == 0x7fffffff) label = 0;  // every score NaN: no comparison succeeded
    labels[head * tokens + n] = label;
  }
}

// Tile variant. By default (-1): 4, the pipelined persistent wgmma kernel, where the sm_90a code
// runs and there is no bias (co-clustering); else 0, the mma.sync kernel (k-means' bias costs the
// wgmma kernels a global load per score). SVOO_ASSIGN_VARIANT selects one for benchmarks: 1 and 2
// other mma.sync tiles, 3 the first (unpipelined) wgmma kernel. 3 and 4 fall back to 0 where the
// sm_90a code cannot run.
int assign_variant() {
  static const int v = [] {
    const char* e = std::getenv("SVOO_ASSIGN_VARIANT");
    return e ? std::atoi(e) : -1;
  }();
  return v;
}

template <bool kBf16, int kCols, int kWarpsN, int kMinBlocks>
void launch_variant(const RowsView& x, const void* m, const float* bias, int clusters, std::int32_t* labels,
                    cudaStream_t stream) {
  using T = Tiles<kCols, kWarpsN>;
  const dim3 grid(static_cast<unsigned>((x.tokens + T::kRows - 1) / T::kRows), static_cast<unsigned>(x.heads));
  auto kernel = assign_kernel<kBf16, kCols, kWarpsN, kMinBlocks>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kSmemBytes);
  kernel<<<grid, kThreads, T::kSmemBytes, stream>>>(static_cast<const std::uint16_t*>(x.data), x.tokens, x.head_stride,
                                                    x.row_stride, static_cast<const std::uint16_t*>(m), bias, clusters,
                                                    labels);
}

template <bool kBf16>
void launch_typed(int variant, const RowsView& x, const void* m, const float* bias, int clusters,
                  std::int32_t* labels, cudaStream_t stream) {
  if ((variant == 3 || variant == 4) && assign_wgmma_available()) {
    if (variant == 3) {
      launch_assign_wgmma(x, m, bias, clusters, labels, stream);
    } else {
      launch_assign_wgmma_pipelined(x, m, bias, clusters, labels, stream);
    }
    return;
  }
  switch (variant) {
    case 1: launch_variant<kBf16, 128, 2, 1>(x, m, bias, clusters, labels, stream); break;
    case 2: launch_variant<kBf16, 64, 1, 1>(x, m, bias, clusters, labels, stream); break;
    default: launch_variant<kBf16, 64, 2, 2>(x, m, bias, clusters, labels, stream); break;
  }
}

}  // namespace

void launch_assign_variant(int variant, const RowsView& x, const void* m, const float* bias, int clusters,
                           std::int32_t* labels, cudaStream_t stream) {
  if (x.heads == 0 || x.tokens == 0 || clusters == 0) return;
  if (x.elem == Elem::bf16) {
    launch_typed<true>(variant, x, m, bias, clusters, labels, stream);
  } else {
    launch_typed<false>(variant, x, m, bias, clusters, labels, stream);
  }
}

bool assign_variant_runs(int variant) {
  return variant >= 0 && variant <= 2 ? true : (variant == 3 || variant == 4) && assign_wgmma_available();
}

void launch_assign(const RowsView& x, const void* m, const float* bias, int clusters, std::int32_t* labels,
                   cudaStream_t stream) {
  int variant = assign_variant();
  if (variant < 0) variant = bias == nullptr && assign_wgmma_available() ? 4 : 0;
  launch_assign_variant(variant, x, m, bias, clusters, labels, stream);
}

}  // namespace svoo::cuda::detail
