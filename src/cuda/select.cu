// Block-pair scores (spec 2.2) and the per-row selection (spec 2.3) on the device, deciding
// exactly as svoo::block_scores_from_logits and svoo::select_row do on the CPU.
//
// launch_block_softmax: one block per (head, query cluster) row, three block-stride passes over
// the row (max over non-empty clusters; weights sk * exp(a - m) and their fp64 total; scale by
// (float)(1 / total)). exp is evaluated in double and rounded to float, which reproduces a
// (nearly) correctly rounded expf like glibc's far more often than CUDA's 2-ulp expf would; the
// fp64 total is a fixed-order tree instead of the CPU's sequential sum, so P can differ from the
// CPU's by an ulp of the final scaling in rare rows.
//
// launch_select sorts each row under the total order (value descending, index ascending), which
// yields exactly the permutation of the CPU's std::stable_sort with `>`, then counts as the CPU.
//   kk <= 1024 (every shape we run): one warp per row, the whole row in registers. Each element
//   is one 64-bit key (order-preserving bits of the value, inverted, above the index), so the
//   order is a strict total order on integers; lane l holds sorted positions [32 l, 32 l + 32).
//   A bitonic network over 1024 keys runs its 40 stages of distance < 32 inside each lane's
//   registers and only 15 stages through shuffles, with no block barrier; a per-warp shared
//   stage only makes the row's load and the keep store coalesced. 0.33 ms for 40 x 256 rows of
//   1024 on an H100, where the block kernel below took 0.77 ms.
//   kk in (1024, 4096]: one block per row, a bitonic network in shared memory over next_pow2(kk)
//   (value, index) pairs, padded with (-inf, kk + t).
// Both then need the top-p count, the first r with c[r-1] > p, c the cumulative sum in sorted
// order: it is found with a scan in fp64; the scan rounds differently from the CPU's sequential
// fp64 sum (by < 1e-12 of the row's mass), so when any cumulative sum lies within
// 1e-9 * (1 + sum |P|) of p, one thread redoes the CPU's sequential loop verbatim and its answer is
// taken. Decisions are therefore identical to the CPU's for the same scores. The count rules
// (floor, cap, paper rule) are the CPU's double arithmetic, with explicit _rn intrinsics so that
// nvcc cannot contract x * n + 1e-9 into an FMA.
#include <cmath>
#include <cstdint>

#include "common.cuh"
#include "kernels.cuh"

