// The tau-density on Hopper (sm_90a): three passes of Q K^T on the warpgroup tensor cores, each
// folding every score into per-row sums in registers (the search of density_search.hpp).
//
// Products: a persistent block (one per SM) takes work items (head, 128 query rows) and streams
// the head's keys 128 at a time; each step is eight wgmma m64 n128 k16 per warpgroup (64 rows),
// operands read by the tensor cores from 128-byte-swizzled shared memory, on the co-clustering
// assignment's schedule (wgmma_stream.cuh): step g+1's products are issued into a second
// accumulator bank before step g is folded, key tiles stream through a ring of stages tracked with
// mbarriers, and the next item's Q rows load into a second buffer during the current item.
//
// Folds (per thread: two rows, 32 scores each per step):
//   pass 1: the row max, the reference c (moved up by whole steps, with the sums shifted), the
//           total and the masses below kCoarse thresholds; at the item's end the coarse window;
//   pass 2: the total and the masses below kMid thresholds of that window; the fine window;
//   pass 3: the count above the fine window and the mass below its top, and its scores through
//           per-lane queues into kFine sub-bins (shared-memory atomics, only for the window's
//           scores); the bracket. With tau = 1 it counts p > 0 against the row max instead.
// The default search skips pass 2: pass 1 places pass 3's window by interpolation (interp_window),
// and the rows whose crossing it misses run passes 2 and 3 again from a list built on the device
// (items of 128 listed rows of one head; blocks read the item count from device memory).
// Sums: fp32 within a step (at most 32 terms), then added to fp64 sums a thread keeps in shared
// memory (registers are taken by the two accumulator banks).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cub/block/block_scan.cuh>

#include <cfloat>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "density_kernels.cuh"
#include "device_info.hpp"
#include "density_search.hpp"
#include "ptx.cuh"
#include "wgmma.cuh"
#include "wgmma_stream.cuh"


namespace svoo::cuda::detail {
namespace {

namespace ds = density::search;

[[maybe_unused]] constexpr int kDim = 128, kRows = 128, kCols = 128, kThreads = 256;
constexpr int kChunkBytes = 128 * 128;       // one 64-wide K chunk of 128 rows
constexpr int kTileBytes = 2 * kChunkBytes;  // 128 rows x 128 K, bf16
constexpr int kQBufs = 2;
// Passes 1 and 2: a thread's fp64 sums, per row its thresholds' and the total.
constexpr int kSumBytes = 2 * ((ds::kCoarse > ds::kMid ? ds::kCoarse : ds::kMid) + 1) * kThreads * 8;
// Pass 3: per lane and row a queue of the window's scores, drained every kDrainEvery scores a lane
// (kDrainEvery / 2 a row, the queue's slots). Longer periods pay the drains' fixed cost and their
// fullest-queue trips less often: 8, 16 and 24 took the synthetic layer's pass 3 120, 105 and
// 101 ms, and with below_top's predicated adds 24 and 28 took 99 (run220-221, H200); 32 does not
// fit in shared memory. Draining only once a queue
// nears full (checked every 8 scores) took 106 ms: eight drain sites a fold of hot code.
constexpr int kDrainEvery = 24;
static_assert(kDrainEvery % 4 == 0, "a drain after whole pairs of each row's scores");
constexpr int kQueueSlots = kDrainEvery / 2;
constexpr int kHistBytes = kRows * ds::kFine * 2 * 4;  // count and units per sub-bin and row
constexpr int kQueueBytes = kThreads * 2 * kQueueSlots * 4;
constexpr int kRowParamBytes = kRows * 4 * 4;  // pass 3: c, bins' top in x, 1 / bin step, unit scale per row

template <int kPass>
constexpr int stages() {
  return kPass == 3 ? 2 : 3;
}
template <int kPass>
constexpr int extra_bytes() {
  return kPass == 3 ? kHistBytes + kQueueBytes + kRowParamBytes : kSumBytes;
}
template <int kPass>
constexpr int smem_bytes() {
  return (kQBufs + stages<kPass>()) * kTileBytes + extra_bytes<kPass>() + 1024;
}
static_assert(smem_bytes<1>() <= 227 * 1024 && smem_bytes<3>() <= 227 * 1024, "shared memory");

[[maybe_unused]] __device__ __forceinline__ int swizzled(int r, int c16) { return wgmma::swizzled(r, c16, kChunkBytes); }

// 128 query rows of one head: rows row0 + r, or listed[r] where a list is given (-1: none); rows[]
// picks their tokens, or row i is token i; rows past nrows (or -1) zero. A token outside [0, tokens)
// reads token 0 (density.cu's input check makes the results NaN).
[[maybe_unused]] __device__ __forceinline__ void load_q_tile(unsigned char* dst, const std::uint16_t* qh,
                                                             const std::int64_t* rows, const std::int32_t* listed,
                                                             std::int64_t row0, std::int64_t nrows,
                                                             std::int64_t tokens, std::int64_t stride) {
  for (int e = threadIdx.x; e < kRows * 16; e += kThreads) {
    const int r = e >> 4, c16 = e & 15;
    const std::int64_t ri = listed ? listed[r] : row0 + r;
    const bool ok = ri >= 0 && ri < nrows;
    std::int64_t tok = ok ? (rows ? rows[ri] : ri) : 0;
    if (tok < 0 || tok >= tokens) tok = 0;
    ptx::cp_async16(dst + swizzled(r, c16), qh + tok * stride + c16 * 8, ok ? 16 : 0);
  }
}
// 128 keys from key0 (row stride in elements); keys >= nk zero. Thread t copies the 16-byte piece
// t % 16 of rows t / 16 + 16 j: the swizzle of row r + 16 j is that of row r, 2048 bytes on.
[[maybe_unused]] __device__ __forceinline__ void load_k_tile(unsigned char* dst, const std::uint16_t* kh,
                                                             std::int64_t key0, std::int64_t nk, std::int64_t stride) {
  const int t = threadIdx.x, r0 = t >> 4;
  const std::uint32_t d0 = ptx::smem_addr(dst + swizzled(r0, t & 15));
  const unsigned char* s0 = reinterpret_cast<const unsigned char*>(kh + (key0 + r0) * stride) + (t & 15) * 16;
  const std::int64_t step = 16 * stride * 2;
  if (key0 + 128 <= nk) {  // a whole tile (all but an item's last): no checks, the address stepped
    const unsigned char* src = s0;
#pragma unroll
    for (int j = 0; j < 8; ++j, src += step)
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d0 + j * 2048), "l"(src));
    return;
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const bool ok = key0 + r0 + 16 * j < nk;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d0 + j * 2048),
                 "l"(ok ? s0 + j * step : reinterpret_cast<const unsigned char*>(kh)), "r"(ok ? 16 : 0));
  }
}

