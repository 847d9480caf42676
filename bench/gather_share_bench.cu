// svoo_gather_share_bench: what it would cost two SMs to share the key and value tiles they gather
// (docs/cuda-backend.md, "Not done yet"). The sparse attention's producer gathers each 128-row K
// and V tile row by row from L2 with cp.async; the consumers' products are what the SM is for.
// On the lent H200 the sparse kernel runs at its power limit, and the same kernel with K's L2
// reads replaced by shared stores of zeros runs at full clock and 8-12 % faster at Wan2.1-14B 720p
// (runs 142, 144). Two SMs of a cluster working on two items of one query cluster (one key list)
// could each gather half of every tile and push it into the other's shared memory
// (cp.async.bulk shared::cta -> shared::cluster), halving those L2 reads. This bench measures
// that data path alone, without the products: per mode, the time of a tile step (a K and a V
// tile) when the consumer takes each tile after `--spin` cycles (its stand-in for the products),
// the share of the consumer's time spent waiting for a tile, and the card's power and SM clock
// (NVML, when the driver's library is there) while it runs.
//   none  no copies (the consumer's pacing alone)
//   solo  every block gathers all 128 rows of its own tiles (today's kernel)
//   half  every block gathers 64 rows and nothing else (pair's L2 reads without its pushes: a bound)
//   pair  clusters of two share one tile list; each block gathers its 64 rows and pushes them to
//         the other, whose full barrier waits for its own copies and the pushed bytes
//   bulk  no gather: each tile is 128 consecutive rows, two 16 KB bulk copies by one thread (the
//         dense kernel's TMA loads; the same bytes as solo, by the copy engine)
//   ca    solo's gather with cp.async.ca (through L1) instead of .cg
//   regs  solo's gather through registers: 16-byte loads (ld.global.nc, no L1 allocation), then
//         shared stores (the gather's other form, if its power per byte were lower)
// Every mode launches clusters of two, one block an SM, so the SMs' placement is the same.
// Measured (runs 147-154, H200; bench/results/2026-11-28-h200-run14*-gather_share*.txt): at the
// kernel's pace the gather draws ~150 W of the card's 700; a pair keeps that pace on a two-stage
// ring (run154) and drew ~30 % less power a delivered byte in run150's first reading.
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/ptx.cuh"
#include "cuda/wgmma.cuh"
#include "cuda_device.cuh"
#include "power_sampler.hpp"