namespace svoo::cuda::detail {
namespace {

constexpr int kSoftmaxThreads = 256;
constexpr int kSelectThreads = 256;
constexpr int kWarpRowMax = 1024;  // rows up to this length take the warp kernel (32 keys a lane)

// ---- launch_block_softmax ----

__global__ void __launch_bounds__(kSoftmaxThreads)
    block_softmax_kernel(float* a, const std::int32_t* k_sizes, int kq, int kk, std::int64_t rows) {
  __shared__ float max_scratch[32];
  __shared__ double sum_scratch[32];
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const std::int64_t h = row / kq;
    float* x = a + row * kk;
    const std::int32_t* ks = k_sizes + h * kk;

    float m = -INFINITY;
    for (int j = threadIdx.x; j < kk; j += blockDim.x)
      if (ks[j] > 0) m = max_like_std(m, x[j]);
    m = block_max(m, max_scratch);

    // Weights sk * exp(a - m); an empty cluster weighs nothing. Each thread rewrites only the
    // elements it reads, here and in the scaling pass, so no barrier is needed between them
    // beyond the one inside block_sum.
    double part = 0.0;
    for (int j = threadIdx.x; j < kk; j += blockDim.x) {
      const std::int32_t size = ks[j];
      float w = 0.0f;
      if (size > 0) {
        const float d = x[j] - m;
        const float e = static_cast<float>(exp(static_cast<double>(d)));
        w = __fmul_rn(static_cast<float>(size), e);
      }
      x[j] = w;
      part += static_cast<double>(w);
    }
    const double total = block_sum(part, sum_scratch);
    const float inv = total > 0 ? static_cast<float>(1.0 / total) : 0.0f;
    for (int j = threadIdx.x; j < kk; j += blockDim.x) x[j] = __fmul_rn(x[j], inv);
  }
}

// ---- launch_select ----

// a before b in the sort: larger value first, ties to the lower index.
__device__ __forceinline__ bool before(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

// floor(fraction * n + 1e-9) as svoo's floor_count computes it (no FMA contraction).
__device__ __forceinline__ int floor_count(double fraction, int n) {
  return static_cast<int>(floor(__dadd_rn(__dmul_rn(fraction, static_cast<double>(n)), 1e-9)));
}

// The CPU's top-p loop, verbatim, over the sorted values (the near-tie path of both kernels).
__device__ int sequential_topp(const float* sorted, int kk, double top_p) {
  int n = 1;
  double cum = static_cast<double>(sorted[0]);
  for (int r = 1; r < kk; ++r) {
    if (cum > top_p) break;
    ++n;
    cum = __dadd_rn(cum, static_cast<double>(sorted[r]));
  }
  return n;
}

// Count rules, as select_row (std::clamp / min / max spelled out with their comparisons).
__device__ int count_rule(int n_topp, double prof, const SelectParams& params, int kk) {
  int n = n_topp;
  if (params.rule == 0) {
    const double r_h = prof < params.floor_lo ? params.floor_lo : (params.floor_hi < prof ? params.floor_hi : prof);
    const int n_floor = floor_count(r_h, kk);
    n = max(n_topp, n_floor);
    if (params.cap >= 0) n = min(n, max(max(1, floor_count(params.cap, kk)), n_floor));
  } else {
    const double r = __ddiv_rn(static_cast<double>(n_topp), static_cast<double>(kk));
    const double rho = prof > params.theta ? (prof < r ? prof : r) : (r < prof ? prof : r);
    n = max(1, floor_count(rho, kk));
  }
  return n < 1 ? 1 : (kk < n ? kk : n);
}

__global__ void __launch_bounds__(kSelectThreads)
    select_kernel(const float* scores, const double* profiled, SelectParams params, int kq, int kk, int npow2,
                  std::int64_t rows, std::uint8_t* keep) {
  extern __shared__ float select_smem[];  // [npow2] values, then [npow2] indices
  float* val = select_smem;
  int* idx = reinterpret_cast<int*>(select_smem + npow2);
  __shared__ double dscratch[32];
  __shared__ int iscratch[32];
  const int tid = threadIdx.x, nthreads = blockDim.x;

  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const std::int64_t h = row / kq;
    const float* s = scores + row * kk;
    for (int t = tid; t < npow2; t += nthreads) {
      val[t] = t < kk ? s[t] : -INFINITY;
      idx[t] = t;  // padding gets kk + (t - kk) = t: after every real index
    }
    __syncthreads();

    // Bitonic sort, "ascending" in the `before` order. Within one (k, j) phase the pairs
    // (t, t ^ j) are disjoint, so threads never touch the same slot; phases are separated by a
    // barrier. Compare-exchanges keep idx a permutation of [0, npow2) whatever the values are.
    for (int k = 2; k <= npow2; k <<= 1) {
      for (int j = k >> 1; j > 0; j >>= 1) {
        for (int t = tid; t < npow2; t += nthreads) {
          const int u = t ^ j;
          if (u > t) {
            const float vt = val[t], vu = val[u];
            const int it = idx[t], iu = idx[u];
            const bool up = (t & k) == 0;
            const bool swap = up ? before(vu, iu, vt, it) : before(vt, it, vu, iu);
            if (swap) {
              val[t] = vu;
              val[u] = vt;
              idx[t] = iu;
              idx[u] = it;
            }
          }
        }
        __syncthreads();
      }
    }

    // top-p: n_topp = first r in [1, kk) with c[r-1] > p, else kk (the CPU's loop, which stops at
    // the first cumulative sum above p). Thread t owns sorted positions [r0, r1).
    const double top_p = params.top_p;
    const int chunk = (kk + nthreads - 1) / nthreads;
    const int r0 = min(tid * chunk, kk), r1 = min(r0 + chunk, kk);
    double local = 0.0, local_abs = 0.0;
    for (int r = r0; r < r1; ++r) {
      local += static_cast<double>(val[r]);
      local_abs += fabs(static_cast<double>(val[r]));
    }
    double total = 0.0;
    const double prefix = block_exclusive_scan(local, dscratch, &total);
    const double abs_total = block_sum(local_abs, dscratch);
    // Far above the rounding difference between this scan and a sequential sum (< 1e-12 of the
    // mass for kk <= 4096); a NaN or inf total makes it NaN / inf, which sends the row to the
    // exact path below.
    const double tol = 1e-9 * (1.0 + abs_total);
    int first = kk;
    bool near = false;
    double c = prefix;
    for (int r = r0; r < r1; ++r) {
      c += static_cast<double>(val[r]);  // c = c[r]
      if (r <= kk - 2) {
        if (first == kk && c > top_p) first = r + 1;
        if (!(fabs(c - top_p) > tol)) near = true;
      }
    }
    int n_topp = block_min(first, iscratch);
    if (__syncthreads_or(near)) {
      // A cumulative sum is too close to p for the scan to decide: the CPU's loop, verbatim.
      if (tid == 0) iscratch[0] = sequential_topp(val, kk, top_p);
      __syncthreads();
      n_topp = iscratch[0];
      __syncthreads();
    }

    const int n = count_rule(n_topp, profiled[h], params, kk);

    // Every real index sits at exactly one sorted position, so each keep byte of the row is
    // written exactly once.
    std::uint8_t* out = keep + row * kk;
    for (int t = tid; t < npow2; t += nthreads) {
      const int j = idx[t];
      if (j < kk) out[j] = t < n ? 1 : 0;
    }
    __syncthreads();  // val / idx are rewritten for the next row
  }
}

// ---- warp kernel (kk <= 1024) ----

// Sort key of (value, index): ascending keys = value descending, then index ascending. The
// value's bits are mapped to an unsigned order (negatives reversed, -0 folded onto +0 as the
// CPU's `>` sees them equal) and inverted.
__device__ __forceinline__ std::uint64_t sort_key(float v, int index) {
  std::uint32_t b = v == 0.0f ? 0u : __float_as_uint(v);
  b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return (static_cast<std::uint64_t>(~b) << 32) | static_cast<std::uint32_t>(index);
}
__device__ __forceinline__ float key_value(std::uint64_t key) {
  std::uint32_t b = ~static_cast<std::uint32_t>(key >> 32);
  b = (b & 0x80000000u) ? (b & 0x7fffffffu) : ~b;
  return __uint_as_float(b);
}
__device__ __forceinline__ int key_index(std::uint64_t key) { return static_cast<int>(key & 0xffffffffu); }

constexpr int kPerLane = kWarpRowMax / 32;
// ~150 registers a thread (the row's 32 keys are 64 of them; ptxas, sm_90a): 4-warp blocks,
// three per SM.
constexpr int kWarpThreads = 128;
constexpr int kWarpsPerBlock = kWarpThreads / 32;

// Bitonic sort of 1024 keys, ascending, element e = 32 * lane + r held in key[r].
__device__ __forceinline__ void warp_bitonic_sort(std::uint64_t (&key)[kPerLane], int lane) {
  // Linear counters (not k <<= 1) so that the loops unroll fully and key[] stays in registers.
#pragma unroll
  for (int lk = 1; (1 << lk) <= kWarpRowMax; ++lk) {
    const int k = 1 << lk;
#pragma unroll
    for (int lj = lk - 1; lj >= 0; --lj) {
      const int j = 1 << lj;
      if (j >= kPerLane) {
        // Partner in lane ^ (j / 32), same register. The lower element of an ascending pair
        // (bit k of the position clear) keeps the smaller key.
        const int lane_bit = j / kPerLane;
        const bool lower = (lane & lane_bit) == 0;
        const bool up = ((lane * kPerLane) & k) == 0;
#pragma unroll
        for (int r = 0; r < kPerLane; ++r) {
          const std::uint64_t other = __shfl_xor_sync(kFullMask, key[r], lane_bit);
          const bool take_min = lower == up;
          key[r] = take_min ? (other < key[r] ? other : key[r]) : (other > key[r] ? other : key[r]);
        }
      } else {
#pragma unroll
        for (int r = 0; r < kPerLane; ++r) {
          if ((r & j) != 0) continue;
          const int u = r | j;
          const bool up = (((lane * kPerLane) + r) & k) == 0;
          const std::uint64_t a = key[r], b = key[u];
          const bool swap = up ? (b < a) : (a < b);
          key[r] = swap ? b : a;
          key[u] = swap ? a : b;
        }
      }
    }
  }
}

__global__ void __launch_bounds__(kWarpThreads)
    select_warp_kernel(const float* scores, const double* profiled, SelectParams params, int kq, int kk,
                       std::int64_t rows, std::uint8_t* keep) {
  // Per warp: the row staged for a coalesced load (pitch 33: both the row-major writes and the
  // lane-major reads are conflict-free), then the sorted values on the near-tie path, then the
  // keep flags staged for a coalesced store.
  __shared__ float stage_all[kWarpsPerBlock][32 * 33];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* stage = stage_all[warp];
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kWarpsPerBlock;
  for (std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kWarpsPerBlock + warp; row < rows; row += stride) {
    const std::int64_t h = row / kq;
    const float* s = scores + row * kk;
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const int e = r * 32 + lane;
      stage[r * 33 + lane] = e < kk ? s[e] : -INFINITY;
    }
    __syncwarp();
    std::uint64_t key[kPerLane];
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const int e = lane * kPerLane + r;  // padding (-inf, e) sorts after every real element
      key[r] = sort_key(stage[lane * 33 + r], e);
    }
    __syncwarp();
    warp_bitonic_sort(key, lane);

