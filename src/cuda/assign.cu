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
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "kernels.cuh"
#include "ptx.cuh"
#include "svoo/error.hpp"

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

// One block's view of a head: its rows of x, its centroids m and bias, and where this thread's
// warp sits among the 8 (wm: 32-row slice, wn: column slice of kCols / kWarpsN centroids).
struct HeadBlock {
  const std::uint16_t* xh;
  const std::uint16_t* mh;
  const float* bh;
  int warp, lane, wm, wn, tiles;
};
template <int kCols, int kWarpsN>
__device__ __forceinline__ HeadBlock head_block(const std::uint16_t* x, std::int64_t head_stride,
                                                const std::uint16_t* m, const float* bias, int clusters, int head) {
  const int warp = threadIdx.x / 32;
  return {x + head * head_stride, m + static_cast<std::int64_t>(head) * clusters * kDim,
          bias ? bias + static_cast<std::int64_t>(head) * clusters : nullptr, warp, static_cast<int>(threadIdx.x % 32),
          warp % (8 / kWarpsN), warp / (8 / kWarpsN), (clusters + kCols - 1) / kCols};
}

// acc (zeroed by the caller) += the warp's 32 rows (afrag: two m-tiles of 16) times kNt n-tiles of
// 8 centroids from column `col0` of a shared tile.
template <bool kBf16, int kNt>
__device__ __forceinline__ void tile_products(float (&acc)[2][kNt][4], const std::uint32_t (&afrag)[2][kDim / 16][4],
                                              const std::uint16_t* tile, int col0, int lane) {
#pragma unroll
  for (int ks = 0; ks < kDim / 16; ++ks) {
    std::uint32_t b[kNt / 2][4];  // ldmatrix.x4, each covering two n-tiles of 8 centroids
#pragma unroll
    for (int p = 0; p < kNt / 2; ++p) {
      const int n = col0 + p * 16 + (lane % 8) + (lane / 16) * 8;
      ldmatrix_x4(b[p], tile + n * kPitch + ks * 16 + ((lane / 8) % 2) * 8);
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt)
        mma16816<kBf16>(acc[mt][nt], afrag[mt][ks], b[nt / 2][(nt % 2) * 2], b[nt / 2][(nt % 2) * 2 + 1]);
  }
}

// The block's rows of x into shared memory (zeros past the tokens).
template <int kRows>
__device__ __forceinline__ void load_rows(std::uint16_t* sx, const std::uint16_t* xh, std::int64_t row0,
                                          std::int64_t tokens, std::int64_t row_stride) {
  for (int c = threadIdx.x; c < kRows * (kDim / 8); c += kThreads) {
    const int r = c / (kDim / 8), chunk = c % (kDim / 8);
    const std::int64_t n = row0 + r;
    const std::uint16_t* src = xh + (n < tokens ? n : 0) * row_stride + chunk * 8;
    cp_async16(sx + r * kPitch + chunk * 8, src, n < tokens ? 16 : 0);
  }
}

// Waits for centroid tile t (two cp.async stages), loads the warp's row fragments at the first
// tile, and computes acc = the warp's 32 rows x its kNt n-tiles from column col0 of the tile.
template <bool kBf16, int kNt>
__device__ __forceinline__ void tile_scores(int t, std::uint32_t (&afrag)[2][kDim / 16][4], const std::uint16_t* sx,
                                            const std::uint16_t* tile, int wm, int col0, int lane,
                                            float (&acc)[2][kNt][4]) {
  cp_async_wait<1>();
  __syncthreads();
  if (t == 0) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int ks = 0; ks < kDim / 16; ++ks)
        ldmatrix_x4(afrag[mt][ks], sx + (wm * 32 + mt * 16 + (lane % 16)) * kPitch + ks * 16 + (lane / 16) * 8);
  }
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
  tile_products<kBf16, kNt>(acc, afrag, tile, col0, lane);
}

