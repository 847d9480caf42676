// Variable-block sparse attention (spec 2.4), FlashAttention-2 style on mma.sync (sm_80 and
// sm_90). A work item is one 64-row tile of one query cluster. Its kept key ranges are treated as
// one virtual key sequence: each 64-key tile gathers its rows through the ranges and the key
// permutation (cp.async, 16-byte chunks of 256-byte rows), so ragged ranges waste no tile and
// neither Q, K, V nor the output is ever permuted in memory: queries are read and outputs written
// through the query permutation. Online softmax in fp32 (base 2), P re-used from registers.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cub/block/block_scan.cuh>

#include <cfloat>
#include <cstdint>
#include <cstdlib>

#include "attention_kernel.cuh"
#include "ptx.cuh"

namespace svoo::cuda::detail {
namespace {

constexpr int kD = 128, kBN = 64, kThreads = 128, kPitch = kD + 8;
constexpr int kMaxRanges = 1024;  // per work item: (kk + 1) / 2 for kk <= 2048
constexpr int kTileElems = kBN * kPitch;
// Each of the 4 warps owns kWR query rows (16: Q fragments stay in registers; 32: every K/V
// fragment feeds two row tiles, halving shared-memory reads per multiply, Q re-read per step).
template <int kWR>
constexpr int smem_bytes() { return (4 * kWR * kPitch + 4 * kTileElems) * 2 + (2 * kMaxRanges + 1) * 4; }

using ptx::cp_async16;
using ptx::pack2;
__device__ __forceinline__ void commit() { ptx::cp_async_commit(); }
template <int N>
__device__ __forceinline__ void wait_groups() {
  ptx::cp_async_wait<N>();
}
__device__ __forceinline__ void ldsm_x4(std::uint32_t (&r)[4], const void* p) { ptx::ldmatrix_x4(r, p); }
__device__ __forceinline__ void ldsm_x4_t(std::uint32_t (&r)[4], const void* p) { ptx::ldmatrix_x4_trans(r, p); }
template <bool kBf16>
__device__ __forceinline__ void mma(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  ptx::mma16816<kBf16>(d, a, b0, b1);
}

struct Item {
  int h;
  std::int64_t row0;  // first permuted query row (sparse) or token (dense)
  int rows;
  std::int64_t rb, nr;  // ranges [rb, rb + nr)
};

template <bool kBf16, int kWR>
__global__ void __launch_bounds__(kThreads, 2) attention_kernel(AttentionArgs a) {
  constexpr int kBM = 4 * kWR, kMT = kWR / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto* sq = reinterpret_cast<std::uint16_t*>(smem_raw);
  auto* sk = sq + kBM * kPitch;       // 2 stages
  auto* sv = sk + 2 * kTileElems;     // 2 stages
  auto* r_begin = reinterpret_cast<std::int32_t*>(sv + 2 * kTileElems);
  auto* r_cum = r_begin + kMaxRanges;  // kMaxRanges + 1 entries
  const bool sparse = a.range_ptr != nullptr;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  Item it;
  if (sparse) {
    if (static_cast<std::int64_t>(blockIdx.x) >= *a.item_count) return;
    const int w = a.item_w[blockIdx.x];
    it.h = w / a.kq;
    const int i = w % a.kq;
    it.row0 = a.item_row[blockIdx.x];
    const std::int64_t end = a.q_offsets[static_cast<std::int64_t>(it.h) * (a.kq + 1) + i + 1];
    it.rows = static_cast<int>(end - it.row0 < kBM ? end - it.row0 : kBM);
    it.rb = a.range_ptr[w];
    it.nr = a.range_ptr[w + 1] - it.rb;
  } else {
    const std::int64_t tiles = (a.q.tokens + kBM - 1) / kBM;
    it.h = static_cast<int>(blockIdx.x / tiles);
    it.row0 = (blockIdx.x % tiles) * kBM;
    it.rows = static_cast<int>(a.q.tokens - it.row0 < kBM ? a.q.tokens - it.row0 : kBM);
    it.rb = 0;
    it.nr = 1;
  }
  // Range starts and exclusive prefix lengths (the virtual key sequence).
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int total_keys;
  {
    constexpr int kPer = kMaxRanges / kThreads;
    int len[kPer];
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      const int j = tid * kPer + e;
      len[e] = 0;
      if (j < it.nr) {
        const int b = sparse ? a.range_begin[it.rb + j] : 0;
        const int en = sparse ? a.range_end[it.rb + j] : static_cast<int>(a.k.tokens);
        r_begin[j] = b;
        len[e] = en - b;
      }
    }
    int agg;
    Scan(scan_tmp).ExclusiveSum(len, len, agg);
#pragma unroll
    for (int e = 0; e < kPer; ++e) r_cum[tid * kPer + e] = len[e];
    if (tid == 0) total_keys = agg;
  }
  __syncthreads();
  const int L = total_keys;
  const int nr = static_cast<int>(it.nr);
  const std::int64_t h = it.h;
  const auto* qbase = static_cast<const std::uint16_t*>(a.q.data) + h * a.q.head_stride;
  const auto* kbase = static_cast<const std::uint16_t*>(a.k.data) + h * a.k.head_stride;
  const auto* vbase = static_cast<const std::uint16_t*>(a.v.data) + h * a.v.head_stride;
  const std::int32_t* qperm = sparse ? a.q_perm + h * a.q.tokens : nullptr;
  const std::int32_t* kperm = sparse ? a.k_perm + h * a.k.tokens : nullptr;

