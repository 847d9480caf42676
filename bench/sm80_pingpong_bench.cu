// svoo_sm80_pingpong_bench: how the portable attention kernel's warps share the tensor cores, and
// what taking turns would buy. A design study for the sm_80 path's target (its sparse rate at
// least FlashAttention-2's dense one): on an H200 both that kernel and FlashAttention-2 keep the
// tensor pipe busy ~57 % of the time (Nsight Compute, run227), where mma.sync alone reaches 645
// TFLOP/s (svoo_mma_peak_bench). Each warp of the kernel runs S = Q K^T (the tensor cores), its
// softmax (the FMA and MUFU pipes), then O += P V; the two warps a scheduler holds come from two
// independent blocks, so nothing keeps one in its softmax while the other multiplies.
//
// The blocks here run that per-tile code (src/cuda/attention_tile.cuh, the kernel's own) on tiles
// in shared memory, `--tiles` times, with the kernel's two barriers a tile (the first three modes
// copy nothing in):
//   free      blocks of 4 warps (128 rows), two an SM: the kernel's arrangement;
//   groups    blocks of 8 warps, two groups of 4 with barriers of their own (one block an SM);
//   pingpong  as groups, and the groups take turns on the tensor cores (FlashAttention-3's
//             ping-pong, on named barriers): a group's S and its P V each wait for the other
//             group's last products, so one group's softmax runs under the other's products.
//   copies    as free, and each tile's K and V rows copied in as the kernel's dense mode does
//             (cp.async, V(t) under Q K(t)^T, K(t + 1) under the softmax and P V(t), each waited
//             for at the next barrier), from 4 MB of rows that stay in L2;
//   nowait    as copies without the waits (timing only: a tile may be read while it lands);
//   shared    as groups, both groups reading one K and one V tile (two 128-row items of one query
//             cluster), which all 8 warps copy in, each thread half as many rows as in copies.
// Reported: effective TFLOP/s (4 x 128 x 64 x 128 FLOPs a group and tile) and the SM clock.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "cuda/attention_tile.cuh"
#include "cuda_device.cuh"

