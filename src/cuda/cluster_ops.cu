// Clustering steps around the fused assignment: anchors, centroid updates, projections.
//
// A centroid update needs each cluster's members. A stable sort of the tokens by label
// (label_sort.cu) groups them, in token order within a cluster, deterministically; the sorted token
// indices are also exactly the permutation the block layout needs, so the last update of a plan
// yields it for free. Each cluster's mean is then summed by one block in a fixed order (no
// atomics), so a plan is bitwise reproducible.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cub/cub.cuh>

#include "../core/splitmix.hpp"
#include "cluster_ops.cuh"

namespace svoo::cuda::detail {
namespace {

__device__ __forceinline__ float load_elem(const void* base, Elem e, std::int64_t i) {
  if (e == Elem::bf16) return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
  return __half2float(static_cast<const __half*>(base)[i]);
}

// One block per head. Draw i of the CPU's sequence (kq query anchors, then kk key anchors) is
// output i of the head's generator whenever no earlier output was rejected, so every thread takes
// its draws straight from output_at. Rejections (an output under 2^64 mod bound: a chance under
// 2^-47 a draw at 75,600 tokens) are detected, and a head that has one is redrawn sequentially,
// exactly as the CPU does. The sequential loop alone took ~0.3 ms at 40 heads x 1280 draws (one
// thread a head, two 64-bit divisions a draw).
__global__ void draw_anchors_kernel(std::int64_t q_tokens, std::int64_t k_tokens, int kq, int kk, std::uint64_t seed,
                                    std::int32_t* q, std::int32_t* k) {
  using ::svoo::detail::SplitMix64;
  const int h = blockIdx.x;
  const std::uint64_t s = ::svoo::detail::mix_seed(seed, static_cast<std::uint64_t>(h));
  const std::uint64_t reject_q = SplitMix64::reject_below(static_cast<std::uint64_t>(q_tokens));
  const std::uint64_t reject_k = SplitMix64::reject_below(static_cast<std::uint64_t>(k_tokens));
  bool rejected = false;
  for (int i = threadIdx.x; i < kq + kk; i += blockDim.x) {
    const std::uint64_t r = SplitMix64::output_at(s, static_cast<std::uint64_t>(i));
    if (i < kq) {
      rejected |= r < reject_q;
      q[static_cast<std::int64_t>(h) * kq + i] = static_cast<std::int32_t>(r % static_cast<std::uint64_t>(q_tokens));
    } else {
      rejected |= r < reject_k;
      k[static_cast<std::int64_t>(h) * kk + i - kq] =
          static_cast<std::int32_t>(r % static_cast<std::uint64_t>(k_tokens));
    }
  }
  if (__syncthreads_or(rejected) && threadIdx.x == 0) {
    SplitMix64 rng(s);
    for (int i = 0; i < kq; ++i) q[static_cast<std::int64_t>(h) * kq + i] = static_cast<std::int32_t>(rng.below(q_tokens));
    for (int j = 0; j < kk; ++j) k[static_cast<std::int64_t>(h) * kk + j] = static_cast<std::int32_t>(rng.below(k_tokens));
  }
}

// One warp a centroid row (h * clusters + i), 8 a block: a block a row left most of its 128
// threads idle after one 2-byte load each (0.042 ms for 40 x 1280 rows, run46).
__global__ void gather_centroids_kernel(RowsView x, const std::int32_t* anchors, std::int64_t rows, int clusters,
                                        float* c) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  const std::int64_t h = row / clusters;
  const std::int64_t n = anchors[row];
  for (std::int64_t d = threadIdx.x % 32; d < x.dim; d += 32)
    c[row * x.dim + d] = load_elem(x.data, x.elem, h * x.head_stride + n * x.row_stride + d);
}

// m[row] = p[row] / |g_row| rounded to bf16/f16, with |g_row|^2 = <p[row], c[row]> (see
// launch_project_rows), summed in double; the norm is floored at 1e-12 as rownorm is in the spec.
// One warp a row.
__global__ void project_rows_kernel(const float* p, const float* c, std::int64_t rows, int dim, Elem e, void* m) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float* pr = p + row * dim;
  const float* cr = c + row * dim;
  double ss = 0.0;
  for (int d = lane; d < dim; d += 32) ss += static_cast<double>(pr[d]) * cr[d];
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  const float inv = static_cast<float>(1.0 / fmax(sqrt(fmax(ss, 0.0)), 1e-12));
  for (int d = lane; d < dim; d += 32) {
    if (e == Elem::bf16) static_cast<__nv_bfloat16*>(m)[row * dim + d] = __float2bfloat16_rn(pr[d] * inv);
    else static_cast<__half*>(m)[row * dim + d] = __float2half_rn(pr[d] * inv);
  }
}