namespace {

using namespace svoo::cuda::detail;
constexpr int kRowBytes = 256;             // one token's 128 bf16 values
constexpr int kTileBytes = 128 * kRowBytes;
constexpr int kHalfBytes = kTileBytes / 2;
constexpr int kMaxStages = 3;  // 6 tiles of 32 KB
constexpr int kProducers = 128, kThreads = kProducers + 64;  // + the consumer's warp, + the pusher's
enum Mode { kNone = 0, kSolo = 1, kHalf = 2, kPair = 3, kBulk = 4, kCa = 5, kRegs = 6 };
const char* const kModeNames[] = {"none", "solo", "half", "pair", "bulk", "ca", "regs"};
constexpr bool whole_rows(int mode) { return mode == kSolo || mode == kCa || mode == kRegs; }  // all 128 rows of a tile

using svoo::bench::check;

__device__ __forceinline__ std::uint32_t peer_addr(std::uint32_t local, std::uint32_t rank) {
  std::uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(local), "r"(rank));
  return r;
}
// An arrival on the peer's barrier. Release at cluster scope (an arrive that orders every prior
// access of the thread cluster-wide) cost ~350 ns an arrival here (run153: ~700 ns a step of two
// arrivals, whatever the ring's depth); CUTLASS's cluster barriers arrive with the default
// semantics, as here: the consumer has only read the stage, and its reads are done.
__device__ __forceinline__ void remote_arrive(std::uint32_t cluster_bar) {
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];\n" ::"r"(cluster_bar) : "memory");
}
__device__ __forceinline__ void wait_cluster_scope(std::uint64_t* bar, unsigned parity) {
  asm volatile(
      "{\n.reg .pred done;\nwait_%=:\n"
      "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n}\n" ::"r"(ptx::smem_addr(bar)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

// Ring: `stages` K stages then as many V stages (32 KB each); barriers full/empty/landed per stage.
template <int kMode>
__global__ void __launch_bounds__(kThreads, 1)
    gather_share_kernel(const unsigned char* k, const unsigned char* v, const std::int32_t* perm, int tokens, int steps,
                        int stages, long long spin, unsigned long long* wait_cycles) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ unsigned char smem_raw[];
  unsigned char* ring = wgmma::align_1024(smem_raw);
  __shared__ std::uint64_t full[2 * kMaxStages], empty[2 * kMaxStages], landed[2 * kMaxStages];
  const int tid = threadIdx.x;
  std::uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  const std::uint32_t peer = rank ^ 1u;
  constexpr bool pair = kMode == kPair;
  if (tid == 0) {
    for (int s = 0; s < 2 * stages; ++s) {
      wgmma::mbar_init(&full[s], kMode == kBulk ? 1 : kProducers + (pair ? 1 : 0));  // + the arrival that expects the pushed bytes
      wgmma::mbar_init(&empty[s], pair ? 2 : 1);                // this block's consumer (+ the peer's)
      wgmma::mbar_init(&landed[s], kProducers);                 // this block's own copies landed
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  cluster_sync();  // the peer's barriers exist before anything reaches them
  // One tile list per cluster in pair mode, per block otherwise.
  const long long list = pair ? blockIdx.x / 2 : blockIdx.x;
  if (kMode == kBulk && tid < kProducers) {
    if (tid == 0) {
      long long row = (list * 977) % (tokens - 128);
      for (int i = 0; i < steps; ++i) {
        for (int which = 0; which < 2; ++which) {
          const int s = which * stages + i % stages, use = i / stages;
          if (use >= 1) wait_cluster_scope(&empty[s], (use - 1) & 1);
          wgmma::mbar_arrive_expect_tx(&full[s], kTileBytes);
          const unsigned char* src = (which == 0 ? k : v) + row * kRowBytes;
          for (int h = 0; h < 2; ++h)
            asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                             ptx::smem_addr(ring + s * kTileBytes + h * kHalfBytes)),
                         "l"(src + h * kHalfBytes), "r"(kHalfBytes), "r"(ptx::smem_addr(&full[s]))
                         : "memory");
        }
        row += 128;
        if (row >= tokens - 128) row = 0;
      }
    }
  } else if (tid < kProducers) {
    // 16-byte piece c of rows r0 + 8 j, j in [first, first + kRows / 8). Like the attention
    // kernel, the rows' tokens are loaded a step ahead (their loads fly under this step's copies),
    // and K's and V's copies of a step share them.
    const int c = tid & 15, r0 = tid >> 4;
    constexpr int kJ = whole_rows(kMode) ? 16 : 8;
    const int first = whole_rows(kMode) ? 0 : 8 * static_cast<int>(rank);
    long long base = (list * 977) % tokens;
    std::int32_t tok[kJ];
    auto load_tokens = [&] {
#pragma unroll
      for (int j = 0; j < kJ; ++j) {
        long long idx = base + r0 + 8 * (first + j);
        if (idx >= tokens) idx -= tokens;
        tok[j] = perm[idx];
      }
      base += 128;
      if (base >= tokens) base -= tokens;
    };
    if (kMode != kNone) load_tokens();
    for (int i = 0; i < steps; ++i) {
      const int st = i % stages, use = i / stages;
      std::int32_t cur[kJ];
#pragma unroll
      for (int j = 0; j < kJ; ++j) cur[j] = tok[j];
      if (kMode != kNone && i + 1 < steps) load_tokens();
      for (int which = 0; which < 2; ++which) {
        const int s = which * stages + st;
        if (use >= 1) wait_cluster_scope(&empty[s], (use - 1) & 1);
        const std::uint32_t dst = ptx::smem_addr(ring + s * kTileBytes);
        const unsigned char* src = (which == 0 ? k : v) + c * 16;
        if constexpr (kMode == kRegs) {
          std::uint32_t x[kJ][4];
#pragma unroll
          for (int j = 0; j < kJ; ++j)
            asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                         : "=r"(x[j][0]), "=r"(x[j][1]), "=r"(x[j][2]), "=r"(x[j][3])
                         : "l"(src + static_cast<long long>(cur[j]) * kRowBytes));
#pragma unroll
          for (int j = 0; j < kJ; ++j)
            asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(dst + (r0 + 8 * j) * kRowBytes + c * 16),
                         "r"(x[j][0]), "r"(x[j][1]), "r"(x[j][2]), "r"(x[j][3])
                         : "memory");
          wgmma::mbar_arrive(&full[s]);
          continue;
        }
        if (kMode != kNone) {
#pragma unroll
          for (int j = 0; j < kJ; ++j) {
            const int row = r0 + 8 * (first + j);
            if constexpr (kMode == kCa)
              asm volatile("cp.async.ca.shared.global [%0], [%1], 16;\n" ::"r"(dst + row * kRowBytes + c * 16),
                           "l"(src + static_cast<long long>(cur[j]) * kRowBytes));
            else
              asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst + row * kRowBytes + c * 16),
                           "l"(src + static_cast<long long>(cur[j]) * kRowBytes));
          }
        }
        if (pair && tid == 0) wgmma::mbar_arrive_expect_tx(&full[s], kHalfBytes);
        if (pair) wgmma::mbar_arrive_cp_async(&landed[s]);
        wgmma::mbar_arrive_cp_async(&full[s]);
      }
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
  } else if (pair && tid == kProducers + 32) {
    // The pusher (a warp of its own, so that no gathering thread waits for its copies to land):
    // each stage's half of this block, once landed, into the peer (the bulk copy reads shared
    // memory through the async proxy, hence the fence).
    for (int i = 0; i < steps; ++i) {
      for (int which = 0; which < 2; ++which) {
        const int s = which * stages + i % stages;
        wgmma::mbar_wait(&landed[s], (i / stages) & 1);
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        const std::uint32_t half = ptx::smem_addr(ring + s * kTileBytes) + rank * kHalfBytes;
        asm volatile("cp.async.bulk.shared::cluster.shared::cta.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                         peer_addr(half, peer)),
                     "r"(half), "r"(kHalfBytes), "r"(peer_addr(ptx::smem_addr(&full[s]), peer))
                     : "memory");
      }
    }
  } else if (tid == kProducers) {
    // The consumer: each tile after `spin` cycles of pretend products. It counts the cycles it
    // waited and the cycles it ran (its SM's own clock: NVML's reading runs high under the cap).
    unsigned long long waited = 0;
    const long long start = clock64();
    for (int i = 0; i < steps; ++i) {
      for (int which = 0; which < 2; ++which) {
        const int s = which * stages + i % stages;
        const long long t0 = clock64();
        wgmma::mbar_wait(&full[s], (i / stages) & 1);
        const long long t1 = clock64();
        waited += static_cast<unsigned long long>(t1 - t0);
        while (clock64() - t1 < spin) {
        }
        wgmma::mbar_arrive(&empty[s]);
        if (pair) remote_arrive(peer_addr(ptx::smem_addr(&empty[s]), peer));
      }
    }
    atomicAdd(&wait_cycles[0], waited);
    atomicAdd(&wait_cycles[1], static_cast<unsigned long long>(clock64() - start));
  }
  __syncthreads();
  cluster_sync();  // no block leaves while its peer may still push into it or arrive on its barriers