// Once every warp has folded tile t: its stage refilled with tile t + 2.
template <int kCols>
__device__ __forceinline__ void refill_stage(std::uint16_t* sm, const std::uint16_t* mh, int clusters, int t,
                                             int tiles) {
  __syncthreads();
  if (t + 2 < tiles) load_tile<kCols>(sm + (t & 1) * kCols * kPitch, mh, clusters, t + 2);
  cp_async_commit();
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
  const auto [xh, mh, bh, warp, lane, wm, wn, tiles] =
      head_block<kCols, kWarpsN>(x, head_stride, m, bias, clusters, head);

  // Prologue: the row block and the first two centroid tiles.
  load_rows<kRows>(sx, xh, row0, tokens, row_stride);
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
    float acc[2][kNt][4];
    tile_scores<kBf16, kNt>(t, afrag, sx, sm + (t & 1) * kCols * kPitch, wm, wn * kWarpCols, lane, acc);
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
    refill_stage<kCols>(sm, mh, clusters, t, tiles);  // every warp is done with this stage
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

// The query-cluster alignment's candidate moves (svoo::align_clusters; the CPU's
// alignment_candidates in src/cpu/cluster.cpp): for each row it scores, its `e` best taking
// clusters (takes[h, j] != 0) by x . m[j] + bias[j] (ties: lowest j), and what each move costs, the
// row's own score less that one; -1 pads; entry q of a row at (h * out_rows + slot) * out_stride + q,
// slot its token (shedding rows) or its list index (listed rows). Other entries are left as they
// were. Which rows:
//   - kListed false: every row of the clusters that shed rows. Compact row c of head h (shed_base,
//     the exclusive scan of those clusters' sizes) is row c - shed_base[j] of cluster j, i.e. token
//     perm[offsets[j] + c - shed_base[j]];
//   - kListed true: the tokens of list + h * list_stride, count[h * (clusters + 1) + clusters] of
//     them (the offered rows of launch_align_offers; -1 entries skipped), own cluster labels[token].
// The planner scores the shedding rows with kE = 1 (the offers need only each row's first
// candidate: a running max, where a list of 8 is an insertion sort of every column a thread sees,
// 6.5 ms of the 7.2 the alignment cost at Wan2.1-14B 720p, run165), then the few offered rows with
// kE = kAlignE; the products and the folds are the same code, so the first entries agree bit for bit.
// The products are assign_kernel's (64-centroid tiles, two warps across each); each thread keeps
// its rows' best kE scores among its own columns, visited in increasing order (a strict compare
// keeps the lower column first on ties), and one thread a row merges the eight lists at the end.
// clusters <= kAlignMaxClusters.
template <bool kBf16, int kE, bool kListed>
__global__ void __launch_bounds__(kThreads, kE == 1 ? 2 : 1)
    align_candidates_kernel(const std::uint16_t* __restrict__ x, std::int64_t tokens, std::int64_t head_stride,
                            std::int64_t row_stride, const std::uint16_t* __restrict__ m,
                            const float* __restrict__ bias, int clusters, const std::uint8_t* __restrict__ takes,
                            const std::int32_t* __restrict__ shed_base, const std::int32_t* __restrict__ offsets,
                            const std::int32_t* __restrict__ perm, const std::int32_t* __restrict__ list,
                            std::int64_t list_stride, const std::int32_t* __restrict__ labels, int e,
                            std::int16_t* __restrict__ cand, float* __restrict__ cost, std::int64_t out_rows,
                            int out_stride) {
  constexpr int kCols = 64, kWarpsN = 2;
  constexpr int kRows = Tiles<kCols, kWarpsN>::kRows, kWarpCols = Tiles<kCols, kWarpsN>::kWarpCols;
  constexpr int kNt = kWarpCols / 8;
  extern __shared__ __align__(16) std::uint16_t smem[];
  std::uint16_t* sx = smem;
  std::uint16_t* sm = smem + kRows * kPitch;
  __shared__ std::uint8_t take_s[kAlignMaxClusters];
  __shared__ float own_s[kRows];
  __shared__ int token_s[kRows], label_s[kRows];
  __shared__ std::int32_t base[kAlignMaxClusters + 1];

  const int head = blockIdx.y;
  // shed_base in shedding mode, the offer counts' row in listed mode.
  const std::int32_t* base_h = shed_base + static_cast<std::int64_t>(head) * (clusters + 1);
  const int total = base_h[clusters];
  const int c0 = static_cast<int>(blockIdx.x) * kRows;
  if (c0 >= total) return;  // the grid covers every token (or every list slot); the rows scored are fewer
  const auto [xh, mh, bh, warp, lane, wm, wn, tiles] =
      head_block<kCols, kWarpsN>(x, head_stride, m, bias, clusters, head);
  for (int j = threadIdx.x; j < clusters; j += kThreads) take_s[j] = takes[head * clusters + j];
  if constexpr (!kListed)
    for (int j = threadIdx.x; j <= clusters; j += kThreads) base[j] = base_h[j];
  __syncthreads();
  for (int r = threadIdx.x; r < kRows; r += kThreads) {  // row -> (cluster, token)
    const int c = c0 + r;
    int label = -1, token = -1;
    if (c < total) {
      if constexpr (kListed) {
        token = list[static_cast<std::int64_t>(head) * list_stride + c];
        if (token >= 0) label = labels[static_cast<std::int64_t>(head) * tokens + token];
      } else {
        int lo = 0, hi = clusters;  // the last j with base[j] <= c (clusters of no shedding row repeat a base)
        while (hi - lo > 1) {
          const int mid = (lo + hi) / 2;
          (base[mid] <= c ? lo : hi) = mid;
        }
        label = lo;
        token = perm[static_cast<std::int64_t>(head) * tokens +
                     offsets[static_cast<std::int64_t>(head) * (clusters + 1) + lo] + (c - base[lo])];
      }
    }
    label_s[r] = label, token_s[r] = token;
  }
  __syncthreads();
  for (int c = threadIdx.x; c < kRows * (kDim / 8); c += kThreads) {  // the rows, gathered
    const int r = c / (kDim / 8), chunk = c % (kDim / 8);
    const int token = token_s[r];
    cp_async16(sx + r * kPitch + chunk * 8, xh + static_cast<std::int64_t>(token < 0 ? 0 : token) * row_stride + chunk * 8,
               token < 0 ? 0 : 16);
  }
  load_tile<kCols>(sm, mh, clusters, 0);
  cp_async_commit();
  if (tiles > 1) load_tile<kCols>(sm + kCols * kPitch, mh, clusters, 1);
  cp_async_commit();

  // The thread's four rows: their clusters and their best candidates so far.
  int own_label[2][2];
  float bv[2][2][kE];
  int bi[2][2][kE];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      own_label[mt][half] = label_s[wm * 32 + mt * 16 + half * 8 + lane / 4];
#pragma unroll
      for (int q = 0; q < kE; ++q) bv[mt][half][q] = -INFINITY, bi[mt][half][q] = -1;
    }
  std::uint32_t afrag[2][kDim / 16][4];
  for (int t = 0; t < tiles; ++t) {
    float acc[2][kNt][4];
    tile_scores<kBf16, kNt>(t, afrag, sx, sm + (t & 1) * kCols * kPitch, wm, wn * kWarpCols, lane, acc);
    // Scores with the bias; the own cluster's score kept; non-taking and missing columns dropped.
    bool col_takes[kNt][2];
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int j = t * kCols + wn * kWarpCols + nt * 8 + (lane % 4) * 2 + c;
        const float bj = bh && j < clusters ? __ldg(bh + j) : 0.0f;
        col_takes[nt][c] = j < clusters && take_s[j] != 0;
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) acc[mt][nt][c] += bj, acc[mt][nt][2 + c] += bj;
      }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int own = own_label[mt][half];
        if (own < 0) continue;
        if (own / kCols == t) {
#pragma unroll
          for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
            for (int c = 0; c < 2; ++c)
              if (t * kCols + wn * kWarpCols + nt * 8 + (lane % 4) * 2 + c == own)
                own_s[wm * 32 + mt * 16 + half * 8 + lane / 4] = acc[mt][nt][half * 2 + c];
        }
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
          for (int c = 0; c < 2; ++c)
            if (col_takes[nt][c]) mx = fmaxf(mx, acc[mt][nt][half * 2 + c]);
        if (!(mx > bv[mt][half][kE - 1])) continue;  // the common case after the first tiles