// acc += v < t ? p : 0, as a set (1.0 or 0.0) and an fma: two instructions where the compiler's
// compare, select and add take three.
[[maybe_unused]] __device__ __forceinline__ void add_if_below(float& acc, float v, float t, float p) {
  asm("{\n.reg .f32 m;\nset.lt.f32.f32 m, %1, %2;\nfma.rn.f32 %0, m, %3, %0;\n}\n" : "+f"(acc) : "f"(v), "f"(t), "f"(p));
}

// Pass 3, one score v (probability p) of a row whose window is [lo, top): below the top, count it
// and add p; in the window, move the lane's queue slot on (its store is done). Two compares and
// three predicated adds (ptxas makes the slot's an add and a select): six instructions, where a
// set, an fma and the compiler's own compares and selects took seven.
[[maybe_unused]] __device__ __forceinline__ void below_top(float& nbelow, float& mass, std::uint32_t& slot, float v,
                                                           float p, float lo, float top) {
  asm("{\n.reg .pred b, w;\n"
      "setp.lt.f32 b, %3, %6;\n"
      "setp.ge.and.f32 w, %3, %5, b;\n"
      "@b add.f32 %0, %0, 0f3F800000;\n"
      "@b add.f32 %1, %1, %4;\n"
      "@w add.u32 %2, %2, 128;\n}\n"
      : "+f"(nbelow), "+f"(mass), "+r"(slot)
      : "f"(v), "f"(p), "f"(lo), "f"(top));
}