#endif
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Two SMs sharing their gathered key and value tiles through distributed shared memory (sm_90a)"};
  int tokens = 75600;
  double seconds = 3.0;
  std::vector<long long> spins{0, 2000};
  app.add_option("--tokens", tokens, "rows of K and of V (a head's keys; both stay in L2)")->check(CLI::Range(1024, 1 << 22));
  app.add_option("--seconds", seconds, "how long each mode runs (for the power reading)")->check(CLI::Range(0.05, 30.0));
  app.add_option("--spin", spins, "the consumer's cycles a tile (repeatable)");
  int stages = 2;
  app.add_option("--stages", stages, "stages of the K ring and of the V ring (the attention kernel has 2)")->check(CLI::Range(2, kMaxStages));
  CLI11_PARSE(app, argc, argv);
  try {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "device");
    if (prop.major != 9) throw std::runtime_error("needs a compute capability 9.0 GPU (clusters, bulk copies)");
    const int sms = prop.multiProcessorCount & ~1;
    std::vector<std::int32_t> perm(tokens);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), std::mt19937(7));
    unsigned char *k = nullptr, *v = nullptr;
    std::int32_t* dperm = nullptr;
    unsigned long long* wait_cycles = nullptr;
    const std::size_t bytes = static_cast<std::size_t>(tokens) * kRowBytes;
    check(cudaMalloc(&k, bytes), "malloc");
    check(cudaMalloc(&v, bytes), "malloc");
    check(cudaMalloc(&dperm, tokens * sizeof(std::int32_t)), "malloc");
    check(cudaMalloc(&wait_cycles, 2 * sizeof(unsigned long long)), "malloc");  // waited, ran
    check(cudaMemset(k, 1, bytes), "memset");
    check(cudaMemset(v, 2, bytes), "memset");
    check(cudaMemcpy(dperm, perm.data(), tokens * sizeof(std::int32_t), cudaMemcpyHostToDevice), "copy");
    const int smem = 2 * kMaxStages * kTileBytes + 1024;
    for (auto fn : {gather_share_kernel<kNone>, gather_share_kernel<kSolo>, gather_share_kernel<kHalf>, gather_share_kernel<kPair>,
                    gather_share_kernel<kBulk>, gather_share_kernel<kCa>, gather_share_kernel<kRegs>})
      check(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), "smem attribute");
    svoo::bench::PowerSampler power;
    std::printf("%s, %d SMs in clusters of 2, K and V of %d tokens (%.1f MB each), %d-stage rings, %.1f s a mode%s\n", prop.name,
                sms, tokens, bytes / 1e6, stages, seconds, power.ok() ? "" : " (no NVML: no power reading)");
    auto launch = [&](int mode, int steps, long long spin) -> double {
      cudaLaunchConfig_t cfg{};
      cfg.gridDim = dim3(sms);
      cfg.blockDim = dim3(kThreads);
      cfg.dynamicSmemBytes = smem;
      cudaLaunchAttribute attr{};
      attr.id = cudaLaunchAttributeClusterDimension;
      attr.val.clusterDim.x = 2, attr.val.clusterDim.y = 1, attr.val.clusterDim.z = 1;
      cfg.attrs = &attr, cfg.numAttrs = 1;
      cudaEvent_t a, b;
      check(cudaEventCreate(&a), "event");
      check(cudaEventCreate(&b), "event");
      check(cudaMemset(wait_cycles, 0, 2 * sizeof(unsigned long long)), "memset");
      check(cudaEventRecord(a), "record");
      void (*const kernels[])(const unsigned char*, const unsigned char*, const std::int32_t*, int, int, int, long long,
                              unsigned long long*) = {gather_share_kernel<kNone>, gather_share_kernel<kSolo>,
                                                      gather_share_kernel<kHalf>, gather_share_kernel<kPair>,
                                                      gather_share_kernel<kBulk>, gather_share_kernel<kCa>,
                                                      gather_share_kernel<kRegs>};
      check(cudaLaunchKernelEx(&cfg, kernels[mode], static_cast<const unsigned char*>(k),
                               static_cast<const unsigned char*>(v), static_cast<const std::int32_t*>(dperm), tokens, steps,
                               stages, spin, wait_cycles),
            "launch");
      check(cudaEventRecord(b), "record");
      check(cudaEventSynchronize(b), kModeNames[mode]);
      float ms = 0.f;
      check(cudaEventElapsedTime(&ms, a, b), "elapsed");
      cudaEventDestroy(a);
      cudaEventDestroy(b);
      return ms;
    };
    std::printf("%6s %6s %12s %12s %10s %8s %8s\n", "spin", "mode", "ns a step", "GB/s an SM", "waiting", "W", "MHz");
    for (long long spin : spins) {
      for (int mode : {kNone, kSolo, kCa, kRegs, kBulk, kHalf, kPair}) {
        const double probe = launch(mode, 2000, spin) / 2000;  // ms a step, also the warm-up
        const int steps = static_cast<int>(std::min(2e9, seconds / (probe * 1e-3)));
        power.start();
        const double ms = launch(mode, steps, spin);
        power.stop();
        unsigned long long cycles[2] = {0, 0};  // the consumers' waits, their whole loops
        check(cudaMemcpy(cycles, wait_cycles, sizeof cycles, cudaMemcpyDeviceToHost), "copy");
        const double ns = ms * 1e6 / steps;
        const double mhz_mean = power.mean_mhz();
        const int rows = mode == kNone ? 0 : (mode == kHalf ? 64 : 128);  // rows delivered into each SM's tile
        std::printf("%6lld %6s %12.1f %12.1f %9.1f%% %8.0f %8.0f\n", spin, kModeNames[mode], ns,
                    2.0 * rows * kRowBytes / ns, 100.0 * cycles[0] / std::max(1.0, static_cast<double>(cycles[1])), power.mean_watts(), mhz_mean);
      }
    }
    cudaFree(k), cudaFree(v), cudaFree(dperm), cudaFree(wait_cycles);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "svoo_gather_share_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
