// The assignment of assign.cu on Hopper's warpgroup tensor cores (wgmma, sm_90a): the same
// fused product + argmax, with operands read by the tensor cores straight from shared memory in
// the 128-byte-swizzled K-major layout instead of through ldmatrix and registers. A block owns 128
// rows (64 per warpgroup) and streams centroids 128 at a time; each wgmma is m64 n128 k16 with
// fp32 accumulators (64 registers a thread), folded into a running (max, lowest index) per row.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstdint>
#include <type_traits>

#include "device_info.hpp"
#include "kernels.cuh"
#include "ptx.cuh"
#include "wgmma.cuh"
#include "wgmma_stream.cuh"

namespace svoo::cuda::detail {

// True where this build has the kernel (sm_90a code) and the device can run it.
bool assign_wgmma_available();
void launch_assign_wgmma(const RowsView& x, const void* m, const float* bias, int clusters, std::int32_t* labels,
                         cudaStream_t stream);
void launch_assign_wgmma_pipelined(const RowsView& x, const void* m, const float* bias, int clusters,
                                   std::int32_t* labels, cudaStream_t stream);

namespace {

[[maybe_unused]] constexpr int kDim = 128, kRows = 128, kCols = 128, kThreads = 256;
static_assert(kThreads == 256, "load_contiguous_tile copies 16 rows a pass, 8 passes");
constexpr int kChunkBytes = 128 * 128;                    // one 64-wide K chunk of 128 rows
constexpr int kTileBytes = 2 * kChunkBytes;               // 128 rows x 128 K, bf16
constexpr int kSmemBytes = kTileBytes * 3 + 1024;         // X + 2 centroid stages + alignment slack

[[maybe_unused]] __device__ __forceinline__ int swizzled(int r, int c16) { return wgmma::swizzled(r, c16, kChunkBytes); }
[[maybe_unused]] __device__ __forceinline__ std::uint64_t descriptor(const void* p) { return wgmma::descriptor(p, 16, 1024); }

[[maybe_unused]] __device__ __forceinline__ bool better(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

// A thread's two rows (r0 + lane / 4 and r0 + 8 + lane / 4, r0 = the warp's first row in the
// head): merge the four lanes that share a row (lowest index among equal values), store the labels
// of rows < tokens (0 where every score was NaN), and reset the running bests.
[[maybe_unused]] __device__ __forceinline__ void store_labels(float (&best_v)[2], int (&best_i)[2], std::int64_t r0,
                                                              std::int64_t tokens, std::int32_t* labels_head, int lane) {
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
    const std::int64_t n = r0 + half * 8 + lane / 4;
    if (lane % 4 == 0 && n < tokens) labels_head[n] = i == 0x7fffffff ? 0 : i;
    best_v[half] = -FLT_MAX;
    best_i[half] = 0x7fffffff;
  }
}

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
  unsigned char* base = wgmma::align_1024(smem_raw);
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
  store_labels(best_v, best_i, row0 + wg * 64 + warp * 16, tokens, labels + head * tokens, lane);
#endif
}

// ---- Variant 4: pipelined and persistent; the default for co-clustering on compute capability
// 9.0 (verified and timed on an H100: docs/cuda-backend.md). ----
//
// Same tile shapes, layout and fold values as above; what changes is the schedule
// (wgmma_stream.cuh, shared with the tau-density): two accumulator banks (step g+1's products are
// issued before step g's argmax is folded; registers cannot be indexed at run time, so the step
// loop is unrolled by two with the banks swapped), centroid tiles through a kStages ring tracked
// with mbarriers, and persistent blocks (one per SM; one is all that fits: 225 KB of shared memory,
// 2 x 64 accumulators a thread): block b takes the work items (head, 128-row block) b, b + grid,
// ... and runs their steps (item, centroid tile) as one stream, so the next items' X tiles and
// first centroid tiles load while the current item multiplies; with one non-persistent block per
// SM, every block's X load and pipeline fill would leave the SM idle. The only tensor-core gap per
// warpgroup is the issue right after wait<0>, and the other warpgroup's queued group usually
// covers it; writing bias and mask into the accumulators in place made ptxas serialise the wgmmas.
// Prefetch distance of the ring: kStages - 1 steps. Centroid reads: 32 KB per step and block, from
// L2 (128 FLOP per byte: 500 TFLOP/s needs ~3.9 TB/s of L2 reads).
constexpr int kStages = 4;
// X buffers: item i goes to buffer i % kXBufs, loaded during the last step of item i - kXBufs, so
// it has kXBufs - 1 items of lead. With 2, a 256-cluster side (2 steps an item) left each X load
// under 2 steps and ran at ~400 TFLOP/s against the keys' 545 (run44, H100); 3 fill the 227 KB of
// shared memory.
constexpr int kXBufs = 3;
constexpr int kPipeSmemBytes = (kXBufs + kStages) * kTileBytes + 1024;  // X buffers + ring + alignment slack

// A tile of 128 centroid rows, contiguous in memory (row stride kDim): thread t copies the
// 16-byte piece t % 16 of rows t / 16 + 16 k (k = 0..7). Source and destination then advance by
// constants (4096 and 2048 bytes: the swizzle of row r + 16k equals that of row r), so each copy
// is one instruction instead of a row-address computation. Rows >= valid are zero-filled. A full
// tile (every tile but a partial last one) takes the offsets as immediates of the copies.
template <int kK>
__device__ __forceinline__ void copy_rows_from(std::uint32_t d0, const unsigned char* s0) {
  if constexpr (kK < 8) {
    asm volatile("cp.async.cg.shared.global [%0+%2], [%1+%3], 16;\n" ::"r"(d0), "l"(s0), "n"(kK * 2048), "n"(kK * 4096));
    copy_rows_from<kK + 1>(d0, s0);
  }
}

[[maybe_unused]] __device__ __forceinline__ void load_contiguous_tile(unsigned char* dst, const std::uint16_t* src,
                                                                      int valid) {
  const int t = threadIdx.x, r0 = t >> 4;
  const std::uint32_t d0 = ptx::smem_addr(dst + swizzled(r0, t & 15));
  const unsigned char* s0 = reinterpret_cast<const unsigned char*>(src) + t * 16;
  if (valid >= kCols) {
    copy_rows_from<0>(d0, s0);
    return;
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const bool ok = r0 + 16 * k < valid;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d0 + k * 2048),
                 "l"(ok ? s0 + k * 4096 : s0), "r"(ok ? 16 : 0));
  }
}

