// svoo_mma_peak_bench: the card's mma.sync rate (m16n8k16, bf16 operands, fp32 accumulators), the
// instruction the portable attention kernel (src/cuda/attention.cu) and FlashAttention-2 run their
// products on. Operands stay in registers and each warp keeps kChains independent accumulators in
// flight, so nothing but the tensor pipe limits it: the ceiling of both kernels on this card, at
// the clock the card holds under this load (it reports that clock, from clock64 against
// %globaltimer, as the power cap may lower it). Runs W warps an SM for each W asked (one block of
// W warps an SM, as many blocks as SMs), and again with an ex2.approx every fourth product in each
// thread, on chains of their own: the attention kernels' ratio (a 128 x 64 tile: 8,192
// exponentials, 1,024 products).
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/ptx.cuh"
#include "cuda_device.cuh"

namespace {

constexpr int kChains = 8;  // independent accumulators a warp: enough to cover the product's latency

using svoo::bench::check;

__device__ __forceinline__ std::uint64_t global_ns() {
  std::uint64_t t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

// Each warp: iters x kChains products; with kEx2, an ex2.approx every fourth (two chains of their own).
// The sums go to out (else the compiler drops the products); block 0's thread 0 records its
// cycles and nanoseconds.
template <bool kEx2>
__global__ void mma_loop(float* out, long long* clocks, int iters) {
  const unsigned lane = threadIdx.x % 32;
  std::uint32_t a[4] = {lane * 0x00010001u, lane ^ 0x3c003c00u, lane + 0x3c003c00u, lane | 0x38003800u};
  const std::uint32_t b0 = lane * 0x00030003u + 0x3c003c00u, b1 = lane ^ 0x38003800u;
  float d[kChains][4] = {};
  float e[2] = {static_cast<float>(lane) * 1e-3f, 0.5f};
  const long long c0 = clock64();
  const std::uint64_t t0 = global_ns();
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int j = 0; j < kChains; ++j) {
      svoo::cuda::detail::ptx::mma16816<true>(d[j], a, b0, b1);
      if constexpr (kEx2)
        if (j % 4 == 0) e[j / 4 % 2] = svoo::cuda::detail::ptx::ex2(e[j / 4 % 2] * -0.5f + 0.25f);
    }
  }
  const long long c1 = clock64();
  const std::uint64_t t1 = global_ns();
  float s = e[0] + e[1];
#pragma unroll
  for (int j = 0; j < kChains; ++j) s += d[j][0] + d[j][1] + d[j][2] + d[j][3];
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
  if (blockIdx.x == 0 && threadIdx.x == 0) clocks[0] = c1 - c0, clocks[1] = static_cast<long long>(t1 - t0);
}

struct Result {
  double tflops, mhz, products_per_sm_cycle;
};

template <bool kEx2>
Result run(int sms, int warps, int iters) {
  const int threads = warps * 32;
  float* out = nullptr;
  long long* clocks = nullptr;
  check(cudaMalloc(&out, sizeof(float) * sms * threads), "cudaMalloc");
  check(cudaMalloc(&clocks, 2 * sizeof(long long)), "cudaMalloc");
  mma_loop<kEx2><<<sms, threads>>>(out, clocks, iters / 10);  // warm-up (clocks ramp)
  check(cudaGetLastError(), "mma_loop launch");  // e.g. no kernel image for this card
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "cudaEventCreate");
  check(cudaEventCreate(&e1), "cudaEventCreate");
  check(cudaEventRecord(e0), "cudaEventRecord");
  mma_loop<kEx2><<<sms, threads>>>(out, clocks, iters);
  check(cudaEventRecord(e1), "cudaEventRecord");
  check(cudaEventSynchronize(e1), "kernel");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
  long long host[2];
  check(cudaMemcpy(host, clocks, sizeof(host), cudaMemcpyDeviceToHost), "cudaMemcpy");
  cudaEventDestroy(e0), cudaEventDestroy(e1), cudaFree(out), cudaFree(clocks);
  const double products = static_cast<double>(sms) * warps * iters * kChains;
  const double flops = products * 2.0 * 16 * 8 * 16;
  const double mhz = host[1] > 0 ? 1e3 * static_cast<double>(host[0]) / static_cast<double>(host[1]) : 0;
  const double cycles = mhz * 1e3 * ms;  // block 0's clock over the whole kernel
  return {flops / (ms * 1e-3) / 1e12, mhz, cycles > 0 ? products / sms / cycles : 0};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mma.sync m16n8k16 (bf16 -> fp32) rate with register operands, W warps an SM"};
  std::vector<int> warps = {4, 8, 16};
  int iters = 200000;
  app.add_option("--warps", warps, "warps an SM (one block each SM), repeatable")->check(CLI::Range(1, 32));
  app.add_option("--iters", iters, "loop trips a warp (x 8 products)")->check(CLI::Range(1000, 100000000));
  CLI11_PARSE(app, argc, argv);
  try {
    const svoo::bench::Device device = svoo::bench::current_device();
    const int sms = device.sms;
    std::printf("# %s, %d SMs; mma.sync m16n8k16 bf16 -> fp32, %d accumulators a warp, %d trips\n", device.name.c_str(), sms, kChains,
                iters);
    std::printf("# warps/SM  TFLOP/s  SM MHz  products/SM/cycle | with an ex2 every 4th: TFLOP/s  MHz  products/SM/cycle\n");
    for (int w : warps) {
      const Result r = run<false>(sms, w, iters), x = run<true>(sms, w, iters);
      std::printf("%10d  %7.1f  %6.0f  %17.3f | %7.1f  %6.0f  %6.3f\n", w, r.tflops, r.mhz, r.products_per_sm_cycle, x.tflops,
                  x.mhz, x.products_per_sm_cycle);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "svoo_mma_peak_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