  // Loads are laid out so that 16 consecutive lanes fetch the 16 chunks of one 256-byte row:
  // whole sectors from global memory and conflict-free 128-byte wavefronts into shared memory.
  for (int e = tid; e < kBM * (kD / 8); e += kThreads) {
    const int r = e / (kD / 8), c = e % (kD / 8);
    const bool ok = r < it.rows;
    const std::int64_t tok = ok ? (sparse ? qperm[it.row0 + r] : it.row0 + r) : 0;
    cp_async16(sq + r * kPitch + c * 8, qbase + tok * a.q.row_stride + c * 8, ok ? 16 : 0);
  }
  __shared__ std::int32_t s_tok[2][kBN];  // per stage: the key token of each tile row, -1 past the end
  // The tokens of a tile's rows: the virtual key index through the ranges and the permutation.
  auto fill_tokens = [&](int tile, int stage) {
    if (tid < kBN) {
      const int vt = tile * kBN + tid;
      std::int32_t tok = -1;
      if (vt < L) {
        int lo = 0, hi = nr - 1;  // last range whose prefix is <= vt
        while (lo < hi) {
          const int mid = (lo + hi + 1) / 2;
          if (r_cum[mid] <= vt) lo = mid; else hi = mid - 1;
        }
        const std::int64_t phys = r_begin[lo] + (vt - r_cum[lo]);
        tok = sparse ? kperm[phys] : static_cast<std::int32_t>(phys);
      }
      s_tok[stage][tid] = tok;
    }
  };
  auto issue_kv = [&](int stage) {
    for (int e = tid; e < kBN * (kD / 8); e += kThreads) {
      const int r = e / (kD / 8), c = e % (kD / 8);
      const std::int32_t tok = s_tok[stage][r];
      const std::int64_t row = tok < 0 ? 0 : tok;
      cp_async16(sk + stage * kTileElems + r * kPitch + c * 8, kbase + row * a.k.row_stride + c * 8, tok < 0 ? 0 : 16);
      cp_async16(sv + stage * kTileElems + r * kPitch + c * 8, vbase + row * a.v.row_stride + c * 8, tok < 0 ? 0 : 16);
    }
  };
  const int tiles = (L + kBN - 1) / kBN;
  if (tiles > 0) fill_tokens(0, 0);
  if (tiles > 1) fill_tokens(1, 1);
  __syncthreads();
  if (tiles > 0) issue_kv(0);
  commit();
  if (tiles > 1) issue_kv(1);
  commit();