__global__ void round_kernel(const float* src, std::int64_t count, Elem e, void* dst) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    if (e == Elem::bf16) {
      static_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16_rn(src[i]);
    } else {
      static_cast<__half*>(dst)[i] = __float2half_rn(src[i]);
    }
  }
}

__global__ void half_norm_bias_kernel(const float* c, std::int64_t rows, int dim, float* bias) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  double ss = 0.0;
  for (int d = lane; d < dim; d += 32) ss += static_cast<double>(c[row * dim + d]) * c[row * dim + d];
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  if (lane == 0) bias[row] = static_cast<float>(-0.5 * ss);
}

// One block per (head, cluster): 8 warps take member rows in turn (4 loads in flight each, so a
// cluster of thousands of rows does not serialise on memory latency), each lane 4 dims; the
// warps' partial sums are added in a fixed order, so the result is deterministic. Tried: a warp
// fetching 32 member indices at once and taking them by shuffle, 8 rows in flight: slower (run46,
// H100, 40 x 75,600 keys: 0.39 against 0.31 ms).
constexpr int kCentroidWarps = 8;
__global__ void __launch_bounds__(kCentroidWarps * 32) centroid_kernel(RowsView x, const std::int32_t* perm,
                                                                       const std::int32_t* offsets,
                                                                       const std::int32_t* sizes, int clusters,
                                                                       float* centroids) {
  __shared__ float part[kCentroidWarps][128];
  const std::int64_t hc = blockIdx.x;
  const std::int64_t h = hc / clusters, c = hc % clusters;
  const int size = sizes[hc];
  if (size == 0) return;  // empty: keeps its previous centroid
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int32_t* members = perm + h * x.tokens + offsets[h * (clusters + 1) + c];
  const int dim = static_cast<int>(x.dim);
  // A lane's 4 dims as one 8-byte load where rows and dims allow it (the same sums, in the same order).
  const bool vec = dim % 4 == 0 && x.head_stride % 4 == 0 && x.row_stride % 4 == 0 &&
                   reinterpret_cast<std::uintptr_t>(x.data) % 8 == 0;
  for (int d0 = 0; d0 < dim; d0 += 128) {
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    if (vec && d0 + lane * 4 < dim) {
#pragma unroll 4
      for (int m = warp; m < size; m += kCentroidWarps) {
        const std::int64_t base = h * x.head_stride + static_cast<std::int64_t>(members[m]) * x.row_stride;
        const uint2 raw = *reinterpret_cast<const uint2*>(static_cast<const std::uint16_t*>(x.data) + base + d0 + lane * 4);
        float v[4];
        if (x.elem == Elem::bf16) {
          const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
          const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
          v[0] = lo.x, v[1] = lo.y, v[2] = hi.x, v[3] = hi.y;
        } else {
          const float2 lo = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
          const float2 hi = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
          v[0] = lo.x, v[1] = lo.y, v[2] = hi.x, v[3] = hi.y;
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[e] += v[e];
      }
    } else if (!vec) {
#pragma unroll 4
      for (int m = warp; m < size; m += kCentroidWarps) {
        const std::int64_t base = h * x.head_stride + static_cast<std::int64_t>(members[m]) * x.row_stride;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int d = d0 + lane * 4 + e;
          if (d < dim) acc[e] += load_elem(x.data, x.elem, base + d);
        }
      }
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) part[warp][lane * 4 + e] = acc[e];
    __syncthreads();
    const int d = d0 + threadIdx.x;
    if (threadIdx.x < 128 && d < dim) {
      float sum = 0.f;
#pragma unroll
      for (int w = 0; w < kCentroidWarps; ++w) sum += part[w][threadIdx.x];
      centroids[hc * dim + d] = sum / static_cast<float>(size);
    }
    __syncthreads();
  }
}

int blocks_for(std::int64_t items, int threads) {
  const std::int64_t b = (items + threads - 1) / threads;
  return static_cast<int>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

}  // namespace

void launch_draw_anchors(int heads, std::int64_t q_tokens, std::int64_t k_tokens, int kq, int kk, std::uint64_t seed,
                         std::int32_t* q, std::int32_t* k, cudaStream_t stream) {
  if (heads == 0) return;
  draw_anchors_kernel<<<heads, 256, 0, stream>>>(q_tokens, k_tokens, kq, kk, seed, q, k);
}

