// Attention recall (spec 3) on the device, as svoo::attention_recall computes it on the CPU: for
// each sampled query row, fp32 logits s * q.k over all keys (s = 1/sqrt(dim)), m = their max, and
// the fp64 sums of exp(logit - m) over all keys and over the kept keys (key n is kept iff
// keep[h, q_labels[h, row], k_labels[h, n]]); recall[h] = mean over rows of kept / all.
//
// A measure, not the hot path, and the launcher has no scratch memory, so the design favours
// determinism and simplicity over speed: one block per head (grid = heads), which loops over the
// sampled rows in batches of kRowBatch rows. A batch's q rows are staged as fp32 in shared memory;
// each thread takes keys n = tid, tid + blockDim, ... and computes the batch's kRowBatch dot
// products per key (k read once per pass for the whole batch, fp32 FMA in d order). Two passes
// per batch: the first finds each row's max logit, the second recomputes the logits and sums
// exp(logit - m) in fp64 (so exp sees the CPU's float difference logit - m). Block reductions have
// a fixed order and thread 0 adds the rows' ratios in row order, so the result is bitwise
// reproducible run to run. 256 threads: the 8-row batch needs ~176 registers per thread (at 512
// threads the 128-register cap spills). Cost ~ 2 * nrows * k_tokens * dim FMAs per head on one SM:
// sample rows (a few hundred to a few thousand) at 120k tokens rather than passing every row.
// The logits are not bitwise the CPU's (its BLAS sums in another order), so expect agreement to
// ~1e-6 relative, not bitwise. A sampled row outside [0, q_tokens), or a label outside its range,
// contributes nothing kept (the row still counts in the mean).
#include <cmath>
#include <cstdint>

#include "common.cuh"
#include "kernels.cuh"

