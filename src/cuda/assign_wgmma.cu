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

// Byte offset of the 16-byte chunk `c16` (0..15 along K) of row r in a swizzled 128-row tile:
// two K chunks of [128 rows x 128 B]; rows in 8-row groups of 1024 B; chunk j of a row stored at
// j ^ (r % 8) (the 128-byte swizzle the wgmma descriptor names).
[[maybe_unused]] __device__ __forceinline__ int swizzled(int r, int c16) {
  const int kc = c16 >> 3, j = c16 & 7;
  return kc * kChunkBytes + (r >> 3) * 1024 + (r & 7) * 128 + ((j ^ (r & 7)) << 4);
}

// wgmma shared-memory descriptor: K-major, 128-byte swizzle, 8-row groups 1024 B apart.
[[maybe_unused]] __device__ __forceinline__ std::uint64_t descriptor(const void* p) {
  const std::uint64_t addr = ptx::smem_addr(p);
  std::uint64_t d = 0;
  d |= (addr & 0x3FFFF) >> 4;           // start address
  d |= std::uint64_t{1} << 16;          // leading byte offset (unused for swizzled K-major)
  d |= std::uint64_t{1024 >> 4} << 32;  // stride byte offset: next 8-row group
  d |= std::uint64_t{1} << 62;          // 128-byte swizzle
  return d;
}

[[maybe_unused]] __device__ __forceinline__ void fence_operands() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
[[maybe_unused]] __device__ __forceinline__ void commit_and_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#endif
}

template <bool kBf16>
[[maybe_unused]] __device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], std::uint64_t a, std::uint64_t b, int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  if constexpr (kBf16) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(a), "l"(b), "r"(accumulate));
  } else {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(a), "l"(b), "r"(accumulate));
  }
#endif
}

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
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // cp.async writes -> tensor-core reads
    __syncthreads();
    const unsigned char* tile = sm + (t & 1) * kTileBytes;
    fence_operands();
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks) {
      const int kc = ks / 4, koff = (ks % 4) * 32;
      const std::uint64_t da = descriptor(sx + kc * kChunkBytes + wg * 64 * 128 + koff);
      const std::uint64_t db = descriptor(tile + kc * kChunkBytes + koff);
      wgmma_m64n128k16<kBf16>(d, da, db, ks > 0 ? 1 : 0);
    }
    commit_and_wait();
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