namespace {

using namespace svoo::cuda::detail::sm80;
constexpr int kWR = 32, kMT = 2, kRows = 4 * kWR;            // rows a warp, its row tiles of 16, rows a group
constexpr int kGroupElems = (kRows + 2 * kBN) * kPitch;      // a group's Q, K and V tiles
constexpr int kGroupBytes = kGroupElems * 2;
enum Mode { kFree, kGroups, kPingpong, kCopies, kNoWait, kShared };
constexpr int kSrcRows = 8192;  // rows of K and of V to copy from (2 MB each)

using svoo::bench::check;

__device__ __forceinline__ void bar_sync(int id, int threads) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory"); }
__device__ __forceinline__ void bar_arrive(int id, int threads) { asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory"); }
__device__ __forceinline__ std::uint64_t global_ns() {
  std::uint64_t t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

template <Mode kMode>
constexpr bool kSolo = kMode == kFree || kMode == kCopies || kMode == kNoWait;  // blocks of 4 warps, two an SM

template <Mode kMode>
__global__ void __launch_bounds__(kSolo<kMode> ? 128 : 256, kSolo<kMode> ? 2 : 1) tiles_kernel(int tiles, float* out,
                                                                                               long long* clocks,
                                                                                               const std::uint16_t* src) {
  extern __shared__ __align__(16) std::uint16_t smem[];
  const int g = kSolo<kMode> ? 0 : threadIdx.x / 128;  // the group
  const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32;
  std::uint16_t* sq = smem + g * kGroupElems;
  std::uint16_t* sk = (kMode == kShared ? smem : sq) + kRows * kPitch;  // shared: group 0's
  std::uint16_t* sv = sk + kBN * kPitch;
  // Random-looking values of size ~1 (bf16), different in each block and group.
  for (int i = tid; i < kGroupElems; i += 128) {
    std::uint32_t x = (i + 1) * 2654435761u ^ (blockIdx.x * 40503u + g * 977u);
    x ^= x >> 13, x *= 0x5bd1e995u, x ^= x >> 15;
    sq[i] = __bfloat16_as_ushort(__float2bfloat16(static_cast<float>(x & 0xffff) / 32768.f - 1.f));
  }
  __syncthreads();
  // The kernel's two barriers a tile: its group's (its block's in kFree).
  auto group_sync = [&] {
    if constexpr (kMode == kCopies || kMode == kShared) svoo::cuda::detail::ptx::cp_async_wait<0>();
    if constexpr (kSolo<kMode> || kMode == kShared) __syncthreads();
    else bar_sync(1 + g, 128);
  };
  // A tile's 64 rows of K or V (the kernel's pattern: 16 lanes a 256-byte row, 8 rows a thread;
  // shared: 4 rows a thread of 256).
  constexpr int kCopiers = kMode == kShared ? 256 : 128, kRowStep = kCopiers / 16;
  const int crow = static_cast<int>(threadIdx.x % kCopiers) / 16, cc = (tid % 16) * 8;
  auto copy_tile = [&](std::uint16_t* dst, int which, int t) {
    if constexpr (kMode == kCopies || kMode == kNoWait || kMode == kShared) {
      const std::uint16_t* base = src + static_cast<std::size_t>(which) * kSrcRows * kD;
#pragma unroll
      for (int i = 0; i < kBN / kRowStep; ++i) {
        const int row = (t * kBN + crow + kRowStep * i + blockIdx.x * 61) % kSrcRows;
        svoo::cuda::detail::ptx::cp_async16(dst + (crow + kRowStep * i) * kPitch + cc, base + static_cast<std::size_t>(row) * kD + cc);
      }
      svoo::cuda::detail::ptx::cp_async_commit();
    }
  };
  // Ping-pong turns: barrier 3 + g is group g's turn; it opens when the other group arrives.
  auto my_turn = [&] { if constexpr (kMode == kPingpong) bar_sync(3 + g, 256); };
  auto your_turn = [&] { if constexpr (kMode == kPingpong) bar_arrive(3 + (g ^ 1), 256); };

  const float scale_log2 = 1.4426950408889634f / sqrtf(static_cast<float>(kD));
  const std::uint16_t* sq_warp = sq + warp * kWR * kPitch;
  std::uint32_t qf[1][4] = {};
  float o[kMT][kD / 8][4] = {};
  float m_row[kMT][2], l_row[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) m_row[mt][0] = m_row[mt][1] = -FLT_MAX, l_row[mt][0] = l_row[mt][1] = 0.f;
  const int L = tiles * kBN;
  const long long c0 = clock64();
  const std::uint64_t t0 = global_ns();
  if (g == 1) your_turn();  // group 0 multiplies first
  for (int t = 0; t < tiles; ++t) {
    group_sync();  // the kernel: K(t) landed
    float s[kMT][kBN / 8][4];
    copy_tile(sv, 1, t);
    my_turn();
    tile_scores<true, kMT, kMT>(s, qf, sq_warp, sk, lane);
    your_turn();
    group_sync();  // the kernel: V(t) landed
    if (t + 1 < tiles) copy_tile(sk, 0, t + 1);
    tile_softmax<true, kMT, kMT>(s, o, m_row, l_row, t, L, lane, scale_log2);
    my_turn();
    tile_pv<true, kMT, kMT>(s, o, sv, lane);
    your_turn();
  }
  if (g == 0) my_turn();  // the other group's last arrival
  const long long c1 = clock64();
  const std::uint64_t t1 = global_ns();
  float sum = l_row[0][0] + l_row[1][1];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) sum += o[mt][n][0] + o[mt][n][3];
  out[blockIdx.x * blockDim.x + threadIdx.x] = sum;
  if (blockIdx.x == 0 && threadIdx.x == 0) clocks[0] = c1 - c0, clocks[1] = static_cast<long long>(t1 - t0);
}

template <Mode kMode>
void run(const char* name, int sms, int tiles, const std::uint16_t* src) {
  const int threads = kSolo<kMode> ? 128 : 256, blocks = kSolo<kMode> ? 2 * sms : sms;
  const int smem = kSolo<kMode> ? kGroupBytes : 2 * kGroupBytes;
  check(cudaFuncSetAttribute(tiles_kernel<kMode>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), "cudaFuncSetAttribute");
  int fit = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, tiles_kernel<kMode>, threads, smem), "occupancy");
  float* out = nullptr;
  long long* clocks = nullptr;
  check(cudaMalloc(&out, sizeof(float) * blocks * threads), "cudaMalloc");
  check(cudaMalloc(&clocks, 2 * sizeof(long long)), "cudaMalloc");
  tiles_kernel<kMode><<<blocks, threads, smem>>>(tiles / 4, out, clocks, src);  // warm-up
  check(cudaGetLastError(), name);  // e.g. no kernel image for this card
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "cudaEventCreate");
  check(cudaEventCreate(&e1), "cudaEventCreate");
  check(cudaEventRecord(e0), "cudaEventRecord");
  tiles_kernel<kMode><<<blocks, threads, smem>>>(tiles, out, clocks, src);
  check(cudaEventRecord(e1), "cudaEventRecord");
  check(cudaEventSynchronize(e1), name);
  float ms = 0;
  check(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
  long long host[2];
  check(cudaMemcpy(host, clocks, sizeof(host), cudaMemcpyDeviceToHost), "cudaMemcpy");
  cudaEventDestroy(e0), cudaEventDestroy(e1), cudaFree(out), cudaFree(clocks);
  const double flops = 2.0 * sms * tiles * 4.0 * kRows * kBN * kD;  // two groups (or blocks) an SM
  const double mhz = host[1] > 0 ? 1e3 * static_cast<double>(host[0]) / static_cast<double>(host[1]) : 0;
  std::printf("%-9s  %d block(s)/SM  %7.1f TFLOP/s  %5.0f MHz  %.3f ms\n", name, fit, flops / (ms * 1e-3) / 1e12, mhz, ms);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"the portable attention kernel's per-tile code on resident tiles: free blocks, groups, ping-pong"};
  int tiles = 4096, rounds = 3;
  app.add_option("--tiles", tiles, "key tiles a group")->check(CLI::Range(64, 1 << 20));
  app.add_option("--rounds", rounds, "times each mode runs, interleaved")->check(CLI::Range(1, 20));
  CLI11_PARSE(app, argc, argv);
  try {
    const svoo::bench::Device device = svoo::bench::current_device();
    const int sms = device.sms;
    std::printf("# %s, %d SMs; %d key tiles of 64 a group of 128 rows, bf16, head dim 128\n", device.name.c_str(), sms, tiles);
    std::uint16_t* src = nullptr;  // K's and V's rows to copy (their values do not matter here)
    check(cudaMalloc(&src, sizeof(std::uint16_t) * 2 * kSrcRows * kD), "cudaMalloc");
    check(cudaMemset(src, 0x3c, sizeof(std::uint16_t) * 2 * kSrcRows * kD), "cudaMemset");
    for (int r = 0; r < rounds; ++r) {
      run<kFree>("free", sms, tiles, src);
      run<kGroups>("groups", sms, tiles, src);
      run<kPingpong>("pingpong", sms, tiles, src);
      run<kCopies>("copies", sms, tiles, src);
      run<kNoWait>("nowait", sms, tiles, src);
      run<kShared>("shared", sms, tiles, src);
    }
    cudaFree(src);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "svoo_sm80_pingpong_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
