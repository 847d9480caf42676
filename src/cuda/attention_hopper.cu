// Variable-block sparse attention (spec 2.4) on Hopper's warpgroup tensor cores (sm_90a): the same
// work items, virtual key sequence and permutation-through reads/writes as attention.cu, with
// FlashAttention-3's structure:
//   - warp specialisation: warpgroup 0 is the producer (it gathers K and V rows through the
//     ranges and the key permutation with cp.async into separate two-stage K and V rings);
//     warpgroups 1 and 2 are consumers, 64 query rows each, so a work item is 128 query rows (an
//     item of at most 64 rows runs on one consumer);
//   - mbarriers between them (full: a stage has landed, completed by cp.async itself; empty: the
//     working consumers are done with it);
//   - S = Q K^T with wgmma m64n128k16 (Q from registers, loaded once an item; K from shared
//     memory, 128-byte swizzle), online softmax in fp32 on the accumulators, then O += P V with P
//     from registers (A operand) and V read N-major from the same row layout (no transpose pass);
//   - each consumer issues S(t) and P(t-1) V(t-1) together, and the two consumers take turns
//     issuing (ping-pong), so one's softmax runs under the other's products. (The source softmaxes
//     S(t) between the waits for S(t) and for P(t-1) V(t-1), but ptxas schedules the second wait
//     before the softmax: run173's notes);
//   - persistent: one block an SM takes work items from a counter; the producer prepares the next
//     item (its ranges, Q rows and info into second buffers) while the current one streams, so an
//     item's start waits on its first key tiles only, not on a chain of dependent reads;
//   - dense mode (tiles of consecutive tokens, no gather) is a kernel instance of its own whose
//     producer is one thread loading each K and V tile as two TMA boxes (FlashAttention-3's);
//     gathering took 128 producer threads' issue slots from the consumers' softmax (run124: 634-637
//     TFLOP/s against 594-602 at 40 x 75,600);
//   - setmaxnreg: the producer keeps 56 registers, the consumers 224. With 40 (and 232), ptxas
//     serialised the producer's copies once it held the next item's state (run110), and the
//     consumers waited for key tiles.
// docs/cuda-backend.md has the measured effect of each of these.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <vector>

#include "attention_kernel.cuh"
#include "device_info.hpp"
#include "ptx.cuh"
#include "tensor_map.hpp"
#include "wgmma.cuh"