  const float scale_log2 = 1.4426950408889634f / sqrtf(static_cast<float>(kD));
  std::uint32_t qf[kMT == 1 ? kD / 16 : 1][4];
  float o[kMT][kD / 8][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.f;
  float m_row[kMT][2], l_row[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) m_row[mt][0] = m_row[mt][1] = -FLT_MAX, l_row[mt][0] = l_row[mt][1] = 0.f;

  for (int t = 0; t < tiles; ++t) {
    wait_groups<1>();
    __syncthreads();
    if constexpr (kMT == 1) {
      if (t == 0) {
#pragma unroll
        for (int ks = 0; ks < kD / 16; ++ks)
          ldsm_x4(qf[ks], sq + (warp * kWR + (lane % 16)) * kPitch + ks * 16 + (lane / 16) * 8);
      }
    }
    const std::uint16_t* tk = sk + (t & 1) * kTileElems;
    const std::uint16_t* tv = sv + (t & 1) * kTileElems;
    float s[kMT][kBN / 8][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int n = 0; n < kBN / 8; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      std::uint32_t qa[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        if constexpr (kMT == 1) {
#pragma unroll
          for (int e = 0; e < 4; ++e) qa[mt][e] = qf[ks][e];
        } else {
          ldsm_x4(qa[mt], sq + (warp * kWR + mt * 16 + (lane % 16)) * kPitch + ks * 16 + (lane / 16) * 8);
        }
      }
#pragma unroll
      for (int p = 0; p < kBN / 16; ++p) {
        std::uint32_t b[4];
        ldsm_x4(b, tk + (p * 16 + (lane % 8) + (lane / 16) * 8) * kPitch + ks * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma<kBf16>(s[mt][2 * p], qa[mt], b[0], b[1]);
          mma<kBf16>(s[mt][2 * p + 1], qa[mt], b[2], b[3]);
        }
      }
    }
    // Mask keys past the end (last tile only), then the online softmax for each row.
    if ((t + 1) * kBN > L) {
#pragma unroll
      for (int n = 0; n < kBN / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (t * kBN + n * 8 + (lane % 4) * 2 + (e % 2) >= L)
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) s[mt][n][e] = -FLT_MAX;
    }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float mx = m_row[mt][half];
#pragma unroll
        for (int n = 0; n < kBN / 8; ++n) mx = fmaxf(mx, fmaxf(s[mt][n][half * 2], s[mt][n][half * 2 + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float alpha = exp2f((m_row[mt][half] - mx) * scale_log2);
        const float mxs = mx * scale_log2;
        m_row[mt][half] = mx;
        float sum = 0.f;
#pragma unroll
        for (int n = 0; n < kBN / 8; ++n)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = exp2f(fmaf(s[mt][n][half * 2 + e], scale_log2, -mxs));
            s[mt][n][half * 2 + e] = p;
            sum += p;
          }
        l_row[mt][half] = l_row[mt][half] * alpha + sum;
#pragma unroll
        for (int n = 0; n < kD / 8; ++n) o[mt][n][half * 2] *= alpha, o[mt][n][half * 2 + 1] *= alpha;
      }
    // O += P V, P from registers as the A operand; each V fragment serves every row tile.
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      std::uint32_t pa[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        pa[mt][0] = pack2<kBf16>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][1] = pack2<kBf16>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][2] = pack2<kBf16>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][3] = pack2<kBf16>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int p = 0; p < kD / 16; ++p) {
        std::uint32_t b[4];
        ldsm_x4_t(b, tv + (kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * kPitch + (2 * p + lane / 16) * 8);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma<kBf16>(o[mt][2 * p], pa[mt], b[0], b[1]);
          mma<kBf16>(o[mt][2 * p + 1], pa[mt], b[2], b[3]);
        }
      }
    }
    __syncthreads();
    if (t + 2 < tiles) {
      fill_tokens(t + 2, t & 1);
      __syncthreads();
      issue_kv(t & 1);
    }
    commit();
  }
  wait_groups<0>();

  // Normalise, stage the tile in shared memory, write rows through the query permutation.
  float inv[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float l = l_row[mt][half];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      inv[mt][half] = l > 0.f ? 1.f / l : 0.f;
      const int r = warp * kWR + mt * 16 + half * 8 + lane / 4;
      if (a.lse && lane % 4 == 0 && r < it.rows) {
        const std::int64_t tok = sparse ? qperm[it.row0 + r] : it.row0 + r;
        a.lse[h * a.q.tokens + tok] =
            l > 0.f ? m_row[mt][half] * (scale_log2 / 1.4426950408889634f) + logf(l) : -INFINITY;
      }
    }
  __syncthreads();
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int n = 0; n < kD / 8; ++n)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = warp * kWR + mt * 16 + half * 8 + lane / 4, c = n * 8 + (lane % 4) * 2;
        *reinterpret_cast<std::uint32_t*>(sq + r * kPitch + c) =
            pack2<kBf16>(o[mt][n][half * 2] * inv[mt][half], o[mt][n][half * 2 + 1] * inv[mt][half]);
      }
  __syncthreads();
  auto* obase = static_cast<std::uint16_t*>(a.out.data) + h * a.out.head_stride;
  for (int e = tid; e < kBM * (kD / 8); e += kThreads) {
    const int r = e / (kD / 8), c = e % (kD / 8);
    if (r >= it.rows) continue;
    const std::int64_t tok = sparse ? qperm[it.row0 + r] : it.row0 + r;
    *reinterpret_cast<uint4*>(obase + tok * a.out.row_stride + c * 8) = *reinterpret_cast<const uint4*>(sq + r * kPitch + c * 8);
  }
}

