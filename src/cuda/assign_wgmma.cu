// The assignment of assign.cu on Hopper's warpgroup tensor cores (wgmma, sm_90a): the same
// fused product + argmax, with operands read by the tensor cores straight from shared memory in
// the 128-byte-swizzled K-major layout instead of through ldmatrix and registers. A block owns 128
// rows (64 per warpgroup) and streams centroids 128 at a time; each wgmma is m64 n128 k16 with
// fp32 accumulators (64 registers a thread), folded into a running (max, lowest index) per row.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstdint>

#include "kernels.cuh"
#include "ptx.cuh"
#include "wgmma.cuh"

namespace svoo::cuda::detail {

// True where this build has the kernel (sm_90a code) and the device can run it.
bool assign_wgmma_available();
void launch_assign_wgmma(const RowsView& x, const void* m, const float* bias, int clusters, std::int32_t* labels,
                         cudaStream_t stream);

namespace {

[[maybe_unused]] constexpr int kDim = 128, kRows = 128, kCols = 128, kThreads = 256;
constexpr int kChunkBytes = 128 * 128;                    // one 64-wide K chunk of 128 rows
constexpr int kTileBytes = 2 * kChunkBytes;               // 128 rows x 128 K, bf16
constexpr int kSmemBytes = kTileBytes * 3 + 1024;         // X + 2 centroid stages + alignment slack

[[maybe_unused]] __device__ __forceinline__ int swizzled(int r, int c16) { return wgmma::swizzled(r, c16, kChunkBytes); }
[[maybe_unused]] __device__ __forceinline__ std::uint64_t descriptor(const void* p) { return wgmma::descriptor(p, 16, 1024); }

[[maybe_unused]] __device__ __forceinline__ bool better(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

[[maybe_unused]] __device__ __forceinline__ void load_rows(unsigned char* dst, const std::uint16_t* src, std::int64_t row0,
                                          std::int64_t rows, std::int64_t stride) {
  for (int e = threadIdx.x; e < 128 * 16; e += kThreads) {
    const int r = e >> 4, c16 = e & 15;
    const std::int64_t n = row0 + r;
    const bool ok = n < rows;
    ptx::cp_async16(dst + swizzled(r, c16), src + (ok ? n : 0) * stride + c16 * 8, ok ? 16 : 0);
  }
}

template <bool kBf16>
__global__ void __launch_bounds__(kThreads, 1)
    assign_wgmma_kernel(const std::uint16_t* __restrict__ x, std::int64_t tokens, std::int64_t head_stride,
                        std::int64_t row_stride, const std::uint16_t* __restrict__ m, const float* __restrict__ bias,
                        int clusters, std::int32_t* __restrict__ labels) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  // The swizzle pattern repeats every 1024 bytes: align the tiles to it.
  unsigned char* base = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) & ~static_cast<std::uintptr_t>(1023));
  unsigned char* sx = base;
  unsigned char* sm = base + kTileBytes;  // 2 stages
  const int head = blockIdx.y;
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) * kRows;
  const std::uint16_t* mh = m + static_cast<std::int64_t>(head) * clusters * kDim;
  const float* bh = bias ? bias + static_cast<std::int64_t>(head) * clusters : nullptr;
  const int tiles = (clusters + kCols - 1) / kCols;
  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;

  load_rows(sx, x + head * head_stride, row0, tokens, row_stride);
  load_rows(sm, mh, 0, clusters, kDim);
  ptx::cp_async_commit();
  if (tiles > 1) load_rows(sm + kTileBytes, mh, kCols, clusters, kDim);
  ptx::cp_async_commit();

  float best_v[2] = {-FLT_MAX, -FLT_MAX};
  int best_i[2] = {0x7fffffff, 0x7fffffff};
  float d[64];
  for (int t = 0; t < tiles; ++t) {
    ptx::cp_async_wait<1>();
    wgmma::fence_async_shared();  // cp.async writes -> tensor-core reads
    __syncthreads();
    const unsigned char* tile = sm + (t & 1) * kTileBytes;
    wgmma::fence();
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks) {
      const int kc = ks / 4, koff = (ks % 4) * 32;
      const std::uint64_t da = descriptor(sx + kc * kChunkBytes + wg * 64 * 128 + koff);
      const std::uint64_t db = descriptor(tile + kc * kChunkBytes + koff);
      wgmma::m64n128k16_ss<kBf16>(d, da, db, ks > 0 ? 1 : 0);
    }
    wgmma::commit();
    wgmma::wait<0>();
    // Fold: element i of d is row 16*warp + 8*((i/2)%2) + lane/4, column 8*(i/4) + 2*(lane%4) + i%2.
    if (bh || (t + 1) * kCols > clusters) {
#pragma unroll
      for (int i = 0; i < 64; ++i) {
        const int j = t * kCols + 8 * (i / 4) + 2 * (lane % 4) + (i % 2);
        d[i] = j < clusters ? d[i] + (bh ? __ldg(bh + j) : 0.0f) : -FLT_MAX;
      }
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float mx = -FLT_MAX;
#pragma unroll
      for (int i = 0; i < 64; ++i)
        if ((i / 2) % 2 == half) mx = fmaxf(mx, d[i]);
      if (mx > best_v[half]) {
        int found = 0x7fffffff;
#pragma unroll
        for (int i = 63; i >= 0; --i)
          if ((i / 2) % 2 == half && d[i] == mx) found = t * kCols + 8 * (i / 4) + 2 * (lane % 4) + (i % 2);
        best_v[half] = mx;
        best_i[half] = found;
      }
    }
    __syncthreads();  // both warpgroups are done with this stage before it is refilled
    if (t + 2 < tiles) load_rows(sm + (t & 1) * kTileBytes, mh, static_cast<std::int64_t>(t + 2) * kCols, clusters, kDim);
    ptx::cp_async_commit();
  }
  ptx::cp_async_wait<0>();
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float v = best_v[half];
    int i = best_i[half];
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, v, off);
      const int oi = __shfl_xor_sync(0xffffffffu, i, off);
      if (better(ov, oi, v, i)) v = ov, i = oi;
    }
    const std::int64_t n = row0 + wg * 64 + warp * 16 + half * 8 + lane / 4;
    if (lane % 4 == 0 && n < tokens) labels[head * tokens + n] = i == 0x7fffffff ? 0 : i;
  }
#endif
}

}  // namespace

bool assign_wgmma_available() {
  static const bool ok = [] {
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return false;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    return major == 9 && minor == 0;  // the sm_90a code runs on compute capability 9.0 only
  }();
  return ok;
}

void launch_assign_wgmma(const RowsView& x, const void* m, const float* bias, int clusters, std::int32_t* labels,
                         cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((x.tokens + kRows - 1) / kRows), static_cast<unsigned>(x.heads));
  const auto* xp = static_cast<const std::uint16_t*>(x.data);
  const auto* mp = static_cast<const std::uint16_t*>(m);
  if (x.elem == Elem::bf16) {
    cudaFuncSetAttribute(assign_wgmma_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
    assign_wgmma_kernel<true><<<grid, kThreads, kSmemBytes, stream>>>(xp, x.tokens, x.head_stride, x.row_stride, mp,
                                                                       bias, clusters, labels);
  } else {
    cudaFuncSetAttribute(assign_wgmma_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
    assign_wgmma_kernel<false><<<grid, kThreads, kSmemBytes, stream>>>(xp, x.tokens, x.head_stride, x.row_stride, mp,
                                                                        bias, clusters, labels);
  }
}

}  // namespace svoo::cuda::detail