[[maybe_unused]] __device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
[[maybe_unused]] __device__ __forceinline__ double quad_sum(double v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
[[maybe_unused]] __device__ __forceinline__ long long quad_sum(long long v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Pass 3's end of one row: the bracket from its sub-bins, and in rounds 1 and 2 of the default search
// (DensityArgs::round) the round it runs again in: a miss, or (round 1) a window that is no
// interpolated one (the deep window below pass 1's thresholds). The flag says which round; that
// round overwrites it. Not inlined: a row's end runs once an item, and inlined its fp64 arithmetic
// raised the pass's registers from 197 to 248.
[[maybe_unused]] __device__ __noinline__ void finish_row(float* win_lo, float* win_hi, std::int32_t* count, std::int32_t* count_lo,
                                        std::int32_t* count_hi, std::uint8_t* fallback, double total, double b_chi,
                                        double b_clo, float c, double b_top, long long above, std::int64_t nk,
                                        const std::uint32_t* cnt_bins, const std::uint32_t* unit_bins, double tau,
                                        int round, float width) {
  const ds::Window w{*win_lo, *win_hi};
  const density::Count cnt = ds::finish({b_top, total, above, nk}, w, c, cnt_bins, unit_bins, tau);
  *count = cnt.estimate, *count_lo = cnt.lo, *count_hi = cnt.hi;
  std::uint8_t flag = cnt.fallback ? 1 : 0;
  if (round > 0) {
    const ds::Window cw = ds::coarse_of(w, c);
    ds::Next next{cw, false};
    if (round == 1 && cnt.fallback && ds::is_coarse_step(cw, c))
      next = ds::reinterp_window(w, cw, b_top, ds::window_mass(unit_bins, nk, w, c), b_chi, b_clo, (1.0 - tau) * total,
                                 width);
    flag = !cnt.fallback && ds::is_coarse_step(cw, c) ? 0 : next.ok ? 1 : 2;
    if (flag) *win_lo = next.w.lo, *win_hi = next.w.hi;
  }
  *fallback = flag;
}

// kPass 1, 2, 3; kPositives (pass 3 only): tau = 1, the count of p > 0.
template <bool kBf16, int kPass, bool kPositives>
__global__ void __launch_bounds__(kThreads, 1) density_wgmma_kernel(DensityArgs a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kStages = stages<kPass>();
  extern __shared__ unsigned char smem_raw[];
  __shared__ std::uint64_t full[kStages];   // key stage s holds its next step
  __shared__ std::uint64_t empty[kStages];  // every thread holds the products of stage s's step
  __shared__ std::uint64_t qfull[kQBufs];   // Q buffer b holds its next item
  // 1024-byte alignment by an offset from smem_raw itself (not through an integer cast, which
  // loses the address space: the sums, sub-bins and queue would be reached with generic loads,
  // stores and atomics instead of shared-memory ones).
  unsigned char* base = smem_raw + ((1024u - (ptx::smem_addr(smem_raw) & 1023u)) & 1023u);
  unsigned char* sq = base;
  unsigned char* sk = base + kQBufs * kTileBytes;
  unsigned char* extra = sk + kStages * kTileBytes;

  const int tid = threadIdx.x, wg = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;
  const int warp_all = tid / 32;  // 0..7: rows 16 warp_all .. + 15 of the item
  const std::int64_t nk = a.k.tokens, nrows = a.nrows;
  const int rblocks = static_cast<int>((nrows + kRows - 1) / kRows);
  const bool listed = a.list != nullptr;
  const int items_total = listed ? *a.list_items : static_cast<int>(a.q.heads) * rblocks;
  const int items = items_total > static_cast<int>(blockIdx.x)
                        ? (items_total - static_cast<int>(blockIdx.x) + static_cast<int>(gridDim.x) - 1) /
                              static_cast<int>(gridDim.x)
                        : 0;
  if (items == 0) return;  // a listed round sized on the host for the worst case
  const int tiles = static_cast<int>((nk + kCols - 1) / kCols);
  const int steps = items * tiles;
  const float sl2 = a.scale_log2;

  wgmma::Stream<kStages, kQBufs> stream{full, empty, qfull, items, tiles};
  if (tid == 0) stream.init(kThreads);
  __syncthreads();

  auto item_of = [&](int li) { return static_cast<int>(blockIdx.x) + li * static_cast<int>(gridDim.x); };
  auto item_head = [&](int li) { return listed ? a.list_head[item_of(li)] : item_of(li) / rblocks; };
  auto item_row0 = [&](int li) { return listed ? 0 : static_cast<std::int64_t>(item_of(li) % rblocks) * kRows; };
  auto item_list = [&](int li) { return listed ? a.list + static_cast<std::int64_t>(item_of(li)) * kRows : nullptr; };
  const auto* qdata = static_cast<const std::uint16_t*>(a.q.data);
  const auto* kdata = static_cast<const std::uint16_t*>(a.k.data);
  auto load_q = [&](int li) {
    load_q_tile(sq + (li % kQBufs) * kTileBytes, qdata + item_head(li) * a.q.head_stride, a.rows, item_list(li),
                item_row0(li), nrows, a.q.tokens, a.q.row_stride);
    wgmma::mbar_arrive_cp_async(&qfull[li % kQBufs]);
  };
  int ld_step = 0, ld_li = 0, ld_t = 0;
  const std::uint16_t* ld_kh = kdata + item_head(0) * a.k.head_stride;
  auto load_next_tile = [&] {
    if (ld_step < steps) {
      load_k_tile(sk + (ld_step % kStages) * kTileBytes, ld_kh, static_cast<std::int64_t>(ld_t) * kCols, nk,
                  a.k.row_stride);
      wgmma::mbar_arrive_cp_async(&full[ld_step % kStages]);
    }
    ++ld_step;
    if (++ld_t == tiles) {
      ld_t = 0;
      if (++ld_li < items) ld_kh = kdata + item_head(ld_li) * a.k.head_stride;
    }
  };
  const std::uint32_t dq0 = static_cast<std::uint32_t>(wgmma::descriptor(sq + wg * 64 * 128, 16, 1024));
  const std::uint32_t dk0 = static_cast<std::uint32_t>(wgmma::descriptor(sk, 16, 1024));
  constexpr std::uint64_t kDescHigh = wgmma::descriptor_high(1024);
  auto issue = [&](float (&d)[64], int g, int li) {
    const std::uint32_t da = dq0 + static_cast<std::uint32_t>((li % kQBufs) * (kTileBytes >> 4));
    const std::uint32_t db = dk0 + (static_cast<unsigned>(g) % kStages) * (kTileBytes >> 4);
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks) {
      const std::uint32_t off = ((ks / 4) * kChunkBytes + (ks % 4) * 32) >> 4;
      wgmma::m64n128k16_ss<kBf16>(d, kDescHigh | (da + off), kDescHigh | (db + off), ks > 0 ? 1 : 0);
    }
    wgmma::commit();
  };

  // ---- per-row state. This thread's rows: local lr[h] (0..127) of the item, h = 0, 1. ----
  int lr[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) lr[h] = wg * 64 + warp * 16 + h * 8 + lane / 4;
  const int col0 = 2 * (lane % 4);
  float c[2] = {0.f, 0.f};             // references (octaves)
  constexpr int kThr = kPass == 1 ? ds::kCoarse : ds::kMid;  // passes 1, 2: thresholds
  constexpr int kSums = kThr + 1;                              // ... and the total
  float th[2][kThr];                   // passes 1, 2: score thresholds
  float top[2] = {-FLT_MAX, -FLT_MAX};  // pass 1: theta(c) (nothing reaches it); pass 3: window top
  float smax[2] = {-FLT_MAX, -FLT_MAX};  // pass 1: row max; pass 3 positives: the row max read back
  float wlo[2] = {0.f, 0.f};           // pass 3: window bottom (score)
  long long above[2] = {0, 0};         // pass 3: count at or above the window (or of p > 0)
  double below[2] = {0.0, 0.0};        // pass 3: the mass below the window's top
  double* sums = reinterpret_cast<double*>(extra);  // passes 1, 2: [(h * kSums + k) * kThreads + tid]
  auto sum_at = [&](int h, int k) -> double& { return sums[(h * kSums + k) * kThreads + tid]; };
  auto* hist = reinterpret_cast<std::uint32_t*>(extra);  // pass 3: [row][kFine] counts, then units
  std::uint32_t* hunits = hist + kRows * ds::kFine;
  // Pass 3: this lane's slot 0 of its row 0's queue; its row 1's lies kQueueSlots slots on.
  const std::uint32_t queue0 = ptx::smem_addr(extra + kHistBytes) + ((warp_all * 2 * kQueueSlots) * 32 + lane) * 4;
  auto* rparam = reinterpret_cast<float4*>(extra + kHistBytes + kQueueBytes);  // pass 3: {c, top, 1/step, uscale}
  // Pass 3: drains the lane's queues into the sub-bins. As many trips as the warp's fullest queue
  // (a warp-uniform bound: the warp leaves converged), one entry of each row a trip: two
  // independent chains. A lane past its entries adds 0 to sub-bin `lane` of its row (ptxas wraps
  // a predicated atomic in a branch).
  std::uint32_t qa[2] = {queue0, queue0 + kQueueSlots * 128};  // this lane's next slots
  auto drain = [&] {
    const int n0 = static_cast<int>(qa[0] - queue0) >> 7;
    const int n1 = (static_cast<int>(qa[1] - queue0) >> 7) - kQueueSlots;
    const int trips = static_cast<int>(__reduce_max_sync(0xffffffffu, static_cast<unsigned>(max(n0, n1))));
    if (trips > 0) {
      const float4 rp[2] = {rparam[lr[0]], rparam[lr[1]]};
      for (int j = 0; j < trips; ++j) {
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          const bool ok = j < (u == 0 ? n0 : n1);
          float e;
          asm volatile("ld.shared.f32 %0, [%1];" : "=f"(e) : "r"(queue0 + (u * kQueueSlots + j) * 128));
          e = ok ? e : -FLT_MAX;  // p = 0
          const float x = ds::xvalue(e, sl2, rp[u].x);
          const int at = lr[u] * ds::kFine + (ok ? ds::fine_bin(x, rp[u].y, rp[u].z) : lane);
          atomicAdd(&hist[at], ok ? 1u : 0u);
          atomicAdd(&hunits[at], ds::units_of(ds::pexp(x), rp[u].w));
        }
      }
    }
    qa[0] = queue0, qa[1] = queue0 + kQueueSlots * 128;
  };
  int head = 0, item = 0;
  // This thread's row h of the current item (an index into [0, nrows)), or -1.
  auto row_of = [&](int h) -> std::int64_t {
    if (listed) return a.list[static_cast<std::int64_t>(item) * kRows + lr[h]];
    const std::int64_t ri = static_cast<std::int64_t>(item % rblocks) * kRows + lr[h];
    return ri < nrows ? ri : -1;
  };

  auto start_item = [&](int li) {
    head = item_head(li);
    item = item_of(li);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const std::int64_t ri = row_of(h);
      const bool ok = ri >= 0;
      const std::int64_t o = static_cast<std::int64_t>(head) * nrows + ri;
      if constexpr (kPass == 1) {
        c[h] = 0.f, top[h] = -FLT_MAX, smax[h] = -FLT_MAX;
#pragma unroll
        for (int k = 0; k < kThr; ++k) th[h][k] = FLT_MAX;
#pragma unroll
        for (int k = 0; k < kSums; ++k) sum_at(h, k) = 0.0;
      } else if constexpr (kPass == 2) {
        c[h] = ok ? a.row_ref[o] : 0.f;
        const ds::Window w{ok ? a.win_lo[o] : -1.f, ok ? a.win_hi[o] : 0.f};
#pragma unroll
        for (int k = 0; k < kThr; ++k) th[h][k] = ds::theta(ds::mid_threshold(w, k), sl2);
#pragma unroll
        for (int k = 0; k < kSums; ++k) sum_at(h, k) = 0.0;
      } else {
        above[h] = 0;
        below[h] = 0.0;
        if constexpr (kPositives) {
          smax[h] = ok ? a.row_peak[o] : 0.f;
        } else {
          c[h] = ok ? a.row_ref[o] : 0.f;
          const ds::Window w{ok ? a.win_lo[o] : -1.f, ok ? a.win_hi[o] : 0.f};
          top[h] = ds::theta(w.hi, sl2), wlo[h] = ds::theta(w.lo, sl2);
          if (lane % 4 == 0)
            rparam[lr[h]] = make_float4(c[h], w.hi - c[h], 1.f / ds::fine_step(w), ds::unit_scale(nk, w, c[h]));
        }
      }
    }
    if constexpr (kPass == 3 && !kPositives) {
      for (int i = lane; i < 16 * ds::kFine; i += 32) {
        hist[warp_all * 16 * ds::kFine + i] = 0u;
        hunits[warp_all * 16 * ds::kFine + i] = 0u;
      }
      __syncwarp();
    }
  };

  // Pass 1: move the reference of row h up to c_new (sums shifted by whole thresholds, scaled by
  // 2^-(step j)), and its thresholds with it. A new threshold at or above the old c has every key
  // so far below it: its sum is the total.
  auto rebase = [&](int h, float c_new) {
    const bool first = top[h] == -FLT_MAX;
    const int j = first ? 1 << 20 : static_cast<int>((c_new - c[h]) / ds::kCoarseStep + 0.5f);
    const double f = j * ds::kCoarseStep > 1000 ? 0.0 : density::pow2(-static_cast<double>(j * ds::kCoarseStep));
    const double total = sum_at(h, kThr) * f;
    for (int k = kThr - 1; k >= 0; --k) sum_at(h, k) = k - j >= 0 ? sum_at(h, k - j) * f : total;
    sum_at(h, kThr) = total;
    c[h] = c_new;
    top[h] = ds::theta(c_new, sl2);
#pragma unroll
    for (int k = 0; k < kThr; ++k) th[h][k] = ds::theta(c_new - static_cast<float>((k + 1) * ds::kCoarseStep), sl2);
  };

  // Fold of one step's products (t: the key tile).
  auto fold = [&](float (&d)[64], int t) {
    auto run = [&](auto masked_tag) {
      constexpr bool kMasked = decltype(masked_tag)::value;
      const std::int64_t rem = nk - static_cast<std::int64_t>(t) * kCols;
      auto value = [&](int i) {
        if constexpr (kMasked) return col0 + 8 * (i / 4) + (i % 2) < rem ? d[i] : -FLT_MAX;
        else return d[i];
      };
      if constexpr (kPass == 1) {
        float tm[2] = {-FLT_MAX, -FLT_MAX};
#pragma unroll
        for (int i = 0; i < 64; ++i) tm[(i / 2) % 2] = fmaxf(tm[(i / 2) % 2], value(i));
        tm[0] = quad_max(tm[0]), tm[1] = quad_max(tm[1]);
        const bool need0 = tm[0] >= top[0], need1 = tm[1] >= top[1];
        if (__any_sync(0xffffffffu, need0 || need1)) {
          if (need0) rebase(0, ds::reference_above(tm[0], sl2));
          if (need1) rebase(1, ds::reference_above(tm[1], sl2));
        }
        smax[0] = fmaxf(smax[0], tm[0]), smax[1] = fmaxf(smax[1], tm[1]);
      }
      if constexpr (kPass <= 2) {
        float part[2][kSums];
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int k = 0; k < kSums; ++k) part[h][k] = 0.f;
#pragma unroll
        for (int i = 0; i < 64; ++i) {
          const int h = (i / 2) % 2;
          const float v = value(i);
          const float p = ds::pvalue(v, sl2, c[h]);
          part[h][kSums - 1] += p;
#pragma unroll
          for (int k = 0; k < kThr; ++k) add_if_below(part[h][k], v, th[h][k], p);
        }
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int k = 0; k < kSums; ++k) sum_at(h, k) += static_cast<double>(part[h][k]);
      } else if constexpr (kPositives) {
        int pc[2] = {0, 0};
#pragma unroll
        for (int i = 0; i < 64; ++i) pc[(i / 2) % 2] += exp2f((value(i) - smax[(i / 2) % 2]) * sl2) > 0.f;
        above[0] += pc[0], above[1] += pc[1];
      } else {
        // The window's scores go to per-lane queues, one a row (slot-major: a lane's slot j of a
        // row lies 128 bytes past its slot j - 1, every lane in a bank of its own): each score is
        // stored to the lane's next slot, which moves on only for a score in the window. A store,
        // an add and a select a score beside the two compares, where a compacted per-warp queue
        // (ballot, ranks, two stores) took thirteen instructions; its drains ran full, these run
        // as many trips as the warp's fullest queue. Pass 3 on the benchmark layer: 99 / 108 ms against 114 / 120
        // (synthetic / normal, run221, H200).
        // Per row: the count below the window's top (32 - it: the count above) and the mass below
        // it (at most 32 terms), by predicated adds (below_top).
        float nbelow[2] = {0.f, 0.f}, bpart[2] = {0.f, 0.f};
#pragma unroll
        for (int i = 0; i < 64; ++i) {
          const int h = (i / 2) % 2;
          const float v = value(i);
          asm volatile("st.shared.f32 [%0], %1;" ::"r"(qa[h]), "f"(v));
          below_top(nbelow[h], bpart[h], qa[h], v, ds::pvalue(v, sl2, c[h]), wlo[h], top[h]);
          if (i % kDrainEvery == kDrainEvery - 1 || i == 63) drain();
        }
        above[0] += 32 - static_cast<int>(nbelow[0]), above[1] += 32 - static_cast<int>(nbelow[1]);
        below[0] += static_cast<double>(bpart[0]), below[1] += static_cast<double>(bpart[1]);
      }
    };
    if (static_cast<std::int64_t>(t + 1) * kCols > nk) run(std::true_type{});
    else run(std::false_type{});
  };

  // An item's end: per row, merge the four lanes and write the pass's results.
  auto end_item = [&] {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const std::int64_t ri = row_of(h);
      const bool ok = ri >= 0;
      const std::int64_t o = static_cast<std::int64_t>(head) * nrows + ri;
      if constexpr (kPass <= 2) {
        double m[kSums];
#pragma unroll
        for (int k = 0; k < kSums; ++k) m[k] = quad_sum(sum_at(h, k));
        if (lane % 4 == 0 && ok) {
          if constexpr (kPass == 1) {
            ds::Window w = ds::coarse_window(m, m[kSums - 1], a.tau, c[h], smax[h], sl2, a.span);
            if (a.interp && ds::is_coarse_step(w, c[h])) {
              a.row_b_hi[o] = ds::coarse_below(m, m[kSums - 1], c[h], w.hi);
              a.row_b_lo[o] = ds::coarse_below(m, m[kSums - 1], c[h], w.lo);
              w = ds::interp_window(m, m[kSums - 1], a.tau, c[h], w, a.interp_width);
            }
            a.row_ref[o] = c[h], a.row_peak[o] = smax[h], a.win_lo[o] = w.lo, a.win_hi[o] = w.hi;
            a.row_total[o] = m[kSums - 1];
          } else {
            const ds::Window w{a.win_lo[o], a.win_hi[o]};
            const ds::Fine f = ds::fine_window(m, m[kSums - 1], a.tau, w, c[h]);
            a.win_lo[o] = f.w.lo, a.win_hi[o] = f.w.hi, a.row_above[o] = f.below, a.row_total[o] = m[kSums - 1];
          }
        }
      } else if constexpr (kPositives) {
        const long long n = quad_sum(above[h]);
        if (lane % 4 == 0 && ok) {
          const std::int32_t cnt = static_cast<std::int32_t>(n > 1 ? n : 1);
          a.counts[o] = a.count_lo[o] = a.count_hi[o] = cnt;
          a.fallback[o] = 0;
        }
      }
    }
    if constexpr (kPass == 3 && !kPositives) {
      __syncwarp();  // the warp's queue drains are in its rows' sub-bins
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const long long n = quad_sum(above[h]);
        const double b = quad_sum(below[h]);
        const std::int64_t ri = row_of(h);
        if (lane % 4 == 0 && ri >= 0) {
          const std::int64_t o = static_cast<std::int64_t>(head) * nrows + ri;
          finish_row(a.win_lo + o, a.win_hi + o, a.counts + o, a.count_lo + o, a.count_hi + o, a.fallback + o,
                     a.row_total[o], a.round == 1 ? a.row_b_hi[o] : 0.0, a.round == 1 ? a.row_b_lo[o] : 0.0, c[h], b,
                     n, nk, hist + lr[h] * ds::kFine, hunits + lr[h] * ds::kFine, a.tau, a.round, a.interp_width);
        }
      }
      __syncwarp();
    }
  };

  // Prologue: Q of items 0 .. kQBufs - 1, key steps 0 .. kStages - 1; step 0 into bank 0. (The
  // launcher sends no block without an item, and keys are never empty: steps >= 1.)
  for (int li = 0; li < kQBufs && li < items; ++li) load_q(li);
  for (int s = 0; s < kStages; ++s) load_next_tile();
  float d0[64], d1[64];
  start_item(0);
  stream.begin(d0, issue);

  using More = std::false_type;
  using Last = std::true_type;
  // One copy of the fold: step g+1's products go to d1 and are moved to d0 once they land. Two
  // copies (the banks swapped, as in assign_wgmma.cu) doubled the hot code and measured 5-8 %
  // slower over the three passes (run51, H100).
  auto step_one = [&](auto last) {
    stream.template step<decltype(last)::value>(d0, d1, issue, fold, end_item, load_next_tile, load_q, start_item);
    if constexpr (!decltype(last)::value) {
      wgmma::fence_regs(d1);
#pragma unroll
      for (int i = 0; i < 64; ++i) d0[i] = d1[i];
    }
  };
  while (stream.g + 1 < steps) step_one(More{});
  step_one(Last{});
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// A later round's list (DensityArgs::list): per head, the rows that pass 3 marked for it (fallback ==
// want), in order, padded with -1 to whole items of kRows. One block a head counts them; one thread places
// each head's items; one block a head writes them.
__global__ void list_count_kernel(const std::uint8_t* fallback, std::int64_t nrows, std::uint8_t want,
                                  std::int32_t* head_count) {
  __shared__ int n;
  if (threadIdx.x == 0) n = 0;
  __syncthreads();
  const std::uint8_t* f = fallback + static_cast<std::int64_t>(blockIdx.x) * nrows;
  int mine = 0;
  for (std::int64_t r = threadIdx.x; r < nrows; r += blockDim.x) mine += f[r] == want;
  atomicAdd(&n, mine);
  __syncthreads();
  if (threadIdx.x == 0) head_count[blockIdx.x] = n;
}
__global__ void list_place_kernel(const std::int32_t* head_count, int heads, std::int32_t* head_item0,
                                  std::int32_t* items) {
  int at = 0;
  for (int h = 0; h < heads; ++h) head_item0[h] = at, at += (head_count[h] + kRows - 1) / kRows;
  *items = at;
}
__global__ void list_write_kernel(const std::uint8_t* fallback, std::int64_t nrows, std::uint8_t want,
                                  const std::int32_t* head_count, const std::int32_t* head_item0, std::int32_t* list,
                                  std::int32_t* list_head) {
  using Scan = cub::BlockScan<int, 256>;
  __shared__ typename Scan::TempStorage tmp;
  const int h = blockIdx.x;
  const std::uint8_t* f = fallback + static_cast<std::int64_t>(h) * nrows;
  std::int32_t* out = list + static_cast<std::int64_t>(head_item0[h]) * kRows;
  int base = 0;
  for (std::int64_t r0 = 0; r0 < nrows; r0 += 256) {
    const std::int64_t r = r0 + threadIdx.x;
    const int flag = r < nrows && f[r] == want;
    int pos, agg;
    Scan(tmp).ExclusiveSum(flag, pos, agg);
    if (flag) out[base + pos] = static_cast<std::int32_t>(r);
    base += agg;
    __syncthreads();  // tmp is reused
  }
  const int n = head_count[h], nitems = (n + kRows - 1) / kRows;
  for (int i = n + static_cast<int>(threadIdx.x); i < nitems * kRows; i += blockDim.x) out[i] = -1;
  for (int i = threadIdx.x; i < nitems; i += blockDim.x) list_head[head_item0[h] + i] = h;
}