#pragma unroll
        for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            float cv = acc[mt][nt][half * 2 + c];
            int ci = t * kCols + wn * kWarpCols + nt * 8 + (lane % 4) * 2 + c;
            if (!col_takes[nt][c] || !(cv > bv[mt][half][kE - 1])) continue;
#pragma unroll
            for (int q = 0; q < kE; ++q) {  // insertion, best first
              const bool up = cv > bv[mt][half][q];
              const float tv = up ? bv[mt][half][q] : cv;
              const int ti = up ? bi[mt][half][q] : ci;
              if (up) bv[mt][half][q] = cv, bi[mt][half][q] = ci;
              cv = tv, ci = ti;
            }
          }
      }
    refill_stage<kCols>(sm, mh, clusters, t, tiles);  // every warp is done with this stage
  }
  cp_async_wait<0>();
  __syncthreads();
  // The eight lists of each row (two warps x four lanes) into the freed tile memory, then the best
  // e of them by (score descending, column ascending): a warp a row, a lane a list, e rounds of a
  // warp-wide pick of the lists' heads.
  float* list_v = reinterpret_cast<float*>(smem);  // [kRows][8 * kE]
  int* list_i = reinterpret_cast<int*>(list_v + kRows * 8 * kE);
  const int slot = wn * 4 + lane % 4;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = wm * 32 + mt * 16 + half * 8 + lane / 4;