namespace svoo::cuda::detail {

bool assign_wgmma_available();  // assign_wgmma.cu: this build has sm_90a code and the device is 9.0

namespace {

[[maybe_unused]] constexpr int kD = 128, kBN = 128;
constexpr int kBM = 128, kThreads = 384, kMaxRanges = 1024;
constexpr int kChunk = 128 * 128;   // one 64-column chunk of a 128-row tile, bytes
constexpr int kTile = 2 * kChunk;   // a 128 x 128 tile, bytes
[[maybe_unused]] constexpr int kRangeInts = 2 * kMaxRanges + 2;  // one item's range starts and prefix sums (+ padding)
// K stages: 2, or 3 in the TMA instance, which has no static range buffers (16 KB) and so room for a
// third (V keeps two).
constexpr int k_stages(bool tma) { return tma ? 3 : 2; }
constexpr int smem_bytes(bool tma) {
  return 1024 /*alignment slack*/ + (4 + k_stages(tma)) * kTile /*Q x2, K, V x2*/ + (2 * (k_stages(tma) + 2) + 4) * 8;
}
static_assert(smem_bytes(false) <= 227 * 1024 && smem_bytes(true) + 1100 <= 227 * 1024, "shared memory");
constexpr int kPingpong = 1;     // kernel flag: consumers take turns issuing products
constexpr int kLazyRescale = 2;  // kernel flag: rescale O only when a row maximum grew
constexpr int kTmaDense = 4;     // kernel flag: dense mode's K and V tiles by TMA (maps below)
constexpr int kOffsets32 = 8;  // kernel flag: every head of Q, K and V spans less than 4 GiB (row offsets in 32 bits)

// TMA maps of K and V (128-row boxes of 64 columns), used in dense mode when kTmaDense is set.
struct KvMaps {
  CUtensorMap k, v;
};

// 2^x on the special-function unit, flushing denormals (the probabilities they would be are
// below bf16's resolution of a row's sum anyway).
using ptx::ex2;
[[maybe_unused]] __device__ __forceinline__ int swz(int r, int c16) { return wgmma::swizzled(r, c16, kChunk); }

#if defined(SVOO_ATTN_TRACE)
// Diagnostics builds only (-DSVOO_ATTN_TRACE): block 0's timeline in SM clocks, per tile (the
// producer's K and V copies issued, each consumer past its waits for them) and per item (the
// producer's preparation, each consumer's start and epilogue). attention_trace_print writes it.
constexpr int kTraceTiles = 8192, kTraceItems = 2048;
__device__ long long g_tr_kissue[kTraceTiles], g_tr_vissue[kTraceTiles], g_tr_kwait[2][kTraceTiles], g_tr_vwait[2][kTraceTiles];
__device__ long long g_tr_prep0[kTraceItems], g_tr_prep1[kTraceItems], g_tr_item[2][kTraceItems], g_tr_epi0[2][kTraceItems],
    g_tr_epi1[2][kTraceItems];
// Every block's span in global-timer nanoseconds (from its start to consumer 0's last item), and
// its count of key tiles and items: how evenly the work list spread, and the grid's tail.
constexpr int kTraceBlocks = 1024;
__device__ long long g_tr_block[kTraceBlocks][4];
__device__ __forceinline__ long long trace_ns() {
  long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#define SVOO_TR_BLOCK(slot, value)                                                  \
  do {                                                                              \
    if (blockIdx.x < kTraceBlocks) g_tr_block[blockIdx.x][slot] = (value);          \
  } while (0)
#define SVOO_TR(arr, i)                                                                                      \
  do {                                                                                                       \
    if (blockIdx.x == 0 && static_cast<long long>(i) < static_cast<long long>(sizeof(arr) / sizeof(arr[0]))) \
      arr[i] = clock64();                                                                                    \
  } while (0)
#else
#define SVOO_TR(arr, i) \
  do {                  \
  } while (0)
#define SVOO_TR_BLOCK(slot, value) \
  do {                             \
  } while (0)
#endif

// What the producer tells the consumers about an item (double-buffered with the Q tiles).
struct ItemInfo {
  int head, rows, keys;  // rows < 0: no more items
};

// Persistent: one block an SM takes items from the work list (an atomic counter in sparse mode,
// round robin in dense mode, whose items are all alike) until it is exhausted. While an item
// streams, the producer prepares the next (its index, ranges, Q rows and info, into the buffers of
// the other parity) and then streams its key tiles into the same rings, whose stages and phases
// count tiles across items.
// kTma: dense mode with K and V by TMA (a kernel of its own, so that the gathering producer's code,
// which runs in 56 registers, stays as it was).
template <bool kBf16, bool kTma>
__global__ void __launch_bounds__(kThreads, 1) attention_hopper_kernel(AttentionArgs a, int flags, const __grid_constant__ KvMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  unsigned char* base = wgmma::align_1024(smem_raw);
  unsigned char* sq = base;            // 2 Q buffers
  constexpr int kKS = k_stages(kTma);
  unsigned char* sk = sq + 2 * kTile;    // kKS stages
  unsigned char* sv = sk + kKS * kTile;  // 2 stages
  // Two range buffers (by item parity): item li + 1's are scanned while item li's are walked.
  // Static shared arrays, so that the walk reads them with shared loads.
  __shared__ std::int32_t ranges[2 * kRangeInts];
  auto* bars = reinterpret_cast<std::uint64_t*>(sv + 2 * kTile);
  std::uint64_t* full = bars;                   // [K stages 0 .. kKS - 1, V stage 0, V stage 1]
  std::uint64_t* empty = bars + kKS + 2;        // same order
  std::uint64_t* qfull = bars + 2 * kKS + 4;    // Q buffer b and its item's info are written
  std::uint64_t* qempty = bars + 2 * kKS + 6;   // the consumers are done with Q buffer b and its info
  __shared__ ItemInfo info[2];
  __shared__ std::int32_t q_tok[2][kBM];
  __shared__ int warp_sum[4];
  __shared__ std::int64_t next_index;
  // Sparse mode's piecewise preparation (below): words copied from global memory by one piece and
  // read by the next (list entry, row, count, cluster end, range pointers), and the Q tokens.
  __shared__ std::int32_t prep_w[10];
  __shared__ std::int32_t prep_qt[kBM];
  const bool sparse = a.range_ptr != nullptr;
  // Dense mode with TMA: one thread issues each tile's two 64-column boxes, and the full barriers
  // wait for their bytes (FlashAttention-3's producer); otherwise every producer thread gathers.
  constexpr bool tma = kTma;
  const int tid = threadIdx.x;
  if (tid == 0) {
    for (int s = 0; s < kKS + 2; ++s) {
      wgmma::mbar_init(&full[s], tma ? 1 : 128);  // every producer thread arrives once its copies landed (TMA: thread 0 with the bytes)
      wgmma::mbar_init(&empty[s], 256);  // every consumer thread, products done (or its turn passed)
    }
    for (int b = 0; b < 2; ++b) {
      wgmma::mbar_init(&qfull[b], 256);   // every producer thread: its Q copies landed, and its info stores
      wgmma::mbar_init(&qempty[b], 256);  // every consumer thread
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    SVOO_TR_BLOCK(0, trace_ns());
  }
  __syncthreads();

  if (tid < 128) {
    // ---- producer: per item its ranges, Q rows and info, then its K and V tiles ----
    asm volatile("setmaxnreg.dec.sync.aligned.u32 56;\n");
    const int warp = tid / 32, lane = tid % 32;
    const int hrow = lane >> 4, c = lane & 15;
    // Rows 8 i + 2 warp + hrow: lane l holds the token of row lane_row = 8 (l % 16) + 2 warp + l / 16
    // and copy i moves piece c of row 8 i + 2 warp + hrow, its address from lane i of its half-warp
    // (a shuffle of width 16 with an immediate source lane). A half-warp reads one whole 256-byte
    // row, the warp two adjacent rows (a copy touching more 128-byte lines was 17 % slower, run111);
    // a lane's rows share one swizzle, so soff plus immediates address every copy.
    const int lane_row = 8 * c + 2 * warp + hrow;
    const std::uint32_t soff = (c >> 3) * kChunk + lane_row * 128 - c * 1024 + (((c & 7) ^ (lane_row & 7)) << 4);
    const std::uint32_t sk_addr = ptx::smem_addr(sk), sv_addr = ptx::smem_addr(sv);
    // One 128-row tile (Q, or K or V's) into shared memory at dst: row lane_row is at row_tok *
    // stride bytes from base (-1: zero-filled). Fully unrolled: no loop counter or address steps;
    // with 64-bit row addresses (partial tiles, or heads past 4 GiB) 5 instructions a copy (two
    // shuffles, a 64-bit add, the copy), with 32-bit offsets (below) 4. The producer's instructions share the schedulers
    // with the consumers' softmax: with `unroll 4` dense ran at 532-535 TFLOP/s, unrolled 584-587
    // (run85, H100, same run).
    const bool off32 = (flags & kOffsets32) != 0;
    // Row offsets in 32 bits (the launcher checked that every head of Q, K and V ends within 4 GiB
    // of its start): the 16 rows a lane copies, one shuffle each from the lane holding the row's
    // token. A copy is then a three-input add and its carry on the ALU pipe and the copy (4
    // instructions with the shuffle, not 5: sparse +1-2 % at 40 x 75,600, run130; K's and V's tiles
    // share one set of shuffles, 3 a copy: +0.6-4 % more at 14B, +4 % at 1.3B 480p on the medians, run135).
    auto row_offsets = [&](std::int32_t row_tok, std::int64_t stride, std::uint32_t (&o)[16]) {
      const auto off = static_cast<std::uint32_t>(static_cast<std::int64_t>(row_tok < 0 ? 0 : row_tok) * stride);
#pragma unroll
      for (int i = 0; i < 16; ++i) o[i] = __shfl_sync(0xffffffffu, off, i, 16);
    };
    auto copy_rows = [&](std::uint32_t dst, const unsigned char* base_bytes, const std::uint32_t (&o)[16]) {
      const unsigned char* lane_base = base_bytes + c * 16;
#pragma unroll
      for (int i = 0; i < 16; ++i)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst + soff + i * 1024), "l"(lane_base + o[i]));
    };
    auto copy_tile = [&](std::uint32_t dst, const unsigned char* base_bytes, std::int64_t stride, std::int32_t row_tok,
                         bool whole) {
      if (off32 && whole) {
        std::uint32_t o[16];
        row_offsets(row_tok, stride, o);
        copy_rows(dst, base_bytes, o);
        return;
      }
      const auto rowbits = reinterpret_cast<std::uint64_t>(base_bytes + static_cast<std::int64_t>(row_tok < 0 ? 0 : row_tok) * stride);
      const std::uint32_t lo = static_cast<std::uint32_t>(rowbits), hi = static_cast<std::uint32_t>(rowbits >> 32);
      if (whole) {
#pragma unroll
        for (int i = 0; i < 16; ++i) {
          const std::uint64_t p = (static_cast<std::uint64_t>(__shfl_sync(0xffffffffu, hi, i, 16)) << 32 |
                                   __shfl_sync(0xffffffffu, lo, i, 16)) + c * 16;
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst + soff + i * 1024),
                       "l"(p));
        }
      } else {  // a partial tile: rows past the end are zero-filled
#pragma unroll
        for (int i = 0; i < 16; ++i) {
          const std::uint64_t p = (static_cast<std::uint64_t>(__shfl_sync(0xffffffffu, hi, i, 16)) << 32 |
                                   __shfl_sync(0xffffffffu, lo, i, 16)) + c * 16;
          const int bytes = __shfl_sync(0xffffffffu, row_tok, i, 16) < 0 ? 0 : 16;
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst + soff + i * 1024),
                       "l"(p), "r"(bytes));
        }
      }
    };
    unsigned gt = 0;  // tiles streamed so far (all items): ring stage gt & 1, use gt >> 1
    // The index after `prev` (thread 0): the atomic counter's next, or in dense mode (round robin)
    // prev + gridDim.x.
    auto take_index = [&](std::int64_t prev) -> std::int64_t {
      return sparse ? static_cast<std::int64_t>(atomicAdd(a.work_counter, 1)) : prev + gridDim.x;
    };
    // The item's ranges' lengths (a thread's kMaxRanges / 128 in a row, summing to run) into
    // exclusive prefix sums in r_cum, by warp scans; returns their total (r_cum[kMaxRanges] too).
    auto scan_ranges = [&](const int (&len)[kMaxRanges / 128], int run, std::int32_t* r_cum) {
      constexpr int kPer = kMaxRanges / 128;
      int incl = run;
#pragma unroll
      for (int d = 1; d < 32; d *= 2) {
        const int v = __shfl_up_sync(0xffffffffu, incl, d);
        if (lane >= d) incl += v;
      }
      if (lane == 31) warp_sum[warp] = incl;
      wgmma::named_sync(6, 128);
      int before = incl - run;
      for (int w = 0; w < warp; ++w) before += warp_sum[w];
      const int total = warp_sum[0] + warp_sum[1] + warp_sum[2] + warp_sum[3];
#pragma unroll
      for (int e = 0; e < kPer; ++e) {
        r_cum[tid * kPer + e] = before;
        before += len[e];
      }
      if (tid == 0) r_cum[kMaxRanges] = total;
      return total;
    };
    // Item li's preparation (all of it at once: item 0's, and every item's in dense mode, whose
    // items are long; sparse mode spreads it over four pieces, below): its index (taken an item
    // ahead), its ranges scanned into range buffer li % 2, its Q rows and info published. Item li's
    // start then waits only on its first key tiles, not on a chain of dependent reads. Returns
    // this lane's key token of item li's first tile (row lane_row; -1 past its keys), read here so
    // that its latency is not at the item's start.
    auto prepare = [&](int li) -> std::int32_t {
      const int b = li & 1;
      std::int32_t* r_begin = ranges + b * kRangeInts;
      std::int32_t* r_cum = r_begin + kMaxRanges;
      wgmma::named_sync(6, 128);  // next_index visible; warp_sum free
      AttentionItem it;
      const bool more = attention_item_at<kBM>(a, next_index, it);
      const std::int64_t h = more ? it.h : 0;
      // The item's ranges: starts and exclusive prefix lengths (a thread's 8 in a row, warp scans).
      int L = 0;
      if (more) {
        constexpr int kPer = kMaxRanges / 128;
        int len[kPer];
        const int run = load_range_lengths(a, it, sparse, tid, r_begin, len);
        L = scan_ranges(len, run, r_cum);
        if (tid == 0) next_index = take_index(next_index);  // every producer thread read it before the barrier above
      }
      // Q buffer b: free once the consumers finished item li - 2.
      if (li >= 2) wgmma::mbar_wait(&qempty[b], ((li >> 1) - 1) & 1);
      if (tid == 0) info[b] = ItemInfo{static_cast<int>(h), more ? it.rows : -1, L};
      if (more) {
        // Row tid's token (-1 past the item's rows), then the tile's copies like K's and V's.
        const std::int32_t qt = lane_row < it.rows ? (sparse ? __ldg(a.q_perm + h * a.q.tokens + it.row0 + lane_row)
                                                             : static_cast<std::int32_t>(it.row0 + lane_row))
                                              : -1;
        q_tok[b][lane_row] = qt < 0 ? 0 : qt;
        copy_tile(ptx::smem_addr(sq) + b * kTile,
                  reinterpret_cast<const unsigned char*>(static_cast<const std::uint16_t*>(a.q.data) + h * a.q.head_stride),
                  a.q.row_stride * 2, qt, it.rows == kBM);
      }
      wgmma::mbar_arrive_cp_async(&qfull[b]);
      wgmma::mbar_arrive(&qfull[b]);  // release: the info and tokens stored above
      wgmma::named_sync(6, 128);      // the ranges and info visible to every producer thread
      if (kTma || lane_row >= L) return -1;
      int r = 0;
      while (r_cum[r + 1] <= lane_row) ++r;
      const std::int64_t phys = r_begin[r] + (lane_row - r_cum[r]);
      return sparse ? __ldg(a.k_perm + h * a.k.tokens + phys) : static_cast<std::int32_t>(phys);
    };
    // Sparse mode prepares item li + 1 in four pieces, after item li's tiles 0, 1, 2 and 3 (or
    // together after its last), each reading what the one before copied into shared memory with
    // asynchronous copies, so that no piece waits on a global read: done at once, the preparation
    // held the producer for ~4,600-6,000 clocks an item, and the consumers waited that long for the
    // key tile after it (run181/182's traces; an item's start and finish then cost ~4-5 key tiles'
    // time). Only the next index, an atomic's result, is held in registers (thread 0, pieces B-D).
    // A piece's cp.async.commit_group also takes the key tiles' copies issued since the last one
    // (those are tracked by the ring's mbarriers, not by groups), so the next piece's wait_group
    // waits for them too: they were issued a tile earlier and have landed by then. The barrier
    // protocol with the consumers is the one-shot preparation's (piece D publishes Q and info).
    auto word64 = [](std::int32_t lo, std::int32_t hi) {
      return static_cast<std::int64_t>((static_cast<std::uint64_t>(static_cast<std::uint32_t>(hi)) << 32) |
                                       static_cast<std::uint32_t>(lo));
    };
    auto copy_words = [&](std::int32_t* dst, const void* src, int words) {
      for (int i = 0; i < words; ++i) ptx::cp_async4(dst + i, static_cast<const std::int32_t*>(src) + i, 4);
    };
    std::int64_t taken = 0;
    // A: the list entry (zero past the list's capacity: indices run past the count) and the count.
    auto piece_a = [&] {
      if (tid == 0) {
        const std::int64_t idx = next_index;
        const bool in_list = idx < a.item_capacity;
        ptx::cp_async4(&prep_w[0], a.item_w + (in_list ? idx : 0), in_list ? 4 : 0);
        ptx::cp_async4(&prep_w[1], a.item_row + (in_list ? idx : 0), in_list ? 4 : 0);
        copy_words(&prep_w[2], a.item_count, 2);
        ptx::cp_async_commit();
      }
    };
    // Whether the prepared item exists (pieces B-D, after a barrier that follows A's copies).
    auto prepared_more = [&] { return next_index < word64(prep_w[2], prep_w[3]); };
    // B: the cluster's end and range pointers, this lane's Q token, and the next index.
    auto piece_b = [&] {
      if (tid == 0) ptx::cp_async_wait<0>();
      wgmma::named_sync(6, 128);
      if (prepared_more()) {
        const int w = prep_w[0], row0 = prep_w[1];
        const std::int64_t h = w / a.kq, i = w % a.kq;
        if (tid == 0) {
          ptx::cp_async4(&prep_w[4], a.q_offsets + h * (a.kq + 1) + i + 1, 4);
          copy_words(&prep_w[6], a.range_ptr + w, 4);  // range_ptr[w], range_ptr[w + 1]
          taken = take_index(next_index);
        }
        const std::int64_t row = row0 + lane_row;  // a valid permuted row of the head, or zero-filled
        ptx::cp_async4(&prep_qt[lane_row], a.q_perm + h * a.q.tokens + (row < a.q.tokens ? row : 0), row < a.q.tokens ? 4 : 0);
      }
      ptx::cp_async_commit();
    };
    // C: the ranges' starts and ends into range buffer li % 2 (the ends where their prefix sums go).
    auto piece_c = [&](int li) {
      ptx::cp_async_wait<0>();
      wgmma::named_sync(6, 128);
      if (prepared_more()) {
        std::int32_t* r_begin = ranges + (li & 1) * kRangeInts;
        std::int32_t* r_cum = r_begin + kMaxRanges;
        const std::int64_t rb = word64(prep_w[6], prep_w[7]), nr = word64(prep_w[8], prep_w[9]) - rb;
        constexpr int kPer = kMaxRanges / 128;
#pragma unroll
        for (int e = 0; e < kPer; ++e) {
          const int j = tid * kPer + e;
          if (j < nr) {
            ptx::cp_async4(&r_begin[j], a.range_begin + rb + j, 4);
            ptx::cp_async4(&r_cum[j], a.range_end + rb + j, 4);
          }
        }
      }
      ptx::cp_async_commit();
    };
    // D: the ranges scanned, the Q rows and info published (prepare's second half); returns this
    // lane's first-tile key token of item li.
    auto piece_d = [&](int li) -> std::int32_t {
      const int b = li & 1;
      std::int32_t* r_begin = ranges + b * kRangeInts;
      std::int32_t* r_cum = r_begin + kMaxRanges;
      ptx::cp_async_wait<0>();
      wgmma::named_sync(6, 128);
      const bool more = prepared_more();
      const int w = prep_w[0], row0 = prep_w[1];
      const std::int64_t h = more ? w / a.kq : 0;
      const std::int64_t end = prep_w[4];
      const int rows = more ? static_cast<int>(end - row0 < kBM ? end - row0 : kBM) : -1;
      int L = 0;
      if (more) {
        const std::int64_t nr = word64(prep_w[8], prep_w[9]) - word64(prep_w[6], prep_w[7]);
        constexpr int kPer = kMaxRanges / 128;
        int len[kPer];
        int run = 0;
#pragma unroll
        for (int e = 0; e < kPer; ++e) {
          const int j = tid * kPer + e;
          len[e] = j < nr ? r_cum[j] - r_begin[j] : 0;
          run += len[e];
        }
        L = scan_ranges(len, run, r_cum);
        if (tid == 0) next_index = taken;  // every producer thread read it before the barrier above
      }
      if (li >= 2) wgmma::mbar_wait(&qempty[b], ((li >> 1) - 1) & 1);
      if (tid == 0) info[b] = ItemInfo{static_cast<int>(h), rows, L};
      if (more) {
        const std::int32_t qt = lane_row < rows ? prep_qt[lane_row] : -1;
        q_tok[b][lane_row] = qt < 0 ? 0 : qt;
        copy_tile(ptx::smem_addr(sq) + b * kTile,
                  reinterpret_cast<const unsigned char*>(static_cast<const std::uint16_t*>(a.q.data) + h * a.q.head_stride),
                  a.q.row_stride * 2, qt, rows == kBM);
      }
      wgmma::mbar_arrive_cp_async(&qfull[b]);
      wgmma::mbar_arrive(&qfull[b]);  // release: the info and tokens stored above
      wgmma::named_sync(6, 128);      // the ranges and info visible to every producer thread
      if (tid == 0) SVOO_TR(g_tr_prep1, li);
      if (lane_row >= L) return -1;
      int r = 0;
      while (r_cum[r + 1] <= lane_row) ++r;
      return __ldg(a.k_perm + h * a.k.tokens + r_begin[r] + (lane_row - r_cum[r]));
    };
    if (tid == 0) next_index = sparse ? take_index(0) : static_cast<std::int64_t>(blockIdx.x);
    std::int32_t first_tok = prepare(0);
    if constexpr (kTma) {
      // Dense mode by TMA: thread 0 issues each tile's K and V boxes (two of 64 columns each) at
      // the head's rows t * 128 ..; rows past the keys arrive as zeros. The other producer
      // threads only prepare items.
      for (int li = 0;; ++li) {
        const int b = li & 1;
        if (__shfl_sync(0xffffffffu, info[b].rows, 0) < 0) break;
        const int h = __shfl_sync(0xffffffffu, info[b].head, 0);
        const int tiles = (__shfl_sync(0xffffffffu, info[b].keys, 0) + kBN - 1) / kBN;
        const int prep_at = tiles < 3 ? tiles - 1 : 2;
        auto stream = [&](int t0, int t1) {
          if (tid != 0) return;
          for (int t = t0; t < t1; ++t) {
            const unsigned g = gt + t;
            for (int which = 0; which < 2; ++which) {
              const unsigned stages = which == 0 ? kKS : 2, st = g % stages, use = g / stages;
              std::uint64_t* const bar = &full[which * kKS + st];
              if (use >= 1) wgmma::mbar_wait(&empty[which * kKS + st], (use - 1) & 1);
              wgmma::mbar_arrive_expect_tx(bar, kTile);
              const std::uint32_t dst = (which == 0 ? sk_addr : sv_addr) + st * kTile;
              for (int ch = 0; ch < 2; ++ch)
                wgmma::tma_load_3d(dst + ch * kChunk, which == 0 ? &maps.k : &maps.v, ch * 64, t * kBN, h, bar);
            }
          }
        };
        stream(0, prep_at + 1);
        prepare(li + 1);
        stream(prep_at + 1, tiles);
        gt += tiles;
      }
    } else {
      static_assert(kKS == 2, "the gathering producer's ring indices (gt & 1) assume two K stages");
      for (int li = 0;; ++li) {
        const int b = li & 1;
        // The item's values through a shuffle from lane 0: the compiler then keeps them and what
        // derives from them (the K and V bases) in uniform registers, which the copies need.
        if (__shfl_sync(0xffffffffu, info[b].rows, 0) < 0) break;
        const std::int32_t* r_begin = ranges + b * kRangeInts;
        const std::int32_t* r_cum = r_begin + kMaxRanges;
        const std::int64_t h = __shfl_sync(0xffffffffu, info[b].head, 0);
        const int L = __shfl_sync(0xffffffffu, info[b].keys, 0);
        const auto* kbase = reinterpret_cast<const unsigned char*>(static_cast<const std::uint16_t*>(a.k.data) + h * a.k.head_stride);
        const auto* vbase = reinterpret_cast<const unsigned char*>(static_cast<const std::uint16_t*>(a.v.data) + h * a.v.head_stride);
        const std::int64_t kstride = a.k.row_stride * 2, vstride = a.v.row_stride * 2;  // bytes
        const std::int32_t* kperm = sparse ? a.k_perm + h * a.k.tokens : nullptr;
        const int tiles = (L + kBN - 1) / kBN;
        const int prep_at = tiles < 3 ? tiles - 1 : 2;  // the tile after whose copies item li + 1 is prepared
        // The token of this lane's row of tile t (row lane_row), or -1 past the end. The range
        // holding it only moves forward from tile to tile (r_cum[nr] = L ends the walk).
        int cur = 0;
        auto token_of = [&](int t) -> std::int32_t {
          const int vt = t * kBN + lane_row;
          if (vt >= L) return -1;
          while (r_cum[cur + 1] <= vt) ++cur;
          const std::int64_t phys = r_begin[cur] + (vt - r_cum[cur]);
          return sparse ? __ldg(kperm + phys) : static_cast<std::int32_t>(phys);
        };
        std::int32_t tok = first_tok;
        // Tiles [t0, t1); the item's stream is split around the next item's preparation, so that
        // the copies' loop holds none of its registers.
        auto stream = [&](int t0, int t1) {
        for (int t = t0; t < t1; ++t, ++gt) {
          const int st = gt & 1;
          const bool full_tile = (t + 1) * kBN <= L;  // the same for the whole warpgroup
          const std::int32_t row_tok = tok;
          if (t + 1 < tiles) tok = token_of(t + 1);  // its load flies while this tile's copies issue
          if (off32 && full_tile && kstride == vstride) {  // K's and V's rows are the same tokens
            std::uint32_t o[16];
            row_offsets(row_tok, kstride, o);
#pragma unroll
            for (int which = 0; which < 2; ++which) {
              if (gt >= 2) wgmma::mbar_wait(&empty[2 * which + st], ((gt >> 1) - 1) & 1);
              copy_rows((which == 0 ? sk_addr : sv_addr) + st * kTile, which == 0 ? kbase : vbase, o);
              wgmma::mbar_arrive_cp_async(&full[2 * which + st]);
              if (tid == 0) {
                if (which == 0) SVOO_TR(g_tr_kissue, gt);
                else SVOO_TR(g_tr_vissue, gt);
              }
            }
            continue;
          }
          for (int which = 0; which < 2; ++which) {
            if (gt >= 2) wgmma::mbar_wait(&empty[2 * which + st], ((gt >> 1) - 1) & 1);
            copy_tile((which == 0 ? sk_addr : sv_addr) + st * kTile, which == 0 ? kbase : vbase,
                      which == 0 ? kstride : vstride, row_tok, full_tile);
            wgmma::mbar_arrive_cp_async(&full[2 * which + st]);
            if (tid == 0) {
              if (which == 0) SVOO_TR(g_tr_kissue, gt);
              else SVOO_TR(g_tr_vissue, gt);
            }
          }
        }
        };
        if (sparse) {
          auto upto = [&](int t) { return t < tiles ? t : tiles; };
          stream(0, upto(1));
          if (tid == 0) SVOO_TR(g_tr_prep0, li + 1);
          piece_a();
          stream(upto(1), upto(2));
          piece_b();
          stream(upto(2), upto(3));
          piece_c(li + 1);
          stream(upto(3), upto(4));
          first_tok = piece_d(li + 1);
          stream(upto(4), tiles);
        } else {
          stream(0, prep_at + 1);
          first_tok = prepare(li + 1);
          stream(prep_at + 1, tiles);
        }
      }
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    return;
  }

  // ---- consumers: 64 query rows each ----
  asm volatile("setmaxnreg.inc.sync.aligned.u32 224;\n");
  // Values that are the same in the whole warp are passed through a shuffle from lane 0: the
  // compiler then knows it and keeps what derives from them (the tile counts, stages, phases and
  // descriptors) on the uniform datapath; read from shared memory, they cost the main loop 10 %
  // more instructions (32 more R2UR a tile).
  auto uniform = [](int v) { return __shfl_sync(0xffffffffu, v, 0); };
  const int g = uniform(tid / 128) - 1, ctid = tid % 128, warp = ctid / 32, lane = ctid % 32;
  const float scale_log2 = 1.4426950408889634f / sqrtf(static_cast<float>(kD));
  const bool lazy = (flags & kLazyRescale) != 0;
  const std::uint64_t dk0 = wgmma::descriptor(sk, 16, 1024);
  const std::uint64_t dv0 = wgmma::descriptor(sv, kChunk, 1024);
  unsigned gbase = 0;  // tiles of the items before this one (the producer's count)
  // Tile gt's K stage gt % kKS (its use gt / kKS) and V stage gt % 2.
  auto wait_full = [&](int which, unsigned gt) {
    if (which == 0) wgmma::mbar_wait(&full[gt % kKS], (gt / kKS) & 1);
    else wgmma::mbar_wait(&full[kKS + (gt & 1)], (gt >> 1) & 1);
  };
  for (int li = 0;; ++li) {
    const int b = li & 1;
    wgmma::mbar_wait(&qfull[b], (li >> 1) & 1);
    const int rows = uniform(info[b].rows);
    if (rows < 0) {
      if (g == 0 && ctid == 0) {
        SVOO_TR_BLOCK(1, trace_ns());
        SVOO_TR_BLOCK(2, gbase);
        SVOO_TR_BLOCK(3, li);
      }
      break;
    }
    const int L = uniform(info[b].keys), tiles = (L + kBN - 1) / kBN;
    const std::int64_t h = uniform(info[b].head);
    // An item of at most 64 rows needs one consumer. The other sleeps at named barrier 5 or 7 (by Q
    // buffer) until the first has waited on the item's last stage, so that no phase of a ring is
    // waited on early; the first arrives on each empty barrier for both (their counts are fixed).
    // Spinning through the stages instead took issue slots from the working consumer and the
    // producer. The sleeper frees the Q buffer only after its barrier, so the first cannot reach an
    // item two ahead, whose barrier would be the same one, before the sleeper has left it.
    const bool solo = rows <= 64;
    if (solo && g == 1) {
      gbase += tiles;
      wgmma::named_sync(5 + 2 * b, 256);
      wgmma::mbar_arrive(&qempty[b]);
      continue;
    }
    if (ctid == 0) SVOO_TR(g_tr_item[g], li);
    const unsigned arrivals = solo ? 2 : 1;
    wgmma::fence_async_shared();  // Q (cp.async, generic proxy) before the tensor cores read it

    const bool pingpong = (flags & kPingpong) != 0 && !solo;
    float o[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) o[i] = 0.f;
    float m_row[2] = {-FLT_MAX, -FLT_MAX}, l_row[2] = {0.f, 0.f}, alpha[2] = {1.f, 1.f};
    bool rescale = true;  // the last softmax moved a maximum of this warp's rows: O must be rescaled
    float s[64];
    std::uint32_t pa[kBN / 16][4];

    // Ping-pong: the two consumers take turns issuing their products, so one's softmax runs while
    // the other's products occupy the tensor cores. Consumer 1 lets consumer 0 go first; consumer 0
    // absorbs the last turn at the item's end. The turns' named barriers alternate with the item's
    // parity (3 and 4, or 8 and 9): consumer 1 can finish an item and give the next item's first
    // turn before consumer 0 has absorbed its last turn of this one, and on one barrier those two
    // arrivals would complete it without consumer 0; both consumers would then wait for each
    // other's turn (bench/persistent_protocol_model.py found it; no GPU run had shown it).
    const int turn_bar = b == 0 ? 3 : 8;
    if (pingpong && g == 1) wgmma::named_arrive(turn_bar, 256);
    auto turn_begin = [&] {
      if (pingpong) wgmma::named_sync(turn_bar + g, 256);
    };
    auto turn_end = [&] {
      if (pingpong) wgmma::named_arrive(turn_bar + 1 - g, 256);
    };
    // Descriptors: a step's operand is the base plus its byte offset / 16 (the address field
    // cannot overflow: shared memory offsets stay below 2^18).
    // Q in registers for the whole item (the m16n8k16 A fragments of this warp's 16 rows, one
    // ldmatrix.x4 a 16 columns): the tensor cores then read only K from shared memory for S, 32 KB
    // less shared-memory traffic a tile (dense +2.6 % at 40 x 75,600, sparse unchanged: run129).
    // The consumers use 216 of their 224 registers.
    std::uint32_t qa[kD / 16][4];
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks)
      ptx::ldmatrix_x4(qa[ks], sq + b * kTile + swz(g * 64 + warp * 16 + (lane % 16), 2 * ks + lane / 16));
    auto issue_s = [&](unsigned gt) {
      const std::uint64_t dk = dk0 + (gt % kKS) * (kTile >> 4);
#pragma unroll
      for (int ks = 0; ks < kD / 16; ++ks) {
        const int off = ((ks / 4) * kChunk + (ks % 4) * 32) >> 4;
        wgmma::m64n128k16_rs<kBf16>(s, qa[ks], dk + off, ks > 0 ? 1 : 0);
      }
      wgmma::commit();
    };
    auto issue_pv = [&](unsigned gt) {
      const std::uint64_t dv = dv0 + (gt & 1) * (kTile >> 4);
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) wgmma::m64n128k16_rs_mn<kBf16>(o, pa[kk], dv + ((kk * 16 * 128) >> 4));
      wgmma::commit();
    };
    // Keys past the item's end (its last tile) out of S(t).
    auto mask_tail = [&](int t) {
      if ((t + 1) * kBN > L) {
  #pragma unroll
        for (int i = 0; i < 64; ++i)
          if (t * kBN + 8 * (i / 4) + 2 * (lane % 4) + (i % 2) >= L) s[i] = -FLT_MAX;
      }
    };
    // Online softmax of tile t in s (element i: row 16*warp + 8*((i/2)%2) + lane/4, key column
    // 8*(i/4) + 2*(lane%4) + i%2): s becomes P, alpha the rescaling of the rows' running output.
    // tail_masked: mask_tail(t) has run already.
    auto softmax = [&](int t, bool tail_masked = false) {
      if (!tail_masked) mask_tail(t);
      // Row maxima and sums as 4-way trees: serial chains of 32 dependent operations would stall
      // the two warps a scheduler has.
      float pm[2][4];
  #pragma unroll
      for (int half = 0; half < 2; ++half)
  #pragma unroll
        for (int j = 0; j < 4; ++j) pm[half][j] = m_row[half];
  #pragma unroll
      for (int i = 0; i < 64; ++i) pm[(i / 2) % 2][(i / 4) % 4] = fmaxf(pm[(i / 2) % 2][(i / 4) % 4], s[i]);
      // Rescaling only where needed: when no row of the warp has a new maximum, alpha is 1 for all
      // of them and the 64 multiplies of O are skipped (bitwise the same result). Keeping stale
      // maxima up to a margin (probabilities above 1) would skip more, but measured 15 % more
      // error: the largest probability of a row is then rounded to bf16 instead of being 1.
      float mx[2];
  #pragma unroll
      for (int half = 0; half < 2; ++half) {
        mx[half] = fmaxf(fmaxf(pm[half][0], pm[half][1]), fmaxf(pm[half][2], pm[half][3]));
        mx[half] = fmaxf(mx[half], __shfl_xor_sync(0xffffffffu, mx[half], 1));
        mx[half] = fmaxf(mx[half], __shfl_xor_sync(0xffffffffu, mx[half], 2));
      }
      rescale = !lazy || __any_sync(0xffffffffu, mx[0] > m_row[0] || mx[1] > m_row[1]);
      float mxs[2];
  #pragma unroll
      for (int half = 0; half < 2; ++half) {
        if (rescale) {
          alpha[half] = ex2((m_row[half] - mx[half]) * scale_log2);
          m_row[half] = mx[half];
        }
        mxs[half] = m_row[half] * scale_log2;
      }
      float ps[2][4] = {};
  #pragma unroll
      for (int i = 0; i < 64; ++i) {
        s[i] = ex2(fmaf(s[i], scale_log2, -mxs[(i / 2) % 2]));
        ps[(i / 2) % 2][(i / 4) % 4] += s[i];
      }
  #pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float sum = (ps[half][0] + ps[half][1]) + (ps[half][2] + ps[half][3]);
        l_row[half] = rescale ? l_row[half] * alpha[half] + sum : l_row[half] + sum;
      }
    };
    // P as the A operand: for keys 16*kk.., the m16n8k16 fragment is s[8kk .. 8kk + 7] in order.
    auto pack_p = [&] {
  #pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk)
  #pragma unroll
        for (int e = 0; e < 4; ++e) pa[kk][e] = ptx::pack2<kBf16>(s[8 * kk + 2 * e], s[8 * kk + 2 * e + 1]);
    };


    // Software pipeline after FlashAttention-3's intra-warpgroup overlap: S(t) and P(t-1) V(t-1)
    // are issued together and S(t) is softmaxed between the two waits. (ptxas moves the wait for
    // P(t-1) V(t-1) before the softmax, so the overlap the schedule gets is the other consumer's:
    // see run173 in bench/results/2026-11-27-h100-notes.md.) Stages and phases count the tiles of
    // all items so far (gbase + t).
    if (tiles > 0) {
      wait_full(0, gbase);
      if (ctid == 0) SVOO_TR(g_tr_kwait[g], gbase);
      wgmma::fence_async_shared();
      turn_begin();
      wgmma::fence();
      issue_s(gbase);
      turn_end();
      wgmma::wait<0>();
      wgmma::fence_regs(s);
      wgmma::mbar_arrive(&empty[gbase % kKS], arrivals);
      softmax(0);
      pack_p();
      // A step's end: P(t-1) V(t-1) done, its V stage released, O rescaled to S(t)'s maxima, P(t)
      // packed for the next step's P V.
      auto finish_step = [&](unsigned gt) {
        wgmma::wait<0>();
        wgmma::fence_regs(o);
        wgmma::fence_regs(pa);
        wgmma::mbar_arrive(&empty[kKS + ((gt - 1) & 1)], arrivals);
        if (rescale) {
#pragma unroll
          for (int i = 0; i < 64; ++i) o[i] *= alpha[(i / 2) % 2];
        }
        pack_p();
      };
      for (int t = 1; t < tiles; ++t) {
        const unsigned gt = gbase + t;
        if (solo) {
          // One consumer and no turns: S(t) alone, then P(t-1) V(t-1) with S(t)'s softmax under
          // it, one group in flight. (With S(t) and P V in flight together ptxas schedules the wait
          // for P V before the softmax, so a lone consumer left the tensor cores idle through each
          // softmax: run174/175.)
          wait_full(0, gt);
          if (ctid == 0) SVOO_TR(g_tr_kwait[g], gt);
          wgmma::fence_async_shared();
          wgmma::fence_regs(o);
          wgmma::fence_regs(pa);
          wgmma::fence();
          issue_s(gt);
          wgmma::wait<0>();
          wgmma::fence_regs(s);
          wgmma::mbar_arrive(&empty[gt % kKS], arrivals);
          mask_tail(t);  // before the issue: the softmax below is then one block with the wait
          wait_full(1, gt - 1);
          if (ctid == 0) SVOO_TR(g_tr_vwait[g], gt - 1);
          wgmma::fence_async_shared();
          wgmma::fence();
          issue_pv(gt - 1);
          softmax(t, true);
          finish_step(gt);
          continue;
        }
        wait_full(0, gt);
        if (ctid == 0) SVOO_TR(g_tr_kwait[g], gt);
        wgmma::fence_async_shared();
        turn_begin();
        wgmma::fence_regs(o);
        wgmma::fence_regs(pa);
        wgmma::fence();
        issue_s(gt);
        // V(t - 1) is waited on only now: its stage is released a softmax later than K's, so it is
        // the tile that arrives last, and S(t) need not wait for it (-0.2 to +3.5 % sparse at 10-30 %
        // on the medians of four rounds, +0.2 or more at 14B; dense +1 %; run137-138). The explicit fence keeps ptxas from
        // injecting its own warpgroup.arrive around the wait's loop.
        wait_full(1, gt - 1);
        if (ctid == 0) SVOO_TR(g_tr_vwait[g], gt - 1);
        wgmma::fence_async_shared();
        wgmma::fence();
        issue_pv(gt - 1);
        turn_end();
        wgmma::wait<1>();
        wgmma::fence_regs(s);
        wgmma::mbar_arrive(&empty[gt % kKS], arrivals);
        softmax(t);
        finish_step(gt);
      }
      const unsigned last = gbase + tiles - 1;
      wait_full(1, last);
      if (ctid == 0) SVOO_TR(g_tr_vwait[g], last);
      wgmma::fence_async_shared();
      turn_begin();
      wgmma::fence_regs(o);
      wgmma::fence_regs(pa);
      wgmma::fence();
      issue_pv(last);
      turn_end();
      wgmma::wait<0>();
      wgmma::fence_regs(o);
      wgmma::mbar_arrive(&empty[kKS + (last & 1)], arrivals);
    }
    if (pingpong && g == 0) wgmma::named_sync(turn_bar, 256);
    if (solo) wgmma::named_arrive(5 + 2 * b, 256);  // the other consumer may go on to the next item
    gbase += tiles;
    if (ctid == 0) SVOO_TR(g_tr_epi0[g], li);

    // Normalise, stage the rows in this warpgroup's part of the Q tile, write through the permutation.
    float inv[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float l = l_row[half];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      inv[half] = l > 0.f ? 1.f / l : 0.f;
      const int r = g * 64 + warp * 16 + half * 8 + lane / 4;
      if (a.lse && lane % 4 == 0 && r < rows) {
        a.lse[h * a.q.tokens + q_tok[b][r]] = l > 0.f ? m_row[half] * (scale_log2 / 1.4426950408889634f) + logf(l) : -INFINITY;
      }
    }
    // The products that read this Q buffer are done (wait<0> above): its rows take the output.
    // (Through its shared address: sq, rounded up to 1024 bytes through an integer, has lost its
    // address space, and dereferenced it made these generic stores and loads.)
    const std::uint32_t sq_out = ptx::smem_addr(sq) + b * kTile;