namespace svoo::cuda::detail {
namespace {

constexpr int kRecallThreads = 256;
constexpr int kRowBatch = 8;

template <class KTag>
__global__ void __launch_bounds__(kRecallThreads)
    recall_kernel(RowsView q, RowsView k, const std::int32_t* q_labels, const std::int32_t* k_labels,
                  const std::uint8_t* keep, int kq, int kk, const std::int64_t* rows, int nrows, double* recall) {
  extern __shared__ float recall_qs[];  // [kRowBatch][dim] fp32 copies of the batch's q rows
  __shared__ float fscratch[32];
  __shared__ double dscratch[32];
  __shared__ const std::uint8_t* keep_rows[kRowBatch];  // the row's query-cluster keep row, or null
  __shared__ float row_max[kRowBatch];

  const int tid = threadIdx.x, nthreads = blockDim.x;
  const std::int64_t dim = q.dim, nk = k.tokens;
  const float scale = 1.0f / sqrtf(static_cast<float>(dim));

  for (std::int64_t h = blockIdx.x; h < q.heads; h += gridDim.x) {
    const std::int32_t* lq = q_labels + h * q.tokens;
    const std::int32_t* lk = k_labels + h * nk;
    const void* kbase = static_cast<const char*>(k.data) + 2 * (h * k.head_stride);  // 2-byte elements
    double total = 0.0;  // thread 0's running sum of the rows' ratios

    for (int b0 = 0; b0 < nrows; b0 += kRowBatch) {
      const int nb = min(kRowBatch, nrows - b0);
      // Stage the batch (rows past nb, or invalid ones, as zeros).
      for (std::int64_t t = tid; t < kRowBatch * dim; t += nthreads) {
        const int r = static_cast<int>(t / dim);
        const std::int64_t d = t - r * dim;
        float x = 0.0f;
        if (r < nb) {
          const std::int64_t row = rows[b0 + r];
          if (row >= 0 && row < q.tokens) {
            const std::int64_t at = h * q.head_stride + row * q.row_stride + d;
            x = q.elem == Elem::bf16 ? load_elem<Bf16Tag>(q.data, at) : load_elem<F16Tag>(q.data, at);
          }
        }
        recall_qs[t] = x;
      }
      if (tid < kRowBatch) {
        const std::uint8_t* kr = nullptr;
        if (tid < nb) {
          const std::int64_t row = rows[b0 + tid];
          if (row >= 0 && row < q.tokens) {
            const std::int32_t c = lq[row];
            if (c >= 0 && c < kq) kr = keep + (h * kq + c) * static_cast<std::int64_t>(kk);
          }
        }
        keep_rows[tid] = kr;
      }
      __syncthreads();

      // acc[r] = <q_r, k_n> for the batch's rows, fp32 in dimension order (the CPU's order).
      auto dots = [&](std::int64_t n, float (&acc)[kRowBatch]) {
#pragma unroll
        for (int r = 0; r < kRowBatch; ++r) acc[r] = 0.0f;
        const std::int64_t kat = n * k.row_stride;
        for (std::int64_t d = 0; d < dim; ++d) {
          const float kd = load_elem<KTag>(kbase, kat + d);
#pragma unroll
          for (int r = 0; r < kRowBatch; ++r) acc[r] = fmaf(recall_qs[r * dim + d], kd, acc[r]);
        }
      };
      // Pass 1: the max logit of each row.
      float mloc[kRowBatch];
#pragma unroll
      for (int r = 0; r < kRowBatch; ++r) mloc[r] = -INFINITY;
      for (std::int64_t n = tid; n < nk; n += nthreads) {
        float acc[kRowBatch];
        dots(n, acc);
#pragma unroll
        for (int r = 0; r < kRowBatch; ++r) mloc[r] = max_like_std(mloc[r], __fmul_rn(scale, acc[r]));
      }
#pragma unroll
      for (int r = 0; r < kRowBatch; ++r) {
        const float m = block_max(mloc[r], fscratch);
        if (tid == 0) row_max[r] = m;
      }
      __syncthreads();

      // Pass 2: fp64 sums of exp(logit - m), over all keys and over the kept ones.
      // row_max and keep_rows are read from shared memory (a broadcast) inside the loop, which
      // keeps the kernel within 128 registers at 512 threads without spilling.
      double all[kRowBatch], kept[kRowBatch];
#pragma unroll
      for (int r = 0; r < kRowBatch; ++r) all[r] = kept[r] = 0.0;
      for (std::int64_t n = tid; n < nk; n += nthreads) {
        float acc[kRowBatch];
        dots(n, acc);
        const std::int32_t c = lk[n];
        const bool label_ok = c >= 0 && c < kk;
#pragma unroll
        for (int r = 0; r < kRowBatch; ++r) {
          const float logit = __fmul_rn(scale, acc[r]);  // rounded before the subtraction, as on the CPU
          const double e = exp(static_cast<double>(logit - row_max[r]));
          all[r] += e;
          const std::uint8_t* kr = keep_rows[r];
          if (label_ok && kr != nullptr && kr[c]) kept[r] += e;
        }
      }
#pragma unroll
      for (int r = 0; r < kRowBatch; ++r) {
        const double a = block_sum(all[r], dscratch);
        const double kp = block_sum(kept[r], dscratch);
        if (tid == 0 && r < nb) total += kp / a;
      }
      // block_sum ends with a barrier: recall_qs, keep_rows and row_max are free for the next batch.
    }
    if (tid == 0) recall[h] = total / static_cast<double>(nrows);
  }
}

}  // namespace

void launch_recall(const RowsView& q, const RowsView& k, const std::int32_t* q_labels, const std::int32_t* k_labels,
                   const std::uint8_t* keep, int kq, int kk, const std::int64_t* rows, int nrows, double* recall,
                   cudaStream_t stream) {
  if (q.heads <= 0 || q.tokens <= 0 || q.dim <= 0 || k.tokens <= 0 || kq <= 0 || kk <= 0 || nrows <= 0) return;
  // The contract: q and k share heads and dim (checked by the caller); never read out of bounds.
  if (k.heads != q.heads || k.dim != q.dim) return;
  const std::size_t smem = static_cast<std::size_t>(kRowBatch) * static_cast<std::size_t>(q.dim) * sizeof(float);
  const unsigned blocks = grid_for_items(q.heads);
  if (k.elem == Elem::bf16) {
    if (smem > 48 * 1024)
      cudaFuncSetAttribute(recall_kernel<Bf16Tag>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    recall_kernel<Bf16Tag>
        <<<blocks, kRecallThreads, smem, stream>>>(q, k, q_labels, k_labels, keep, kq, kk, rows, nrows, recall);
  } else {
    if (smem > 48 * 1024)
      cudaFuncSetAttribute(recall_kernel<F16Tag>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    recall_kernel<F16Tag>
        <<<blocks, kRecallThreads, smem, stream>>>(q, k, q_labels, k_labels, keep, kq, kk, rows, nrows, recall);
  }
}

}  // namespace svoo::cuda::detail