template <bool kBf16>
__global__ void __launch_bounds__(kThreads, 1)
    assign_wgmma_pipe_kernel(const std::uint16_t* __restrict__ x, std::int64_t tokens, std::int64_t head_stride,
                             std::int64_t row_stride, const std::uint16_t* __restrict__ m,
                             const float* __restrict__ bias, int clusters, int heads, std::int32_t* __restrict__ labels) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  __shared__ std::uint64_t full[kStages];   // centroid stage s holds its next step
  __shared__ std::uint64_t empty[kStages];  // every thread is done with the products of stage s's step
  __shared__ std::uint64_t xfull[kXBufs];  // X buffer b holds its next item
  unsigned char* base = wgmma::align_1024(smem_raw);
  unsigned char* sx = base;                        // kXBufs X buffers (item i in buffer i % kXBufs)
  unsigned char* sm = base + kXBufs * kTileBytes;  // kStages centroid stages (step g in stage g % kStages)
  const int rblocks = static_cast<int>((tokens + kRows - 1) / kRows);
  const int items_total = heads * rblocks;
  const int items = (items_total - static_cast<int>(blockIdx.x) + static_cast<int>(gridDim.x) - 1) /
                    static_cast<int>(gridDim.x);  // this block's items (grid <= items_total)
  const int tiles = (clusters + kCols - 1) / kCols;
  const int steps = items * tiles;
  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;

  wgmma::Stream<kStages, kXBufs> stream{full, empty, xfull, items, tiles};
  if (threadIdx.x == 0) stream.init(kThreads);
  __syncthreads();

  // Local item li -> its head and first row.
  auto item_head = [&](int li) { return (static_cast<int>(blockIdx.x) + li * static_cast<int>(gridDim.x)) / rblocks; };
  auto item_row0 = [&](int li) {
    const int w = static_cast<int>(blockIdx.x) + li * static_cast<int>(gridDim.x);
    return static_cast<std::int64_t>(w % rblocks) * kRows;
  };
  auto load_x = [&](int li) {
    load_rows(sx + (li % kXBufs) * kTileBytes, x + item_head(li) * head_stride, item_row0(li), tokens, row_stride);
    wgmma::mbar_arrive_cp_async(&xfull[li % kXBufs]);
  };
  // The centroid loader walks the steps kStages ahead of the fold.
  int ld_step = 0, ld_li = 0, ld_t = 0;
  const std::uint16_t* ld_mh = m + static_cast<std::int64_t>(item_head(0)) * clusters * kDim;
  auto load_next_tile = [&] {
    if (ld_step < steps) {
      load_contiguous_tile(sm + (ld_step % kStages) * kTileBytes, ld_mh + static_cast<std::int64_t>(ld_t) * kCols * kDim,
                           clusters - ld_t * kCols);
      wgmma::mbar_arrive_cp_async(&full[ld_step % kStages]);
    }
    ++ld_step;
    if (++ld_t == tiles) {
      ld_t = 0;
      if (++ld_li < items) ld_mh = m + static_cast<std::int64_t>(item_head(ld_li)) * clusters * kDim;
    }
  };
  // Descriptors built once; a step's operands are these plus byte offsets / 16.
  // Only the low word (start address / 16, which never carries out of it here) differs between
  // a step's operands; the high word (stride, swizzle) is a constant. Adding the offsets in 32 bits
  // lets ptxas build each descriptor with one add and one move to a uniform register, where the
  // 64-bit adds took five or six instructions a wgmma on the path to the tensor cores (run38).
  const std::uint32_t dx0 = static_cast<std::uint32_t>(descriptor(sx + wg * 64 * 128));  // this warpgroup's rows of X buffer 0
  const std::uint32_t dm0 = static_cast<std::uint32_t>(descriptor(sm));
  constexpr std::uint64_t kDescHigh = wgmma::descriptor_high(1024);  // that of descriptor(., 16, 1024)
  auto issue = [&](float (&d)[64], int g, int li) {
    const std::uint32_t da = dx0 + static_cast<std::uint32_t>((li % kXBufs) * (kTileBytes >> 4));
    const std::uint32_t db = dm0 + (static_cast<unsigned>(g) % kStages) * (kTileBytes >> 4);
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks) {
      const std::uint32_t off = ((ks / 4) * kChunkBytes + (ks % 4) * 32) >> 4;
      wgmma::m64n128k16_ss<kBf16>(d, kDescHigh | (da + off), kDescHigh | (db + off), ks > 0 ? 1 : 0);
    }
    wgmma::commit();
  };

  // Prologue: X of items 0 .. kXBufs - 1, centroid steps 0 .. kStages - 1; step 0's products into bank 0.
  for (int li = 0; li < kXBufs && li < items; ++li) load_x(li);
  for (int s = 0; s < kStages; ++s) load_next_tile();
  float d0[64], d1[64];
  stream.begin(d0, issue);

  float best_v[2] = {-FLT_MAX, -FLT_MAX};
  int best_i[2] = {0x7fffffff, 0x7fffffff};
  int head = item_head(0);
  std::int64_t row0 = item_row0(0);
  const float* bh = bias ? bias + static_cast<std::int64_t>(head) * clusters : nullptr;

  // Fold: the same values and decisions as assign_wgmma_kernel's fold (bias, the mask of columns
  // >= clusters with -FLT_MAX, strict > across tiles, lowest column among equal maxima); the row
  // maxima are 4-way trees instead of chains (max is exact, so the order does not change the
  // result). Element i of d is row 16*warp + 8*((i/2)%2) + lane/4, column 8*(i/4) + 2*(lane%4) + i%2.
  auto fold = [&](float (&d)[64], int t) {
    // Bias and the mask of a partial last tile are applied on the fly: writing them into the
    // accumulators made ptxas serialise the wgmmas (C7514).
    auto run = [&](auto adjust) {
      auto value = [&](int i) {
        if constexpr (decltype(adjust)::value) {
          const int j = t * kCols + 8 * (i / 4) + 2 * (lane % 4) + (i % 2);
          return j < clusters ? d[i] + (bh ? __ldg(bh + j) : 0.0f) : -FLT_MAX;
        } else {
          return d[i];
        }
      };
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float pm[4] = {-FLT_MAX, -FLT_MAX, -FLT_MAX, -FLT_MAX};
#pragma unroll
        for (int i = 0; i < 64; ++i)
          if ((i / 2) % 2 == half) pm[(i / 4) % 4] = fmaxf(pm[(i / 4) % 4], value(i));
        const float mx = fmaxf(fmaxf(pm[0], pm[1]), fmaxf(pm[2], pm[3]));
        if (mx > best_v[half]) {
          int found = 0x7fffffff;
#pragma unroll
          for (int i = 63; i >= 0; --i)
            if ((i / 2) % 2 == half && value(i) == mx) found = t * kCols + 8 * (i / 4) + 2 * (lane % 4) + (i % 2);
          best_v[half] = mx;
          best_i[half] = found;
        }
      }
    };
    if (bh || (t + 1) * kCols > clusters) {
      run(std::true_type{});
    } else {
      run(std::false_type{});
    }
  };
  // An item's labels (and the running bests reset for the next item).
  auto store = [&] {
    store_labels(best_v, best_i, row0 + wg * 64 + warp * 16, tokens, labels + static_cast<std::int64_t>(head) * tokens,
                 lane);
  };
  // The next item's head, first row and bias.
  auto next_item = [&](int li) {
    head = item_head(li);
    row0 = item_row0(li);
    bh = bias ? bias + static_cast<std::int64_t>(head) * clusters : nullptr;
  };
  // wgmma_stream.cuh has the schedule of a step.
  auto step = [&](float (&cur)[64], float (&nxt)[64], auto last) {
    stream.template step<decltype(last)::value>(cur, nxt, issue, fold, store, load_next_tile, load_x, next_item);
  };
  using More = std::false_type;
  using Last = std::true_type;
  // Step g's products are in bank g % 2. Pairs while both steps have a successor, then the tail.
  while (stream.g + 2 < steps) {
    step(d0, d1, More{});
    step(d1, d0, More{});
  }
  if (stream.g + 2 == steps) {
    step(d0, d1, More{});
    step(d1, d0, Last{});
  } else {
    step(d0, d1, Last{});
  }
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

}  // namespace

bool assign_wgmma_available() { return hopper_device(); }

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

void launch_assign_wgmma_pipelined(const RowsView& x, const void* m, const float* bias, int clusters,
                                   std::int32_t* labels, cudaStream_t stream) {
  const int sms = sm_count();
  const std::int64_t items = x.heads * ((x.tokens + kRows - 1) / kRows);
  const unsigned grid = static_cast<unsigned>(items < sms ? items : sms);
  const int heads = static_cast<int>(x.heads);
  const auto* xp = static_cast<const std::uint16_t*>(x.data);
  const auto* mp = static_cast<const std::uint16_t*>(m);
  auto go = [&](auto kernel) {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kPipeSmemBytes);
    kernel<<<grid, kThreads, kPipeSmemBytes, stream>>>(xp, x.tokens, x.head_stride, x.row_stride, mp, bias, clusters,
                                                      heads, labels);
  };
  x.elem == Elem::bf16 ? go(assign_wgmma_pipe_kernel<true>) : go(assign_wgmma_pipe_kernel<false>);
}

}  // namespace svoo::cuda::detail
