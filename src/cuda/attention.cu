// Variable-block sparse attention (spec 2.4), FlashAttention-2 style on mma.sync: the portable
// path (sm_80, and so sm_86 / sm_89; on sm_90 with SVOO_ATTN_KERNEL=sm80). A work item is one
// 128-row tile of one query cluster (64 with SVOO_ATTN_ROWS=64), 32 rows a warp. Its kept key
// ranges are treated as one virtual key sequence: each 64-key tile gathers its rows through the
// ranges and the key permutation (cp.async, 16-byte chunks of 256-byte rows), so ragged ranges
// waste no tile and neither Q, K, V nor the output is ever permuted in memory: queries are read
// and outputs written through the query permutation. Online softmax in fp32 (base 2), P re-used
// from registers. A warp skips its row tiles of 16 that lie past the item's rows, so the last,
// partly empty tile of a cluster costs the tensor cores its rows rounded up to 16, not to 128.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cub/block/block_scan.cuh>

#include <cfloat>
#include <cstdint>
#include <cstdlib>

#include "attention_kernel.cuh"
#include "attention_tile.cuh"
#include "ptx.cuh"

namespace svoo::cuda::detail {
namespace {

using sm80::kBN;
using sm80::kD;
using sm80::kPitch;
constexpr int kThreads = 128;
constexpr int kMaxRanges = 1024;  // per work item: (kk + 1) / 2 for kk <= 2048
constexpr int kTileElems = kBN * kPitch;
// Each of the 4 warps owns kWR query rows (16: Q fragments stay in registers; 32: every K/V
// fragment feeds two row tiles, halving shared-memory reads per multiply, Q re-read per step).
//
// Shared memory: one Q tile, one K and one V tile (K(t+1) loads under P V(t), V(t) under
// Q K(t)^T: FlashAttention-2's order), the ranges: 78 KB with 128-row items, so two blocks fit an
// SM of an A100 or an H100 and one fits the 99 KB a block may have on sm_86 / sm_89 cards.
template <int kWR>
constexpr int smem_bytes() { return (4 * kWR * kPitch + 2 * kTileElems) * 2 + (2 * kMaxRanges + 1) * 4; }

using ptx::cp_async16;
using sm80::ldsm_x4;
using sm80::pack2;
using sm80::tile_scores;
using sm80::tile_update;
__device__ __forceinline__ void commit() { ptx::cp_async_commit(); }
template <int N>
__device__ __forceinline__ void wait_groups() {
  ptx::cp_async_wait<N>();
}

// The item's range starts and exclusive prefix lengths in shared memory (the virtual key
// sequence); returns its length. Ends with a block barrier.
__device__ int stage_ranges(const AttentionArgs& a, const AttentionItem& it, bool sparse, std::int32_t* r_begin,
                            std::int32_t* r_cum) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int total_keys;
  const int tid = threadIdx.x;
  constexpr int kPer = kMaxRanges / kThreads;
  int len[kPer];
  load_range_lengths(a, it, sparse, tid, r_begin, len);
  int agg;
  Scan(scan_tmp).ExclusiveSum(len, len, agg);
#pragma unroll
  for (int e = 0; e < kPer; ++e) r_cum[tid * kPer + e] = len[e];
  if (tid == 0) total_keys = agg;
  __syncthreads();
  return total_keys;
}

// One thread's walk along the virtual key sequence: the key token at virtual index vt (-1 past its
// end). Positions only grow, so the range is found by walking forward from the last one (a step or
// two a tile on the benchmark's layouts), with a binary search where many short ranges lie between.
struct KeyWalk {
  const std::int32_t* r_begin;
  const std::int32_t* r_cum;
  const std::int32_t* kperm;  // null: dense, the virtual index is the token
  int nr, L, ri = 0;
  __device__ std::int32_t token(int vt) {
    if (vt >= L) return -1;
    if (ri + 1 < nr && r_cum[ri + 1] <= vt) {
      ++ri;
      if (ri + 1 < nr && r_cum[ri + 1] <= vt) {
        int lo = ri + 1, hi = nr - 1;  // the last range whose prefix is <= vt
        while (lo < hi) {
          const int mid = (lo + hi + 1) / 2;
          if (r_cum[mid] <= vt) lo = mid; else hi = mid - 1;
        }
        ri = lo;
      }
    }
    const int phys = r_begin[ri] + (vt - r_cum[ri]);
    return kperm ? kperm[phys] : phys;
  }
};

// FlashAttention-2's schedule on one K and one V buffer: V(t) loads while Q K(t)^T runs, K(t+1)
// while the softmax and P V(t) run; each tile's key tokens are fetched a tile ahead into a
// register, so no warp waits on the permutation's global load at a barrier.
template <bool kBf16, int kWR>
__global__ void __launch_bounds__(kThreads, 2) attention_kernel(AttentionArgs a, bool spread_short) {
  constexpr int kBM = 4 * kWR, kMT = kWR / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto* sq = reinterpret_cast<std::uint16_t*>(smem_raw);
  auto* sk = sq + kBM * kPitch;
  auto* sv = sk + kTileElems;
  auto* r_begin = reinterpret_cast<std::int32_t*>(sv + kTileElems);
  auto* r_cum = r_begin + kMaxRanges;  // kMaxRanges + 1 entries
  __shared__ std::int32_t s_tok[2][kBN];  // key tokens of a tile's rows, -1 past the end; two tiles
  __shared__ std::int32_t q_tok[kBM];     // the item's query tokens, read once for Q and the epilogue
  const bool sparse = a.range_ptr != nullptr;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  AttentionItem it;
  if (!attention_item<kBM>(a, it)) return;

  // 16 consecutive lanes fetch the 16 chunks of one 256-byte row: whole sectors from global memory
  // and conflict-free wavefronts into shared memory. The rows' tokens are copied into q_tok
  // asynchronously before the ranges are staged, so that they fly with the ranges' loads instead
  // of after the ranges' scan: an item's start is a chain of dependent global reads (item, ranges,
  // scan, key tokens, key tile), and this takes one link out of it (run212: +1-2 % at Wan2.1-1.3B
  // 480p). Read into registers instead, the tokens raised the sm_80 code's spill loads from 16 to
  // 56 bytes.
  const int crow = tid / 16, cc = (tid % 16) * 8;
  if (cc == 0) {
    const std::int32_t* qperm = sparse ? a.q_perm + static_cast<std::int64_t>(it.h) * a.q.tokens : nullptr;
#pragma unroll
    for (int i = 0; i < kBM / 8; ++i) {
      const int r = crow + 8 * i;
      const bool ok = r < it.rows;
      if (sparse) ptx::cp_async4(&q_tok[r], qperm + (ok ? it.row0 + r : 0), ok ? 4 : 0);  // 0 past the rows
      else q_tok[r] = ok ? static_cast<std::int32_t>(it.row0 + r) : 0;
    }
  }
  commit();
  const int L = stage_ranges(a, it, sparse, r_begin, r_cum);
  wait_groups<0>();
  __syncthreads();  // every row's token landed
  const std::int64_t h = it.h;
  const auto* qbase = static_cast<const std::uint16_t*>(a.q.data) + h * a.q.head_stride;
  const auto* kbase = static_cast<const std::uint16_t*>(a.k.data) + h * a.k.head_stride;
  const auto* vbase = static_cast<const std::uint16_t*>(a.v.data) + h * a.v.head_stride;
#pragma unroll
  for (int i = 0; i < kBM / 8; ++i) {
    const int r = crow + 8 * i;
    cp_async16(sq + r * kPitch + cc, qbase + static_cast<std::int64_t>(q_tok[r]) * a.q.row_stride + cc, r < it.rows ? 16 : 0);
  }
  commit();
  const int tiles = (L + kBN - 1) / kBN;
  KeyWalk walk{r_begin, r_cum, sparse ? a.k_perm + h * a.k.tokens : nullptr, static_cast<int>(it.nr), L};
  std::int32_t next_tok = -1;  // this thread's key token of the tile after the one being staged
  if (tid < kBN) {
    s_tok[0][tid] = walk.token(tid);
    next_tok = walk.token(kBN + tid);
  }
  __syncthreads();
  // A tile's copies: this thread's 8 rows' tokens are read first, so that their shared-memory
  // latency is paid once, not once a copy (Nsight, run76: 12 % of the stall samples were a copy's
  // address waiting for its token).
  // A whole tile (every tile but an item's last) has no rows past the end: no checks.
  // A copy's source is this thread's piece of row 0 plus token x row pitch (32-bit, bytes: the
  // views' check), one wide multiply-add: 2 instructions a copy with the copy, where 64-bit
  // element arithmetic took 7.
  const auto kpiece = reinterpret_cast<std::uint64_t>(kbase + cc), vpiece = reinterpret_cast<std::uint64_t>(vbase + cc);
  const auto kpitch = static_cast<std::uint32_t>(a.k.row_stride * 2), vpitch = static_cast<std::uint32_t>(a.v.row_stride * 2);
  auto issue = [&](std::uint16_t* dst, std::uint64_t piece, std::uint32_t pitch, int stage, int tile) {
    std::int32_t tok[kBN / 8];
#pragma unroll
    for (int i = 0; i < kBN / 8; ++i) tok[i] = s_tok[stage][crow + 8 * i];
    if ((tile + 1) * kBN <= L) {
#pragma unroll
      for (int i = 0; i < kBN / 8; ++i)
        ptx::cp_async16(dst + (crow + 8 * i) * kPitch + cc,
                        reinterpret_cast<const void*>(piece + ptx::mul_wide(static_cast<std::uint32_t>(tok[i]), pitch)));
      return;
    }
#pragma unroll
    for (int i = 0; i < kBN / 8; ++i)
      cp_async16(dst + (crow + 8 * i) * kPitch + cc,
                 reinterpret_cast<const void*>(piece + ptx::mul_wide(static_cast<std::uint32_t>(tok[i] < 0 ? 0 : tok[i]), pitch)),
                 tok[i] < 0 ? 0 : 16);
  };
  if (tiles > 0) issue(sk, kpiece, kpitch, 0, 0);
  commit();

  const float scale_log2 = 1.4426950408889634f / sqrtf(static_cast<float>(kD));
  // The warp's rows: kWR from warp * kWR; an item of at most 64 rows (a cluster's short last
  // tile) spreads them 16 a warp (spread_short), so that all four warps work on it instead of two.
  const bool spread = spread_short && kMT > 1 && it.rows <= 64;
  const int wr0 = warp * (spread ? 16 : kWR);
  // Row tiles of 16 this warp computes: those holding some of the item's rows.
  const int warp_rows = it.rows - wr0;
  const int act = warp_rows <= 0 ? 0 : spread ? 1 : warp_rows >= kWR ? kMT : (warp_rows + 15) / 16;
  const std::uint16_t* sq_warp = sq + wr0 * kPitch;
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
    const int st = t & 1;
    wait_groups<0>();
    __syncthreads();  // K(t) (and Q) landed; every warp is done with V(t - 1)
    issue(sv, vpiece, vpitch, st, t);
    commit();
    if constexpr (kMT == 1) {
      if (t == 0 && act > 0) {
#pragma unroll
        for (int ks = 0; ks < kD / 16; ++ks)
          ldsm_x4(qf[ks], sq_warp + (lane % 16) * kPitch + ks * 16 + (lane / 16) * 8);
      }
    }
    float s[kMT][kBN / 8][4];
    if (act == kMT) tile_scores<kBf16, kMT, kMT>(s, qf, sq_warp, sk, lane);
    else if (kMT > 1 && act == 1) tile_scores<kBf16, kMT, 1>(s, qf, sq_warp, sk, lane);
    // Tokens: tile t + 1's into shared memory (its slot was last read for tile t - 1, before the
    // barrier above), tile t + 2's fetched into a register for the next iteration.
    if (tid < kBN) {
      if (t + 1 < tiles) s_tok[st ^ 1][tid] = next_tok;
      if (t + 2 < tiles) next_tok = walk.token((t + 2) * kBN + tid);
    }
    wait_groups<0>();
    __syncthreads();  // V(t) landed; every warp is done with K(t); tile t + 1's tokens visible
    if (t + 1 < tiles) issue(sk, kpiece, kpitch, st ^ 1, t + 1);
    commit();
    if (act == kMT) tile_update<kBf16, kMT, kMT>(s, o, m_row, l_row, sv, t, L, lane, scale_log2);
    else if (kMT > 1 && act == 1) tile_update<kBf16, kMT, 1>(s, o, m_row, l_row, sv, t, L, lane, scale_log2);
  }
  wait_groups<0>();

