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
// launch_select: one block per row. The row is sorted in shared memory by a bitonic network over
// next_pow2(kk) (value, index) pairs under the total order (value descending, index ascending),
// padded with (-inf, kk + t). A bitonic network is data-independent, needs no extra memory beyond
// the pairs (8 bytes each: 32 KB at kk = 4096), and under a total order yields exactly the
// permutation of the CPU's std::stable_sort with `>`. The top-p count needs the first r with
// c[r-1] > p, c the cumulative sum in sorted order: it is found with a block scan in fp64; the
// scan rounds differently from the CPU's sequential fp64 sum (by < 1e-12 of the row's mass), so
// when any cumulative sum lies within 1e-9 * (1 + sum |P|) of p, thread 0 redoes the CPU's
// sequential loop verbatim and its answer is taken. Decisions are therefore identical to the CPU's
// for the same scores. The count rules (floor, cap, paper rule) are the CPU's double arithmetic,
// with explicit _rn intrinsics so that nvcc cannot contract x * n + 1e-9 into an FMA.
#include <cmath>
#include <cstdint>

#include "common.cuh"
#include "kernels.cuh"

namespace svoo::cuda::detail {
namespace {

constexpr int kSoftmaxThreads = 256;
constexpr int kSelectThreads = 256;

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
      if (tid == 0) {
        int n = 1;
        double cum = static_cast<double>(val[0]);
        for (int r = 1; r < kk; ++r) {
          if (cum > top_p) break;
          ++n;
          cum = __dadd_rn(cum, static_cast<double>(val[r]));
        }
        iscratch[0] = n;
      }
      __syncthreads();
      n_topp = iscratch[0];
      __syncthreads();
    }

    // Count rules, as select_row (std::clamp / min / max spelled out with their comparisons).
    const double prof = profiled[h];
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
    n = n < 1 ? 1 : (kk < n ? kk : n);

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