    // top-p: n_topp = first r in [1, kk) with c[r-1] > p, else kk; lane-local sums, then a warp
    // exclusive scan in fp64.
    const double top_p = params.top_p;
    const int base = lane * kPerLane;
    double local = 0.0, local_abs = 0.0;
#pragma unroll
    for (int r = 0; r < kPerLane; ++r)
      if (base + r < kk) {
        const double v = key_value(key[r]);
        local += v;
        local_abs += fabs(v);
      }
    double incl = local;
    for (int o = 1; o < 32; o <<= 1) {
      const double up = __shfl_up_sync(kFullMask, incl, o);
      if (lane >= o) incl += up;
    }
    const double abs_total = warp_sum(local_abs);
    const double tol = 1e-9 * (1.0 + abs_total);  // see the block kernel
    double c = __shfl_up_sync(kFullMask, incl, 1);  // the sum over earlier lanes
    if (lane == 0) c = 0.0;
    int first = kk;
    bool near = false;
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const int pos = base + r;
      if (pos <= kk - 2) {
        c += static_cast<double>(key_value(key[r]));  // c = c[pos]
        if (first == kk && c > top_p) first = pos + 1;
        if (!(fabs(c - top_p) > tol)) near = true;
      }
    }
    int n_topp = warp_min(first);
    if (__any_sync(kFullMask, near)) {
#pragma unroll
      for (int r = 0; r < kPerLane; ++r)
        if (base + r < kk) stage[base + r] = key_value(key[r]);
      __syncwarp();
      if (lane == 0) n_topp = sequential_topp(stage, kk, top_p);
      n_topp = __shfl_sync(kFullMask, n_topp, 0);
      __syncwarp();
    }
    const int n = count_rule(n_topp, profiled[h], params, kk);

    // Every real index sits at exactly one sorted position: each flag is written once, then the
    // row's flags go out coalesced.
    auto* flags = reinterpret_cast<std::uint8_t*>(stage);
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const int j = key_index(key[r]);
      if (j < kk) flags[j] = base + r < n ? 1 : 0;
    }
    __syncwarp();
    std::uint8_t* out = keep + row * kk;
    if (kk % 4 == 0) {  // rows start on 4-byte boundaries (the keep array is 256-byte aligned)
      for (int w = lane; w < kk / 4; w += 32)
        reinterpret_cast<std::uint32_t*>(out)[w] = reinterpret_cast<const std::uint32_t*>(flags)[w];
    } else {
      for (int j = lane; j < kk; j += 32) out[j] = flags[j];
    }
    __syncwarp();  // the stage is rewritten for the warp's next row
  }
}

