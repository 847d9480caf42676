// Internal: Hopper warpgroup tensor-core helpers (sm_90a) shared by the wgmma kernels: shared-memory
// matrix descriptors for the 128-byte-swizzled layout, the fences, and m64 n128 k16 products with
// fp32 accumulators (64 registers a thread) and B from shared memory, A from shared memory (SS) or
// from registers (RS). Everything compiles to nothing outside the sm_90a pass, so callers guard
// their kernels' bodies with __CUDA_ARCH_FEAT_SM90_ALL as well.
//
// Tile layout used by every caller: a [rows x 128] bf16/f16 tile is two 64-column chunks of
// [rows x 128 bytes]; inside a chunk, 8-row groups are 1024 bytes apart and the 16-byte piece j of
// row r sits at j ^ (r % 8) (the 128-byte swizzle). Base addresses are 1024-byte aligned.
#pragma once

#include <cstdint>

#include "ptx.cuh"

namespace svoo::cuda::detail::wgmma {

// Byte offset of 16-byte piece c16 (0..15 along the 128 columns) of row r in a tile whose
// 64-column chunks are chunk_bytes apart.
// The first 1024-byte boundary at or after p: the 128-byte swizzle repeats every 1024 bytes, so
// tiles in dynamic shared memory start there (kernels request 1023 bytes of slack).
__device__ __forceinline__ unsigned char* align_1024(unsigned char* p) {
  return reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(p) + 1023) & ~static_cast<std::uintptr_t>(1023));
}

__device__ __forceinline__ int swizzled(int r, int c16, int chunk_bytes) {
  const int kc = c16 >> 3, j = c16 & 7;
  return kc * chunk_bytes + (r >> 3) * 1024 + (r & 7) * 128 + ((j ^ (r & 7)) << 4);
}

// Descriptor of a 128-byte-swizzled operand. K-major (A, or B = rows of a [N x K] tile): lbo is
// unused, sbo = 1024 (next 8 rows). MN-major (B read as [K x N] from rows of K, the V of P V):
// lbo = the distance between 64-column chunks, sbo = 1024 (next 8 rows of K).
// The high word of a descriptor (stride byte offset, 128-byte swizzle): it does not depend on the
// address, so a kernel may add offsets to the low word in 32 bits and OR this constant back.
constexpr std::uint64_t descriptor_high(std::uint32_t sbo_bytes) {
  return static_cast<std::uint64_t>((sbo_bytes & 0x3FFFF) >> 4) << 32 | std::uint64_t{1} << 62;
}
__device__ __forceinline__ std::uint64_t descriptor(const void* p, std::uint32_t lbo_bytes, std::uint32_t sbo_bytes) {
  const std::uint64_t addr = ptx::smem_addr(p);
  std::uint64_t d = 0;
  d |= (addr & 0x3FFFF) >> 4;
  d |= static_cast<std::uint64_t>((lbo_bytes & 0x3FFFF) >> 4) << 16;
  d |= descriptor_high(sbo_bytes);
  return d;
}

__device__ __forceinline__ void fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void commit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Ordinary or cp.async writes to shared memory, then reads by the tensor cores (async proxy).
__device__ __forceinline__ void fence_async_shared() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

#define SVOO_WGMMA_D64                                                                                          \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
  "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, "  \
  "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define SVOO_WGMMA_OUT64                                                                                           \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),      \
      "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),       \
      "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),      \
      "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),      \
      "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),      \
      "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),      \
      "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),      \
      "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

// d (+)= A B with A [64 x 16] and B [16 x 128] both in shared memory (K-major); accumulate = 0
// overwrites d.
template <bool kBf16>
__device__ __forceinline__ void m64n128k16_ss(float (&d)[64], std::uint64_t a, std::uint64_t b, int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  if constexpr (kBf16) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " SVOO_WGMMA_D64 ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : SVOO_WGMMA_OUT64
                 : "l"(a), "l"(b), "r"(accumulate));
  } else {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " SVOO_WGMMA_D64 ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : SVOO_WGMMA_OUT64
                 : "l"(a), "l"(b), "r"(accumulate));
  }