#pragma unroll
      for (int q = 0; q < kE; ++q)
        list_v[r * 8 * kE + slot * kE + q] = bv[mt][half][q], list_i[r * 8 * kE + slot * kE + q] = bi[mt][half][q];
    }
  __syncthreads();
  for (int r = warp; r < kRows; r += kThreads / 32) {
    const int token = token_s[r];
    if (token < 0) continue;
    const std::int64_t out = (static_cast<std::int64_t>(head) * out_rows + (kListed ? c0 + r : token)) * out_stride;
    int next = 0;  // lane < 8: the head of list `lane`
    for (int q = 0; q < kE; ++q) {
      float v = -INFINITY;
      int i = -1;
      if (lane < 8 && next < kE) v = list_v[r * 8 * kE + lane * kE + next], i = list_i[r * 8 * kE + lane * kE + next];
      float bvv = v;
      int bii = i;
#pragma unroll
      for (int off = 4; off > 0; off >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bvv, off);
        const int oi = __shfl_xor_sync(0xffffffffu, bii, off);
        if (oi >= 0 && (bii < 0 || ov > bvv || (ov == bvv && oi < bii))) bvv = ov, bii = oi;
      }
      bvv = __shfl_sync(0xffffffffu, bvv, 0), bii = __shfl_sync(0xffffffffu, bii, 0);
      if (i >= 0 && i == bii) ++next;  // that list's head is taken
      if (lane == 0) {
        const bool keep = q < e && bii >= 0;
        cand[out + q] = static_cast<std::int16_t>(keep ? bii : -1);
        cost[out + q] = keep ? own_s[r] - bvv : 0.0f;
      }
    }
  }
}

template <bool kBf16, int kE, bool kListed>
void launch_align_candidates_kind(const RowsView& x, const void* m, const float* bias, int clusters,
                                  const std::uint8_t* takes, const std::int32_t* base, const std::int32_t* offsets,
                                  const std::int32_t* perm, const std::int32_t* list, std::int64_t list_stride,
                                  std::int64_t slots, const std::int32_t* labels, int e, std::int16_t* cand,
                                  float* cost, int out_stride, cudaStream_t stream) {
  using T = Tiles<64, 2>;
  static_assert(T::kSmemBytes >= T::kRows * 8 * kE * 8, "the merge reuses the tile memory");
  const dim3 grid(static_cast<unsigned>((slots + T::kRows - 1) / T::kRows), static_cast<unsigned>(x.heads));
  auto kernel = align_candidates_kernel<kBf16, kE, kListed>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kSmemBytes);
  kernel<<<grid, kThreads, T::kSmemBytes, stream>>>(static_cast<const std::uint16_t*>(x.data), x.tokens, x.head_stride,
                                                    x.row_stride, static_cast<const std::uint16_t*>(m), bias, clusters,
                                                    takes, base, offsets, perm, list, list_stride, labels, e, cand,
                                                    cost, kListed ? slots : x.tokens, out_stride);
}

