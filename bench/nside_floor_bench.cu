// svoo_nside_floor_bench: what the tensor cores alone cost a short work item whose queries sit on
// the products' N side, against the attention kernel's row side (docs/cuda-backend.md, "Not done
// yet": each query cluster's last, partly filled item costs ~12 % of a 720p call).
//
// Row side (the kernel today): a consumer warpgroup holds 64 query rows; per 128-key tile
// S = Q K^T (wgmma m64n128k16, A = Q, B = K from shared memory) and O += P V (A = P from
// registers, B = V read MN-major). Two consumers make a 128-row item; an item of <= 64 rows runs
// on one.
// N side: a warpgroup holds n queries (n = 16 .. 96) as the products' N; per tile
// S^T = K Q^T (two m64nNk16 halves of 64 keys, A = K, B = Q) and O^T += V^T P^T (two m64nNk16
// halves of 64 head dims, A = V^T read MN-major, B = P^T from shared memory).
// Each block (one an SM: the shared memory request sees to that) streams the same tiles from
// shared memory `--tiles` times: no loads, no softmax, only the products and their waits. The
// S products accumulate across tiles (a real kernel reads S; with its results dead, ptxas drops
// the products). The result is a floor: what the products cost before the softmax and the
// shared-memory round trip of P^T are added. Reported per item tile in units of a full 128-row
// item's tile (the two-consumer row side), against the ideal n / 128 of the rows, as
// X = cost / ideal - 1. Last, the L2's bandwidth into shared memory through bulk copies, which
// bounds the attention kernel's K and V streaming (128 FLOP a byte with 128-row items).
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "cuda/wgmma.cuh"
#include "cuda_device.cuh"
#include "wgmma_narrow.cuh"

namespace {

using namespace svoo::cuda::detail;
constexpr int kChunk = 128 * 128;  // one 64-column chunk of a 128-row tile, bytes
constexpr int kTile = 2 * kChunk;
constexpr int kForceOneBlock = 120 * 1024;  // dynamic shared memory at least this: one block an SM

using svoo::bench::check;

// Fills n bytes of shared memory with small finite bf16 values (timing does not depend on them,
// but NaN or denormal inputs should not be what is timed).
__device__ void fill(unsigned char* p, int bytes) {
  auto* h = reinterpret_cast<std::uint16_t*>(p);
  for (int i = threadIdx.x; i < bytes / 2; i += blockDim.x) {
    const std::uint32_t x = static_cast<std::uint32_t>(i) * 2654435761u;
    h[i] = static_cast<std::uint16_t>(0x3c00 | (x >> 25));  // 2^-7 .. 2^-6 range, positive
  }
}

// Row side: G consumer warpgroups of 64 rows each, every one over the same K and V tiles.
template <int G>
__global__ void __launch_bounds__(128 * G, 1) row_side_kernel(int tiles, float* sink) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  unsigned char* base = wgmma::align_1024(smem_raw);
  unsigned char *sk = base, *sv = base + kTile, *sq = base + 2 * kTile;  // Q: [G x 64 rows] in 128-row tiles
  fill(base, 2 * kTile + ((G + 1) / 2) * kTile);
  __syncthreads();
  wgmma::fence_async_shared();
  const int g = threadIdx.x / 128;
  const std::uint64_t dq = wgmma::descriptor(sq + (g / 2) * kTile + (g % 2) * 64 * 128, 16, 1024);
  const std::uint64_t dk = wgmma::descriptor(sk, 16, 1024), dv = wgmma::descriptor(sv, kChunk, 1024);
  float s[64], o[64];
  std::uint32_t pa[8][4];
  for (int i = 0; i < 64; ++i) o[i] = s[i] = 0.f;
  for (int k = 0; k < 8; ++k)
    for (int e = 0; e < 4; ++e) pa[k][e] = 0x3c003c00u + k + e;
  for (int t = 0; t < tiles; ++t) {
    wgmma::fence();
#pragma unroll
    for (int ks = 0; ks < 8; ++ks) {
      const int off = ((ks / 4) * kChunk + (ks % 4) * 32) >> 4;
      wgmma::m64n128k16_ss<true>(s, dq + off, dk + off, 1);
    }
    wgmma::commit();
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) wgmma::m64n128k16_rs_mn<true>(o, pa[kk], dv + ((kk * 16 * 128) >> 4));
    wgmma::commit();
    wgmma::wait<1>();
    wgmma::fence_regs(s);
  }
  wgmma::wait<0>();
  wgmma::fence_regs(o);
  float acc = 0.f;
  for (int i = 0; i < 64; ++i) acc += s[i] + o[i];
  if (acc == 1234.5f) sink[0] = acc;  // keeps the results live
#endif
}