#endif
}

// d (+)= A B with A [64 x 16] in registers (the m16n8k16 A fragment of each warp's 16 rows, four
// packed pairs) and B [16 x 128] in shared memory, K-major (rows of a [N x K] tile, as in _ss);
// accumulate = 0 overwrites d.
template <bool kBf16>
__device__ __forceinline__ void m64n128k16_rs(float (&d)[64], const std::uint32_t (&a)[4], std::uint64_t b, int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  if constexpr (kBf16) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " SVOO_WGMMA_D64
                 ", {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
                 : SVOO_WGMMA_OUT64
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
  } else {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " SVOO_WGMMA_D64
                 ", {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
                 : SVOO_WGMMA_OUT64
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
  }
#endif
}

// d += A B with A [64 x 16] in registers (the m16n8k16 A fragment of each warp's 16 rows, four
// packed pairs) and B [16 x 128] in shared memory, MN-major (tnspB): rows of K hold N contiguously.
template <bool kBf16>
__device__ __forceinline__ void m64n128k16_rs_mn(float (&d)[64], const std::uint32_t (&a)[4], std::uint64_t b) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  if constexpr (kBf16) {
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " SVOO_WGMMA_D64
                 ", {%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"
                 : SVOO_WGMMA_OUT64
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
  } else {
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " SVOO_WGMMA_D64
                 ", {%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"
                 : SVOO_WGMMA_OUT64
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
  }
#endif
}

#undef SVOO_WGMMA_D64
#undef SVOO_WGMMA_OUT64

// ---- mbarriers (sm_90) ----
__device__ __forceinline__ void mbar_init(std::uint64_t* bar, unsigned count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(ptx::smem_addr(bar)), "r"(count) : "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(std::uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(ptx::smem_addr(bar)) : "memory");
#endif
}
// Arrives `count` times at once (one thread standing for several).
__device__ __forceinline__ void mbar_arrive(std::uint64_t* bar, unsigned count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(ptx::smem_addr(bar)), "r"(count)
               : "memory");
#endif
}
__device__ __forceinline__ void mbar_wait(std::uint64_t* bar, unsigned parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "{\n.reg .pred done;\nwait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n}\n" ::"r"(ptx::smem_addr(bar)),
      "r"(parity)
      : "memory");
#endif
}

// Arrives on bar once every cp.async this thread issued before has landed. The barrier's expected
// count includes this arrival (.noinc).
__device__ __forceinline__ void mbar_arrive_cp_async(std::uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(ptx::smem_addr(bar)) : "memory");
#endif
}

// Arrives once and adds `bytes` to the transaction count of bar's current phase: the phase then
// also waits for that many bytes of bulk (TMA) copies that complete on it.
__device__ __forceinline__ void mbar_arrive_expect_tx(std::uint64_t* bar, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(ptx::smem_addr(bar)), "r"(bytes) : "memory");
#endif
}
// A TMA copy of one box of a 3-D tensor (map: a CUtensorMap in parameter or global memory) at
// coordinates (c0 innermost, c1, c2) into shared memory at dst, completing its bytes on bar. Rows
// outside the tensor arrive as zeros. With a swizzled map the pattern follows dst's address bits,
// as the wgmma descriptors' does.
__device__ __forceinline__ void tma_load_3d(std::uint32_t dst, const void* map, int c0, int c1, int c2, std::uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(ptx::smem_addr(bar))
      : "memory");
#endif
}

// A named barrier for `threads` threads (ids 1..15; 0 is __syncthreads): wait, or only arrive.
__device__ __forceinline__ void named_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Pins registers that an asynchronous wgmma reads or writes: the compiler may not move ordinary
// uses of them across this point (put one after each wait and before each issue).
template <int N>
__device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N, int M>
__device__ __forceinline__ void fence_regs(std::uint32_t (&r)[N][M]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int j = 0; j < M; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
}

}  // namespace svoo::cuda::detail::wgmma