#pragma unroll
    for (int i = 0; i < 64; i += 2) {
      const int half = (i / 2) % 2;
      const int r = g * 64 + warp * 16 + half * 8 + lane / 4;
      ptx::st_shared_u32(sq_out + swz(r, i / 4) + 4 * (lane % 4), ptx::pack2<kBf16>(o[i] * inv[half], o[i + 1] * inv[half]));
    }
    wgmma::named_sync(1 + g, 128);
    // A thread writes 16-byte piece cc of rows r0, r0 + 8, .. r0 + 56: every shared load first, then
    // the stores, so that the loads' latencies overlap instead of each store waiting on its own.
    auto* obase = static_cast<std::uint16_t*>(a.out.data) + h * a.out.head_stride;
    const int cc = ctid % 16, r0 = g * 64 + ctid / 16;
    uint4 staged[8];
    std::int32_t tok[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      staged[k] = ptx::ld_shared_v4(sq_out + swz(r0 + 8 * k, cc));
      tok[k] = q_tok[b][r0 + 8 * k];
    }
#pragma unroll
    for (int k = 0; k < 8; ++k)
      ptx::st_global_v4_if(obase + static_cast<std::int64_t>(tok[k]) * a.out.row_stride + cc * 8, staged[k], r0 + 8 * k < rows);
    wgmma::mbar_arrive(&qempty[b]);  // this thread is done with Q buffer b, its info and tokens
    if (ctid == 0) SVOO_TR(g_tr_epi1[g], li);
  }