void launch_gather_centroids(const RowsView& x, const std::int32_t* anchors, int clusters, float* centroids,
                             cudaStream_t stream) {
  if (x.heads == 0 || clusters == 0) return;
  const std::int64_t rows = x.heads * clusters;
  gather_centroids_kernel<<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(x, anchors, rows, clusters,
                                                                                     centroids);
}

namespace {

// The Gram matrix C^T C of a [other_k, dim] side is split along other_k into chunks of at least
// 128 rows (at most 8): with 1024 rows, one 128 x 128 product a head is 4 blocks of 64 x 64 over a
// 1024-long k, too few for the GPU (0.058 ms at 40 heads on an H100, run44). Each head's rows are
// contiguous, so the chunks are a batch of heads * splits plain products, summed in a fixed order.
int gram_splits(int other_k) {
  for (int s : {8, 4, 2})
    if (other_k % s == 0 && other_k / s >= 128) return s;
  return 1;
}

__global__ void sum_splits_kernel(const float* parts, std::int64_t heads, int per_head, int splits, float* out) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < heads * per_head;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t h = i / per_head, e = i % per_head;
    const float* p = parts + h * splits * per_head + e;
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) sum += p[static_cast<std::int64_t>(s) * per_head];
    out[i] = sum;
  }
}

}  // namespace

std::int64_t project_gram_floats(int heads, int other_k, int dim) {
  const int splits = gram_splits(other_k);
  return static_cast<std::int64_t>(heads) * dim * dim * (splits > 1 ? splits + 1 : 1);
}

void launch_project_rows(int heads, int own_k, int other_k, int dim, const float* own, const float* other,
                         float* gram, float* p, Elem elem, void* m, cudaStream_t stream) {
  if (heads == 0 || own_k == 0) return;
  const int splits = gram_splits(other_k);
  if (splits > 1) {
    float* parts = gram + static_cast<std::int64_t>(heads) * dim * dim;
    launch_gemm_tn(heads * splits, dim, dim, other_k / splits, other, other, parts, stream);
    sum_splits_kernel<<<blocks_for(static_cast<std::int64_t>(heads) * dim * dim, 256), 256, 0, stream>>>(
        parts, heads, dim * dim, splits, gram);
  } else {
    launch_gemm_tn(heads, dim, dim, other_k, other, other, gram, stream);
  }
  launch_gemm_nn(heads, own_k, dim, dim, own, gram, p, stream);
  const std::int64_t rows = static_cast<std::int64_t>(heads) * own_k;
  project_rows_kernel<<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(p, own, rows, dim, elem, m);
}

void launch_round(const float* src, std::int64_t count, Elem elem, void* dst, cudaStream_t stream) {
  if (count == 0) return;
  round_kernel<<<blocks_for(count, 256), 256, 0, stream>>>(src, count, elem, dst);
}

void launch_half_norm_bias(const float* c, std::int64_t rows, int dim, float* bias, cudaStream_t stream) {
  if (rows == 0) return;
  half_norm_bias_kernel<<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(c, rows, dim, bias);
}

std::size_t scan64_temp_bytes(std::int64_t items) {
  std::size_t bytes = 0;
  cub::DeviceScan::ExclusiveSum(nullptr, bytes, static_cast<std::int64_t*>(nullptr),
                                static_cast<std::int64_t*>(nullptr), static_cast<int>(items));
  return bytes;
}

void launch_update_side(const RowsView* x, const std::int32_t* labels, std::int64_t heads, std::int64_t tokens,
                        int clusters, const SortScratch& s, std::int32_t* sizes, std::int32_t* offsets,
                        std::int32_t* perm, float* centroids, cudaStream_t stream) {
  const std::int64_t items = heads * tokens;
  if (items == 0) return;
  launch_sort_labels(labels, heads, tokens, clusters, s, sizes, offsets, perm, stream);
  if (x && centroids)
    centroid_kernel<<<static_cast<unsigned>(heads * clusters), kCentroidWarps * 32, 0, stream>>>(*x, perm, offsets,
                                                                                                 sizes, clusters,
                                                                                                 centroids);
}

void launch_scan64(const std::int64_t* counts, std::int64_t items, std::int64_t* range_ptr, void* temp,
                   std::size_t temp_bytes, cudaStream_t stream) {
  std::size_t bytes = temp_bytes;
  cub::DeviceScan::ExclusiveSum(temp, bytes, counts, range_ptr, static_cast<int>(items + 1), stream);
}

}  // namespace svoo::cuda::detail