  // Normalise, stage the tile in shared memory, write rows through the query permutation. (The
  // warp's first row and the spread flag are recomputed here rather than kept live through the
  // loop. The sm_80 code still spills 8 bytes, the key permutation's pointer, read once a tile;
  // passing it at each lookup instead removed the spill but made the sm_90a code ~1 % slower,
  // run101. The sm_90a code has no spill.)
  {
  const bool spread = spread_short && kMT > 1 && it.rows <= 64;
  const int wr0 = warp * (spread ? 16 : kWR);
  const int act = it.rows - wr0 <= 0 ? 0 : spread ? 1 : kMT;
  float inv[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float l = l_row[mt][half];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      inv[mt][half] = l > 0.f ? 1.f / l : 0.f;
      const int r = wr0 + mt * 16 + half * 8 + lane / 4;
      if (a.lse && lane % 4 == 0 && r < it.rows && mt < act) {
        a.lse[h * a.q.tokens + q_tok[r]] =
            l > 0.f ? m_row[mt][half] * (scale_log2 / 1.4426950408889634f) + logf(l) : -INFINITY;
      }
    }
  __syncthreads();
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
    // Spread: the warp's second row tile is the next warp's first (and its O is zero).
    if (spread && mt > 0) break;
#pragma unroll
    for (int n = 0; n < kD / 8; ++n)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = wr0 + mt * 16 + half * 8 + lane / 4, c = n * 8 + (lane % 4) * 2;
        *reinterpret_cast<std::uint32_t*>(sq + r * kPitch + c) =
            pack2<kBf16>(o[mt][n][half * 2] * inv[mt][half], o[mt][n][half * 2 + 1] * inv[mt][half]);
      }
  }
  __syncthreads();
  auto* obase = static_cast<std::uint16_t*>(a.out.data) + h * a.out.head_stride;
