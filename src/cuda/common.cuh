// Internal: tiny device helpers shared by the CUDA kernels of select.cu, layout.cu, permute.cu
// and recall.cu: element loads (bf16 / f16 -> float, chosen at compile time through a tag type),
// warp and block reductions written with shuffles (so the order of every floating-point
// reduction is fixed by the block size and thus deterministic run to run), and a launcher-side
// helper that bounds a 1-D grid. Nothing here allocates or synchronises with the host.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.cuh"

namespace svoo::cuda::detail {

// ---- element types ----

struct Bf16Tag {
  using type = __nv_bfloat16;
};
struct F16Tag {
  using type = __half;
};

__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

// Element `i` of a bf16 / f16 array, as float.
template <class Tag>
__device__ __forceinline__ float load_elem(const void* base, std::int64_t i) {
  return to_float(static_cast<const typename Tag::type*>(base)[i]);
}

// ---- reductions (blockDim.x must be a multiple of 32, at most 1024) ----

constexpr unsigned kFullMask = 0xffffffffu;

// Max as std::max(a, b) spells it: (a < b) ? b : a (a NaN in b is ignored, as on the CPU).
__device__ __forceinline__ float max_like_std(float a, float b) { return (a < b) ? b : a; }

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = max_like_std(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
__device__ __forceinline__ int warp_min(int v) {
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Block-wide reductions; every thread gets the result. `scratch` holds 32 values and is reused
// only after the trailing __syncthreads, so back-to-back calls are safe. Must be called by all
// threads of the block (it synchronises).
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = scratch[0];
  for (int w = 1; w < nwarps; ++w) r = max_like_std(r, scratch[w]);
  __syncthreads();
  return r;
}
__device__ __forceinline__ double block_sum(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double r = 0.0;
  for (int w = 0; w < nwarps; ++w) r += scratch[w];
  __syncthreads();
  return r;
}
__device__ __forceinline__ int block_min(int v, int* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_min(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  int r = scratch[0];
  for (int w = 1; w < nwarps; ++w) r = min(r, scratch[w]);
  __syncthreads();
  return r;
}

// Exclusive prefix sum over the block (thread t gets the sum of the values of threads < t) and
// the block total. The order of additions depends only on blockDim.x.
__device__ __forceinline__ double block_exclusive_scan(double v, double* scratch, double* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  double incl = v;  // inclusive scan within the warp (Hillis-Steele)
  for (int o = 1; o < 32; o <<= 1) {
    const double up = __shfl_up_sync(kFullMask, incl, o);
    if (lane >= o) incl += up;
  }
  double excl = __shfl_up_sync(kFullMask, incl, 1);
  if (lane == 0) excl = 0.0;
  if (lane == 31) scratch[warp] = incl;
  __syncthreads();
  double before = 0.0, all = 0.0;
  for (int w = 0; w < nwarps; ++w) {
    if (w == warp) before = all;
    all += scratch[w];
  }
  __syncthreads();
  *total = all;
  return before + excl;
}

// ---- launch geometry ----

// Blocks for a block-stride loop over `items` work items (one block each), kept far below the
// 2^31 - 1 limit of gridDim.x; the kernels loop when there are more items than blocks.
inline unsigned grid_for_items(std::int64_t items) {
  constexpr std::int64_t kMaxBlocks = std::int64_t{1} << 20;
  return static_cast<unsigned>(items < kMaxBlocks ? items : kMaxBlocks);
}

}  // namespace svoo::cuda::detail