template <bool kBf16, int kPass, bool kPositives>
void launch_pass(const DensityArgs& a, unsigned grid, cudaStream_t stream) {
  auto kernel = density_wgmma_kernel<kBf16, kPass, kPositives>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes<kPass>());
  kernel<<<grid, kThreads, smem_bytes<kPass>(), stream>>>(a);
}

// passes (benchmark breakdown): the default search stops after pass 1 (1) or its first pass 3 (2);
// the three passes after pass 1 or 2.
template <bool kBf16>
void launch_all(const DensityArgs& a, unsigned grid, int passes, cudaStream_t stream) {
  launch_pass<kBf16, 1, false>(a, grid, stream);
  if (a.tau >= 1.0) {
    if (passes >= 2) launch_pass<kBf16, 3, true>(a, grid, stream);
    return;
  }
  if (!a.interp) {
    if (passes >= 2) launch_pass<kBf16, 2, false>(a, grid, stream);
    if (passes >= 3) launch_pass<kBf16, 3, false>(a, grid, stream);
    return;
  }
  DensityArgs r = a;
  r.round = 1;
  if (passes >= 2) launch_pass<kBf16, 3, false>(r, grid, stream);
  if (passes < 3) return;
  const auto heads = static_cast<unsigned>(a.q.heads);
  auto list = [&](std::uint8_t want) {
    list_count_kernel<<<heads, 256, 0, stream>>>(a.fallback, a.nrows, want, a.head_count);
    list_place_kernel<<<1, 1, 0, stream>>>(a.head_count, static_cast<int>(a.q.heads), a.head_item0, a.list_items_out);
    list_write_kernel<<<heads, 256, 0, stream>>>(a.fallback, a.nrows, want, a.head_count, a.head_item0, a.list_out,
                                                 a.list_head_out);
  };
  r.list = a.list_out, r.list_head = a.list_head_out, r.list_items = a.list_items_out;
  // The first round's grid: the blocks past a list's items (most, mostly) leave at once.
  list(1);
  r.round = 2;
  launch_pass<kBf16, 3, false>(r, grid, stream);
  list(2);
  r.round = 0;
  launch_pass<kBf16, 2, false>(r, grid, stream);
  launch_pass<kBf16, 3, false>(r, grid, stream);
}

}  // namespace

void launch_density_wgmma_passes(const DensityArgs& a, int passes, cudaStream_t stream) {
  const int sms = sm_count();
  const std::int64_t items = a.q.heads * ((a.nrows + kRows - 1) / kRows);
  const unsigned grid = static_cast<unsigned>(items < sms ? items : sms);
  if (a.q.elem == Elem::bf16) launch_all<true>(a, grid, passes, stream);
  else launch_all<false>(a, grid, passes, stream);
}

}  // namespace svoo::cuda::detail