__global__ void count_tiles_kernel(const std::int32_t* q_sizes, std::int64_t rows, int bm, std::int64_t* tile_count) {
  const std::int64_t w = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (w < rows) tile_count[w] = (q_sizes[w] + bm - 1) / bm;
}

__global__ void write_tiles_kernel(const std::int32_t* q_sizes, const std::int32_t* q_offsets, int kq, std::int64_t rows,
                                   int bm, const std::int64_t* tile_ptr, std::int32_t* item_w, std::int32_t* item_row) {
  const std::int64_t w = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (w >= rows) return;
  const std::int64_t h = w / kq, i = w % kq;
  const int first = q_offsets[h * (kq + 1) + i];
  std::int64_t slot = tile_ptr[w];
  for (int r = 0; r < q_sizes[w]; r += bm, ++slot) {
    item_w[slot] = static_cast<std::int32_t>(w);
    item_row[slot] = first + r;
  }
}

}  // namespace

void launch_count_tiles(const std::int32_t* q_sizes, int heads, int kq, std::int64_t* tile_count, cudaStream_t stream) {
  const std::int64_t rows = static_cast<std::int64_t>(heads) * kq;
  if (rows == 0) return;
  count_tiles_kernel<<<static_cast<unsigned>((rows + 255) / 256), 256, 0, stream>>>(q_sizes, rows, attention_rows(),
                                                                                    tile_count);
}

void launch_write_tiles(const std::int32_t* q_sizes, const std::int32_t* q_offsets, int heads, int kq,
                        const std::int64_t* tile_ptr, std::int32_t* item_w, std::int32_t* item_row,
                        cudaStream_t stream) {
  const std::int64_t rows = static_cast<std::int64_t>(heads) * kq;
  if (rows == 0) return;
  write_tiles_kernel<<<static_cast<unsigned>((rows + 255) / 256), 256, 0, stream>>>(
      q_sizes, q_offsets, kq, rows, attention_rows(), tile_ptr, item_w, item_row);
}

int attention_rows() {
  static const int rows = [] {
    const char* e = std::getenv("SVOO_ATTN_ROWS");
    return e && std::atoi(e) == 64 ? 64 : e && std::atoi(e) == 128 ? 128 : kAttnRowsDefault;
  }();
  return rows;
}

namespace {

template <bool kBf16, int kWR>
void launch_typed(const AttentionArgs& a, cudaStream_t stream) {
  constexpr int kBM = 4 * kWR;
  const std::int64_t grid = a.range_ptr ? a.item_capacity : a.q.heads * ((a.q.tokens + kBM - 1) / kBM);
  if (grid == 0) return;
  cudaFuncSetAttribute(attention_kernel<kBf16, kWR>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes<kWR>());
  attention_kernel<kBf16, kWR><<<static_cast<unsigned>(grid), kThreads, smem_bytes<kWR>(), stream>>>(a);
}

}  // namespace

void launch_attention(const AttentionArgs& a, cudaStream_t stream) {
  if (attention_hopper_enabled()) return launch_attention_hopper(a, stream);
  const bool wide = attention_rows() == 128;
  if (a.q.elem == Elem::bf16) {
    wide ? launch_typed<true, 32>(a, stream) : launch_typed<true, 16>(a, stream);
  } else {
    wide ? launch_typed<false, 32>(a, stream) : launch_typed<false, 16>(a, stream);
  }
}

}  // namespace svoo::cuda::detail