#endif
}

// SVOO_ATTN_PINGPONG=0 turns the consumers' turn-taking off, SVOO_ATTN_LAZY=0 the lazy
// rescaling, SVOO_ATTN_TMA=0 dense mode's TMA copies, SVOO_ATTN_OFF32=0 the gathering producer's
// 32-bit row offsets (for comparison).
int hopper_flags() {
  static const int flags = [] {
    auto off = [](const char* name) {
      const char* e = std::getenv(name);
      return e && std::strcmp(e, "0") == 0;
    };
    return (off("SVOO_ATTN_PINGPONG") ? 0 : kPingpong) | (off("SVOO_ATTN_LAZY") ? 0 : kLazyRescale) |
           (off("SVOO_ATTN_TMA") ? 0 : kTmaDense) | (off("SVOO_ATTN_OFF32") ? 0 : kOffsets32);
  }();
  return flags;
}

template <bool kBf16>
void launch_typed(const AttentionArgs& a, cudaStream_t stream) {
  // Persistent: a block an SM (at most one an item). Sparse items come from a counter that starts
  // at zero each call.
  const std::int64_t items = a.range_ptr ? a.item_capacity : a.q.heads * ((a.q.tokens + kBM - 1) / kBM);
  if (items == 0) return;
  const std::int64_t sms = sm_count();
  const std::int64_t grid = items < sms ? items : sms;
  if (a.range_ptr) cudaMemsetAsync(a.work_counter, 0, sizeof(int), stream);
  int flags = hopper_flags();
  KvMaps maps{};
  if (a.range_ptr != nullptr || !encode_rows_map(maps.k, a.k, kBN) || !encode_rows_map(maps.v, a.v, kBN))
    flags &= ~kTmaDense;  // sparse mode gathers; a view TMA cannot describe is gathered too
  // The TMA instance's third K stage fits because the compiler drops the range buffers it never
  // reads (its static shared memory is ~1 KB); should a compiler keep them, it gathers instead.
  static const bool tma_fits = [] {
    cudaFuncAttributes fa{};
    int optin = 0, dev = 0;
    return cudaGetDevice(&dev) == cudaSuccess &&
           cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess &&
           cudaFuncGetAttributes(&fa, attention_hopper_kernel<kBf16, true>) == cudaSuccess &&
           fa.sharedSizeBytes + static_cast<std::size_t>(smem_bytes(true)) <= static_cast<std::size_t>(optin);
  }();
  if (!tma_fits) flags &= ~kTmaDense;
  // Row offsets in 32 bits when the last row of every head ends below 4 GiB from its head's start.
  auto fits32 = [](const RowsView& v) {  // (tokens - 1) x pitch + a row <= 2^32 - 1, without overflow
    const std::int64_t room = static_cast<std::int64_t>(0xFFFFFFFFu) - kD * 2;
    return v.tokens <= 1 || v.row_stride * 2 <= room / (v.tokens - 1);
  };
  if (!(fits32(a.q) && fits32(a.k) && fits32(a.v))) flags &= ~kOffsets32;
  auto kernel = (flags & kTmaDense) != 0 ? attention_hopper_kernel<kBf16, true> : attention_hopper_kernel<kBf16, false>;
  const int smem = smem_bytes((flags & kTmaDense) != 0);
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  kernel<<<static_cast<unsigned>(grid), kThreads, smem, stream>>>(a, flags, maps);
}

}  // namespace