template <bool kBf16>
void launch_align_candidates_typed(const RowsView& x, const void* m, const float* bias, int clusters,
                                   const std::uint8_t* takes, const std::int32_t* base, const std::int32_t* offsets,
                                   const std::int32_t* perm, const std::int32_t* list, std::int64_t list_stride,
                                   std::int64_t slots, const std::int32_t* labels, int e, std::int16_t* cand,
                                   float* cost, int out_stride, cudaStream_t stream) {
  if (list) {
    launch_align_candidates_kind<kBf16, kAlignE, true>(x, m, bias, clusters, takes, base, offsets, perm, list,
                                                       list_stride, slots, labels, e, cand, cost, out_stride, stream);
  } else if (e == 1) {
    launch_align_candidates_kind<kBf16, 1, false>(x, m, bias, clusters, takes, base, offsets, perm, list, list_stride,
                                                  slots, labels, e, cand, cost, out_stride, stream);
  } else {
    launch_align_candidates_kind<kBf16, kAlignE, false>(x, m, bias, clusters, takes, base, offsets, perm, list,
                                                        list_stride, slots, labels, e, cand, cost, out_stride, stream);
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

void launch_align_candidates(const RowsView& x, const void* m, const float* bias, int clusters,
                             const std::uint8_t* takes, const std::int32_t* shed_base, const std::int32_t* offsets,
                             const std::int32_t* perm, int e, std::int16_t* cand, float* cost, int entry_stride,
                             cudaStream_t stream) {
  require(e >= 1 && e <= kAlignE && (entry_stride == kAlignE || (entry_stride == 1 && e == 1)),
          ErrorKind::invalid_argument,
          "launch_align_candidates: 1 to 8 candidates a row, with an entry stride of 8 (or 1 for one candidate)");
  if (x.heads == 0 || x.tokens == 0 || clusters == 0) return;
  if (x.elem == Elem::bf16) {
    launch_align_candidates_typed<true>(x, m, bias, clusters, takes, shed_base, offsets, perm, nullptr, 0, x.tokens,
                                        nullptr, e, cand, cost, entry_stride, stream);
  } else {
    launch_align_candidates_typed<false>(x, m, bias, clusters, takes, shed_base, offsets, perm, nullptr, 0, x.tokens,
                                         nullptr, e, cand, cost, entry_stride, stream);
  }
}

void launch_align_candidates_listed(const RowsView& x, const void* m, const float* bias, int clusters,
                                    const std::uint8_t* takes, const std::int32_t* labels, const std::int32_t* list,
                                    std::int64_t list_stride, std::int64_t slots, const std::int32_t* counts, int e,
                                    std::int16_t* cand, float* cost, cudaStream_t stream) {
  require(e >= 1 && e <= kAlignE, ErrorKind::invalid_argument, "launch_align_candidates_listed: 1 to 8 candidates a row");
  if (x.heads == 0 || x.tokens == 0 || clusters == 0 || slots == 0) return;
  if (x.elem == Elem::bf16) {
    launch_align_candidates_typed<true>(x, m, bias, clusters, takes, counts, nullptr, nullptr, list, list_stride, slots,
                                        labels, e, cand, cost, kAlignE, stream);
  } else {
    launch_align_candidates_typed<false>(x, m, bias, clusters, takes, counts, nullptr, nullptr, list, list_stride,
                                         slots, labels, e, cand, cost, kAlignE, stream);
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