#pragma unroll
  for (int i = 0; i < kBM / 8; ++i) {
    const int r = crow + 8 * i;
    if (r >= it.rows) continue;
    *reinterpret_cast<uint4*>(obase + static_cast<std::int64_t>(q_tok[r]) * a.out.row_stride + cc) = *reinterpret_cast<const uint4*>(sq + r * kPitch + cc);
  }
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

// SVOO_ATTN_SPREAD=0 keeps short items on two warps (for comparison).
bool spread_short_items() {
  static const bool on = [] {
    const char* e = std::getenv("SVOO_ATTN_SPREAD");
    return !(e && e[0] == '0' && e[1] == 0);
  }();
  return on;
}

template <bool kBf16, int kWR>
void launch_typed(const AttentionArgs& a, cudaStream_t stream) {
  constexpr int kBM = 4 * kWR;
  const std::int64_t grid = a.range_ptr ? a.item_capacity : a.q.heads * ((a.q.tokens + kBM - 1) / kBM);
  if (grid == 0) return;
  cudaFuncSetAttribute(attention_kernel<kBf16, kWR>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes<kWR>());
  attention_kernel<kBf16, kWR><<<static_cast<unsigned>(grid), kThreads, smem_bytes<kWR>(), stream>>>(a, spread_short_items());
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