#if defined(SVOO_ATTN_TRACE)
namespace {
template <class T, std::size_t N>
std::vector<long long> trace_read(const T (&sym)[N]) {
  std::vector<long long> h(sizeof(sym) / sizeof(long long));
  cudaMemcpyFromSymbol(h.data(), sym, sizeof(sym));
  return h;
}
template <class T, std::size_t N>
void trace_clear(const T (&sym)[N]) {
  std::vector<unsigned char> z(sizeof(sym), 0);
  cudaMemcpyToSymbol(sym, z.data(), sizeof(sym));
}
}  // namespace
void attention_trace_reset() {
  trace_clear(g_tr_kissue), trace_clear(g_tr_vissue), trace_clear(g_tr_kwait), trace_clear(g_tr_vwait);
  trace_clear(g_tr_prep0), trace_clear(g_tr_prep1), trace_clear(g_tr_item), trace_clear(g_tr_epi0), trace_clear(g_tr_epi1);
  trace_clear(g_tr_block);
}
// Lines "event index clock", clocks relative to the first recorded one; unrecorded slots skipped.
void attention_trace_print(std::FILE* f) {
  struct Ev {
    const char* name;
    std::vector<long long> v;
    int n;
  };
  std::vector<Ev> evs = {{"kissue", trace_read(g_tr_kissue), kTraceTiles}, {"vissue", trace_read(g_tr_vissue), kTraceTiles},
                         {"prep0", trace_read(g_tr_prep0), kTraceItems},   {"prep1", trace_read(g_tr_prep1), kTraceItems}};
  const auto kw = trace_read(g_tr_kwait), vw = trace_read(g_tr_vwait), it = trace_read(g_tr_item), e0 = trace_read(g_tr_epi0),
             e1 = trace_read(g_tr_epi1);
  for (int g = 0; g < 2; ++g) {
    static const char* names[2][5] = {{"kwait0", "vwait0", "item0", "epi0_0", "epi1_0"}, {"kwait1", "vwait1", "item1", "epi0_1", "epi1_1"}};
    evs.push_back({names[g][0], std::vector<long long>(kw.begin() + g * kTraceTiles, kw.begin() + (g + 1) * kTraceTiles), kTraceTiles});
    evs.push_back({names[g][1], std::vector<long long>(vw.begin() + g * kTraceTiles, vw.begin() + (g + 1) * kTraceTiles), kTraceTiles});
    evs.push_back({names[g][2], std::vector<long long>(it.begin() + g * kTraceItems, it.begin() + (g + 1) * kTraceItems), kTraceItems});
    evs.push_back({names[g][3], std::vector<long long>(e0.begin() + g * kTraceItems, e0.begin() + (g + 1) * kTraceItems), kTraceItems});
    evs.push_back({names[g][4], std::vector<long long>(e1.begin() + g * kTraceItems, e1.begin() + (g + 1) * kTraceItems), kTraceItems});
  }
  long long t0 = 0;
  for (const Ev& e : evs)
    for (long long c : e.v)
      if (c != 0 && (t0 == 0 || c < t0)) t0 = c;
  for (const Ev& e : evs)
    for (int i = 0; i < e.n; ++i)
      if (e.v[i] != 0) std::fprintf(f, "%s %d %lld\n", e.name, i, e.v[i] - t0);
  // Lines "block i start_ns end_ns tiles items", times relative to the earliest block's start.
  const auto blocks = trace_read(g_tr_block);
  long long b0 = 0;
  for (int i = 0; i < kTraceBlocks; ++i)
    if (blocks[4 * i] != 0 && (b0 == 0 || blocks[4 * i] < b0)) b0 = blocks[4 * i];
  for (int i = 0; i < kTraceBlocks; ++i)
    if (blocks[4 * i] != 0)
      std::fprintf(f, "block %d %lld %lld %lld %lld\n", i, blocks[4 * i] - b0, blocks[4 * i + 1] - b0, blocks[4 * i + 2],
                   blocks[4 * i + 3]);
}
#endif

bool attention_hopper_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("SVOO_ATTN_KERNEL");
    return !(e && std::strcmp(e, "sm80") == 0) && assign_wgmma_available();
  }();
  return on && attention_rows() == kBM;
}

void launch_attention_hopper(const AttentionArgs& a, cudaStream_t stream) {
  a.q.elem == Elem::bf16 ? launch_typed<true>(a, stream) : launch_typed<false>(a, stream);
}

}  // namespace svoo::cuda::detail