// N side: G warpgroups of n = N queries each (their own Q^T and P^T), over the same K and V.
template <int N, int G>
__global__ void __launch_bounds__(128 * G, 1) n_side_kernel(int tiles, float* sink) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  unsigned char* base = wgmma::align_1024(smem_raw);
  constexpr int kRowsChunk = N * 128;  // a [N x 64] chunk of Q^T or P^T, bytes
  unsigned char *sk = base, *sv = base + kTile, *sx = base + 2 * kTile;
  fill(base, 2 * kTile + G * 4 * kRowsChunk);
  __syncthreads();
  wgmma::fence_async_shared();
  const int g = threadIdx.x / 128;
  unsigned char* sq = sx + g * 4 * kRowsChunk;  // Q^T: [N queries x 128 dims], two chunks
  unsigned char* sp = sq + 2 * kRowsChunk;      // P^T: [N queries x 128 keys], two chunks
  const std::uint64_t dq = wgmma::descriptor(sq, 16, 1024), dp = wgmma::descriptor(sp, 16, 1024);
  const std::uint64_t dk = wgmma::descriptor(sk, 16, 1024);
  const std::uint64_t dv = wgmma::descriptor(sv, kChunk, 1024);  // MN-major A: head dims contiguous
  float s[2][N / 2], o[2][N / 2];
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < N / 2; ++i) o[h][i] = s[h][i] = 0.f;
  for (int t = 0; t < tiles; ++t) {
    wgmma::fence();
#pragma unroll
    for (int mh = 0; mh < 2; ++mh)  // keys 64 mh ..
#pragma unroll
      for (int ks = 0; ks < 8; ++ks) {
        const int koff = ((ks / 4) * kChunk + mh * 64 * 128 + (ks % 4) * 32) >> 4;
        const int qoff = ((ks / 4) * kRowsChunk + (ks % 4) * 32) >> 4;
        svoo::bench::wgmma_ss_narrow<N, 0>(s[mh], dk + koff, dq + qoff, 1);
      }
    wgmma::commit();
#pragma unroll
    for (int dh = 0; dh < 2; ++dh)  // head dims 64 dh ..
#pragma unroll
      for (int kk = 0; kk < 8; ++kk) {  // keys 16 kk ..
        const int voff = (dh * kChunk + kk * 16 * 128) >> 4;
        const int poff = ((kk / 4) * kRowsChunk + (kk % 4) * 32) >> 4;
        svoo::bench::wgmma_ss_narrow<N, 1>(o[dh], dv + voff, dp + poff, 1);
      }
    wgmma::commit();
    wgmma::wait<1>();
    wgmma::fence_regs(s[0]);
    wgmma::fence_regs(s[1]);
  }
  wgmma::wait<0>();
  wgmma::fence_regs(o[0]);
  wgmma::fence_regs(o[1]);
  float acc = 0.f;
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < N / 2; ++i) acc += s[h][i] + o[h][i];
  if (acc == 1234.5f) sink[0] = acc;
#endif
}

// L2 -> shared memory streaming, the attention kernel's K and V traffic without its math: thread 0
// of each block keeps four 16 KB bulk copies (TMA, 1-D) in flight over a buffer that fits the L2
// (a head's K and V at 75,600 tokens are 39 MB), each waited on its mbarrier before its stage is
// reused.
constexpr int kBulk = 16384, kBulkStages = 4;
__global__ void __launch_bounds__(32, 1) l2_stream_kernel(const unsigned char* buf, long long bytes, int iters) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ unsigned char smem_raw[];
  unsigned char* base = wgmma::align_1024(smem_raw);
  __shared__ std::uint64_t bar[kBulkStages];
  if (threadIdx.x != 0) return;
  for (int s = 0; s < kBulkStages; ++s) wgmma::mbar_init(&bar[s], 1);
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  const long long chunks = bytes / kBulk;
  long long c = (static_cast<long long>(blockIdx.x) * 7919) % chunks;
  for (int i = 0; i < iters + kBulkStages; ++i) {
    const int s = i % kBulkStages;
    if (i >= kBulkStages) wgmma::mbar_wait(&bar[s], ((i / kBulkStages) - 1) & 1);
    if (i < iters) {
      wgmma::mbar_arrive_expect_tx(&bar[s], kBulk);
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                       ptx::smem_addr(base + s * kBulk)),
                   "l"(buf + c * kBulk), "r"(kBulk), "r"(ptx::smem_addr(&bar[s]))
                   : "memory");
      c = c + 1 == chunks ? 0 : c + 1;
    }
  }
#endif
}

struct Timing {
  double ms_per_tile;  // one block's time for one tile step (all its warpgroups)
};