int next_pow2(int n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

}  // namespace

void launch_block_softmax(float* a, const std::int32_t* k_sizes, int heads, int kq, int kk, cudaStream_t stream) {
  if (heads <= 0 || kq <= 0 || kk <= 0) return;
  const std::int64_t rows = static_cast<std::int64_t>(heads) * kq;
  block_softmax_kernel<<<grid_for_items(rows), kSoftmaxThreads, 0, stream>>>(a, k_sizes, kq, kk, rows);
}

void launch_select(const float* scores, const double* profiled, const SelectParams& params, int heads, int kq, int kk,
                   std::uint8_t* keep, cudaStream_t stream) {
  if (heads <= 0 || kq <= 0 || kk <= 0) return;
  const std::int64_t rows = static_cast<std::int64_t>(heads) * kq;
  if (kk <= kWarpRowMax) {
    const std::int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
    select_warp_kernel<<<grid_for_items(blocks), kWarpThreads, 0, stream>>>(scores, profiled, params, kq, kk, rows,
                                                                               keep);
    return;
  }
  const int npow2 = next_pow2(kk);
  const std::size_t smem = static_cast<std::size_t>(npow2) * (sizeof(float) + sizeof(int));
  // 32 KB at kk = 4096; larger rows (beyond the contract) need the opt-in above 48 KB, and fail
  // to launch (reported by the caller's cudaGetLastError) past the device's limit.
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(select_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  select_kernel<<<grid_for_items(rows), kSelectThreads, smem, stream>>>(scores, profiled, params, kq, kk, npow2, rows,
                                                                        keep);
}

}  // namespace svoo::cuda::detail