template <typename Kernel>
Timing time_kernel(Kernel kernel, int threads, int smem, int sms, int tiles, int reps, float* sink) {
  smem = std::max(smem + 1024, kForceOneBlock);
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), "smem attribute");
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  kernel<<<sms, threads, smem>>>(tiles / 4, sink);  // warm-up
  check(cudaGetLastError(), "launch");
  float best = 1e30f;
  for (int r = 0; r < reps; ++r) {
    check(cudaEventRecord(a), "record");
    kernel<<<sms, threads, smem>>>(tiles, sink);
    check(cudaEventRecord(b), "record");
    check(cudaEventSynchronize(b), "kernel");
    float ms = 0.f;
    check(cudaEventElapsedTime(&ms, a, b), "elapsed");
    best = std::min(best, ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return {static_cast<double>(best) / tiles};
}

struct Bench {
  int sms, tiles, reps;
  float* sink;
  double full_ms = 0;  // the two-consumer row side's tile: one 128-row item's tile

  template <int N, int G>
  void n_side() {
    const Timing t = time_kernel(n_side_kernel<N, G>, 128 * G, 2 * kTile + G * 4 * N * 128, sms, tiles, reps, sink);
    const double cost = t.ms_per_tile / G / full_ms, ideal = N / 128.0;
    std::printf("n-side  n=%-3d  %d warpgroups  %8.1f ns a step  item tile %.3f of a full one  ideal %.3f  X %.2f\n", N, G,
                t.ms_per_tile * 1e6, cost, ideal, cost / ideal - 1.0);
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Tensor-core floor of short work items with their queries on the products' N side (sm_90a)"};
  int tiles = 20000, reps = 3;
  app.add_option("--tiles", tiles, "tile steps a block runs")->check(CLI::Range(100, 10000000));
  app.add_option("--reps", reps, "timed launches of each variant (the fastest is reported)")->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);
  try {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "device");
    if (prop.major != 9) throw std::runtime_error("needs a compute capability 9.0 GPU (sm_90a wgmma)");
    float* sink = nullptr;
    check(cudaMalloc(&sink, sizeof(float)), "malloc");
    Bench b{prop.multiProcessorCount, tiles, reps, sink};
    std::printf("%s, %d SMs, %d tile steps a block, best of %d\n", prop.name, b.sms, tiles, reps);
    const Timing full = time_kernel(row_side_kernel<2>, 256, 3 * kTile, b.sms, tiles, reps, sink);
    b.full_ms = full.ms_per_tile;
    const double flops = 4.0 * 128 * 128 * 128 * b.sms;  // two products of a 128 x 128 x 128 tile, every SM
    std::printf("row side, 2 consumers (a 128-row item): %8.1f ns a step, %.0f TFLOP/s\n", full.ms_per_tile * 1e6,
                flops / (full.ms_per_tile * 1e-3) / 1e12);
    const Timing solo = time_kernel(row_side_kernel<1>, 128, 3 * kTile, b.sms, tiles, reps, sink);
    std::printf("row side, 1 consumer (an item of <= 64 rows): %8.1f ns a step, item tile %.3f of a full one\n",
                solo.ms_per_tile * 1e6, solo.ms_per_tile / b.full_ms);
    b.n_side<16, 1>(), b.n_side<16, 2>(), b.n_side<16, 4>();
    b.n_side<32, 1>(), b.n_side<32, 2>(), b.n_side<32, 4>();
    b.n_side<48, 1>(), b.n_side<48, 2>(), b.n_side<48, 3>();
    b.n_side<64, 1>(), b.n_side<64, 2>(), b.n_side<64, 3>();
    b.n_side<96, 1>(), b.n_side<96, 2>();
    // L2 -> shared memory: a 40 MB buffer (resident in the 50 MB L2 after the warm-up launch).
    const long long bytes = 40ll << 20;
    unsigned char* buf = nullptr;
    check(cudaMalloc(&buf, bytes), "malloc");
    check(cudaMemset(buf, 1, bytes), "memset");
    const int iters = 4000, smem = kBulk * kBulkStages + 1024;
    check(cudaFuncSetAttribute(l2_stream_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), "smem attribute");
    for (int per_sm : {1, 2}) {
      float best = 1e30f;
      cudaEvent_t e0, e1;
      check(cudaEventCreate(&e0), "event");
      check(cudaEventCreate(&e1), "event");
      for (int r = 0; r <= reps; ++r) {
        check(cudaEventRecord(e0), "record");
        l2_stream_kernel<<<b.sms * per_sm, 32, smem>>>(buf, bytes, iters);
        check(cudaEventRecord(e1), "record");
        check(cudaEventSynchronize(e1), "l2 kernel");
        float ms = 0.f;
        check(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
        if (r > 0) best = std::min(best, ms);  // the first launch warms the L2
      }
      cudaEventDestroy(e0);
      cudaEventDestroy(e1);
      const double moved = static_cast<double>(b.sms) * per_sm * iters * kBulk;
      std::printf("L2 -> shared memory, %d block(s) an SM, 4 x 16 KB bulk copies in flight each: %.2f TB/s\n", per_sm,
                  moved / (best * 1e-3) / 1e12);
    }
    cudaFree(buf);
    check(cudaDeviceSynchronize(), "sync");
    cudaFree(sink);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "svoo_nside_floor_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
