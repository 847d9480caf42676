// Variable-block sparse attention (spec 2.4) on Hopper's warpgroup tensor cores (sm_90a): the same
// work items, virtual key sequence and permutation-through reads/writes as attention.cu, with
// FlashAttention-3's structure:
//   - warp specialisation: warpgroup 0 is the producer (it gathers K and V rows through the
//     ranges and the key permutation with cp.async into separate two-stage K and V rings);
//     warpgroups 1 and 2 are consumers, 64 query rows each, so a work item is 128 query rows (an
//     item of at most 64 rows runs on one consumer);
//   - mbarriers between them (full: a stage has landed, completed by cp.async itself; empty: the
//     working consumers are done with it);
//   - S = Q K^T with wgmma m64n128k16 (A and B from shared memory, 128-byte swizzle), online
//     softmax in fp32 on the accumulators, then O += P V with P from registers (A operand) and V
//     read N-major from the same row layout (no transpose pass);
//   - each consumer keeps S(t) and P(t-1) V(t-1) in flight together (the softmax of one tile runs
//     under the products of the other), and the two consumers take turns issuing (ping-pong);
//   - setmaxnreg: the producer keeps 40 registers, the consumers 232.
// docs/cuda-backend.md has the measured effect of each of these.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cub/block/block_scan.cuh>

#include <cfloat>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "attention_kernel.cuh"
#include "ptx.cuh"
#include "wgmma.cuh"

namespace svoo::cuda::detail {

bool assign_wgmma_available();  // assign_wgmma.cu: this build has sm_90a code and the device is 9.0

namespace {

[[maybe_unused]] constexpr int kD = 128, kBN = 128;
constexpr int kBM = 128, kThreads = 384, kMaxRanges = 1024;
constexpr int kChunk = 128 * 128;   // one 64-column chunk of a 128-row tile, bytes
constexpr int kTile = 2 * kChunk;   // a 128 x 128 tile, bytes
constexpr int kSmemBytes = 1024 /*alignment slack*/ + 5 * kTile /*Q, K x2, V x2*/ + (2 * kMaxRanges + 2) * 4 + 8 * 8;
constexpr int kPingpong = 1;     // kernel flag: consumers take turns issuing products
constexpr int kLazyRescale = 2;  // kernel flag: rescale O only when a row maximum grew

// 2^x on the special-function unit, flushing denormals (the probabilities they would be are
// below bf16's resolution of a row's sum anyway).
using ptx::ex2;
[[maybe_unused]] __device__ __forceinline__ int swz(int r, int c16) { return wgmma::swizzled(r, c16, kChunk); }

template <bool kBf16>
__global__ void __launch_bounds__(kThreads, 1) attention_hopper_kernel(AttentionArgs a, int flags) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  unsigned char* base = wgmma::align_1024(smem_raw);
  unsigned char* sq = base;
  unsigned char* sk = sq + kTile;      // 2 stages
  unsigned char* sv = sk + 2 * kTile;  // 2 stages
  auto* r_begin = reinterpret_cast<std::int32_t*>(sv + 2 * kTile);
  auto* r_cum = r_begin + kMaxRanges;  // kMaxRanges + 1
  auto* bars = reinterpret_cast<std::uint64_t*>(r_cum + kMaxRanges + 1 + 1);  // 8-byte aligned (odd count + 1)
  std::uint64_t* full = bars;       // [K stage 0, K stage 1, V stage 0, V stage 1]
  std::uint64_t* empty = bars + 4;  // same order
  const bool sparse = a.range_ptr != nullptr;
  const int tid = threadIdx.x;

  // The item: (head, first query row, rows) and its key ranges.
  AttentionItem it;
  if (!attention_item<kBM>(a, it)) return;
  const int head = it.h, rows = it.rows;
  const std::int64_t row0 = it.row0, rb = it.rb, nr = it.nr;
  // An item of at most 64 rows needs one consumer: the other leaves at once, and the tensor cores
  // serve the one that works (no products on padding rows).
  const bool solo = rows <= 64;
  const std::int64_t h = head;
  const std::int32_t* qperm = sparse ? a.q_perm + h * a.q.tokens : nullptr;
  // The consumers issue their Q rows' copies first, so that the copies fly during the range scan,
  // and keep the rows' tokens for the epilogue (no second read of the permutation there).
  __shared__ std::int32_t q_tok[kBM];
  if (tid >= 128 && !(solo && tid >= 256)) {
    const int g = tid / 128 - 1, ctid = tid % 128;
    const auto* qbase = static_cast<const std::uint16_t*>(a.q.data) + h * a.q.head_stride;
    for (int e = ctid; e < 64 * 16; e += 128) {
      const int r = g * 64 + e / 16, c = e % 16;
      const bool ok = r < rows;
      const std::int32_t tok = ok ? (sparse ? qperm[row0 + r] : static_cast<std::int32_t>(row0 + r)) : 0;
      if (c == 0) q_tok[r] = tok;
      ptx::cp_async16(sq + swz(r, c), qbase + tok * a.q.row_stride + c * 8, ok ? 16 : 0);
    }
    ptx::cp_async_commit();
  }
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int total_keys;
  {
    constexpr int kPer = (kMaxRanges + kThreads - 1) / kThreads;
    int len[kPer];
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      const int j = tid * kPer + e;
      len[e] = 0;
      if (j < nr) {
        const int b = sparse ? a.range_begin[rb + j] : 0;
        const int en = sparse ? a.range_end[rb + j] : static_cast<int>(a.k.tokens);
        r_begin[j] = b;
        len[e] = en - b;
      }
    }
    int agg;
    Scan(scan_tmp).ExclusiveSum(len, len, agg);
#pragma unroll
    for (int e = 0; e < kPer; ++e)
      if (tid * kPer + e <= kMaxRanges) r_cum[tid * kPer + e] = len[e];
    if (tid == 0) {
      total_keys = agg;
      for (int s = 0; s < 4; ++s) {
        wgmma::mbar_init(&full[s], 128);   // every producer thread arrives once its copies landed
        wgmma::mbar_init(&empty[s], solo ? 128 : 256);  // every working consumer thread, products done
      }
      asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
  }
  __syncthreads();
  const int L = total_keys;
  const int tiles = (L + kBN - 1) / kBN;

  if (tid < 128) {
    // ---- producer: gather K and V tiles of the virtual key sequence into their rings ----
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    const auto* kbase = reinterpret_cast<const unsigned char*>(static_cast<const std::uint16_t*>(a.k.data) + h * a.k.head_stride);
    const auto* vbase = reinterpret_cast<const unsigned char*>(static_cast<const std::uint16_t*>(a.v.data) + h * a.v.head_stride);
    const std::int64_t kstride = a.k.row_stride * 2, vstride = a.v.row_stride * 2;  // bytes
    const std::int32_t* kperm = sparse ? a.k_perm + h * a.k.tokens : nullptr;
    const int warp = tid / 32, lane = tid % 32;
    // Lane l copies the 16-byte piece c = l % 16 of rows 2i + l / 16 (i = 0..15) of its warp's 32
    // rows: a half-warp reads one whole 256-byte row (full sectors). The shared-memory offsets of
    // those pieces depend on i only through i % 4 (the swizzle) and a constant, so they are four
    // registers plus immediates; the global row addresses come from the lane that owns the row.
    const int hrow = lane >> 4, c = lane & 15;
    std::uint32_t soff[4];
#pragma unroll
    for (int q = 0; q < 4; ++q)
      soff[q] = (c >> 3) * kChunk + warp * 4096 + hrow * 128 + ((((c & 7) ^ hrow) ^ (2 * q)) << 4);
    const std::uint32_t sk_addr = ptx::smem_addr(sk), sv_addr = ptx::smem_addr(sv);
    // The token of this lane's row of tile t (row 32*warp + lane), or -1 past the end. The range
    // holding it only moves forward from tile to tile (r_cum[nr] = L ends the walk).
    int cur = 0;
    auto token_of = [&](int t) -> std::int32_t {
      const int vt = t * kBN + warp * 32 + lane;
      if (vt >= L) return -1;
      while (r_cum[cur + 1] <= vt) ++cur;
      const std::int64_t phys = r_begin[cur] + (vt - r_cum[cur]);
      return sparse ? __ldg(kperm + phys) : static_cast<std::int32_t>(phys);
    };
    std::int32_t tok = tiles > 0 ? token_of(0) : -1;
    for (int t = 0; t < tiles; ++t) {
      const int st = t & 1;
      const bool full_tile = (t + 1) * kBN <= L;  // the same for the whole warpgroup
      const std::int32_t row_tok = tok;
      if (t + 1 < tiles) tok = token_of(t + 1);  // its load flies while this tile's copies issue
      for (int which = 0; which < 2; ++which) {
        if (t >= 2) wgmma::mbar_wait(&empty[2 * which + st], ((t >> 1) - 1) & 1);
        const std::uint32_t dst = (which == 0 ? sk_addr : sv_addr) + st * kTile;
        const unsigned char* row = (which == 0 ? kbase : vbase) +
                                   static_cast<std::int64_t>(row_tok < 0 ? 0 : row_tok) * (which == 0 ? kstride : vstride);
        const auto rowbits = reinterpret_cast<std::uint64_t>(row);
        // Fully unrolled: 5 instructions a copy (two shuffles, a 64-bit add, the copy) and no loop
        // counter or address steps. The producer's instructions share the schedulers with the
        // consumers' softmax: with `unroll 4` dense ran at 532-535 TFLOP/s, unrolled 584-587
        // (run85, H100, same run).
        const std::uint32_t lo = static_cast<std::uint32_t>(rowbits), hi = static_cast<std::uint32_t>(rowbits >> 32);
        if (full_tile) {
#pragma unroll
          for (int i = 0; i < 16; ++i) {
            const int src = 2 * i + hrow;
            const std::uint64_t p = (static_cast<std::uint64_t>(__shfl_sync(0xffffffffu, hi, src)) << 32 |
                                     __shfl_sync(0xffffffffu, lo, src)) + c * 16;
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst + soff[i & 3] + (i >> 2) * 1024 + (i & 3) * 256),
                         "l"(p));
          }
        } else {  // the last, partial tile: rows past the end are zero-filled
#pragma unroll
          for (int i = 0; i < 16; ++i) {
            const int src = 2 * i + hrow;
            const std::uint64_t p = (static_cast<std::uint64_t>(__shfl_sync(0xffffffffu, hi, src)) << 32 |
                                     __shfl_sync(0xffffffffu, lo, src)) + c * 16;
            const int bytes = __shfl_sync(0xffffffffu, row_tok, src) < 0 ? 0 : 16;
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst + soff[i & 3] + (i >> 2) * 1024 + (i & 3) * 256),
                         "l"(p), "r"(bytes));
          }
        }
        wgmma::mbar_arrive_cp_async(&full[2 * which + st]);
      }
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    return;
  }

  // ---- consumers: 64 query rows each ----
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
  const int g = tid / 128 - 1, ctid = tid % 128, warp = ctid / 32, lane = ctid % 32;
  if (solo && g == 1) return;
  ptx::cp_async_wait<0>();  // this thread's Q copies, issued before the range scan
  wgmma::fence_async_shared();
  wgmma::named_sync(1 + g, 128);

  const float scale_log2 = 1.4426950408889634f / sqrtf(static_cast<float>(kD));
  const bool pingpong = (flags & kPingpong) != 0 && !solo;
  float o[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.f;
  float m_row[2] = {-FLT_MAX, -FLT_MAX}, l_row[2] = {0.f, 0.f}, alpha[2] = {1.f, 1.f};
  const bool lazy = (flags & kLazyRescale) != 0;
  bool rescale = true;  // the last softmax moved a maximum of this warp's rows: O must be rescaled
  float s[64];
  std::uint32_t pa[kBN / 16][4];
  const unsigned char* qg = sq + g * 64 * 128;  // this warpgroup's rows in each chunk

  // Ping-pong: the two consumers take turns issuing their products (named barriers 3 and 4), so
  // one's softmax runs while the other's products occupy the tensor cores. Consumer 1 lets
  // consumer 0 go first; consumer 0 absorbs the last turn at the end.
  if (pingpong && g == 1) wgmma::named_arrive(3, 256);
  auto turn_begin = [&] {
    if (pingpong) wgmma::named_sync(3 + g, 256);
  };
  auto turn_end = [&] {
    if (pingpong) wgmma::named_arrive(4 - g, 256);
  };
  auto wait_full = [&](int which, int t) {
    wgmma::mbar_wait(&full[2 * which + (t & 1)], (t >> 1) & 1);
  };
  // Descriptors are built once; a step's operand is the base plus its byte offset / 16 (the
  // address field cannot overflow: shared memory offsets stay below 2^18).
  const std::uint64_t dq = wgmma::descriptor(qg, 16, 1024);
  const std::uint64_t dk0 = wgmma::descriptor(sk, 16, 1024);
  const std::uint64_t dv0 = wgmma::descriptor(sv, kChunk, 1024);
  auto issue_s = [&](int t) {
    const std::uint64_t dk = dk0 + (t & 1) * (kTile >> 4);
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      const int off = ((ks / 4) * kChunk + (ks % 4) * 32) >> 4;
      wgmma::m64n128k16_ss<kBf16>(s, dq + off, dk + off, ks > 0 ? 1 : 0);
    }
    wgmma::commit();
  };
  auto issue_pv = [&](int t) {
    const std::uint64_t dv = dv0 + (t & 1) * (kTile >> 4);
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) wgmma::m64n128k16_rs_mn<kBf16>(o, pa[kk], dv + ((kk * 16 * 128) >> 4));
    wgmma::commit();
  };
  // Online softmax of tile t in s (element i: row 16*warp + 8*((i/2)%2) + lane/4, key column
  // 8*(i/4) + 2*(lane%4) + i%2): s becomes P, alpha the rescaling of the rows' running output.
  auto softmax = [&](int t) {
    if ((t + 1) * kBN > L) {
#pragma unroll
      for (int i = 0; i < 64; ++i)
        if (t * kBN + 8 * (i / 4) + 2 * (lane % 4) + (i % 2) >= L) s[i] = -FLT_MAX;
    }
    // Row maxima and sums as 4-way trees: serial chains of 32 dependent operations would stall
    // the two warps a scheduler has.
    float pm[2][4];
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int j = 0; j < 4; ++j) pm[half][j] = m_row[half];
#pragma unroll
    for (int i = 0; i < 64; ++i) pm[(i / 2) % 2][(i / 4) % 4] = fmaxf(pm[(i / 2) % 2][(i / 4) % 4], s[i]);
    // Rescaling only where needed: when no row of the warp has a new maximum, alpha is 1 for all
    // of them and the 64 multiplies of O are skipped (bitwise the same result). Keeping stale
    // maxima up to a margin (probabilities above 1) would skip more, but measured 15 % more
    // error: the largest probability of a row is then rounded to bf16 instead of being 1.
    float mx[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      mx[half] = fmaxf(fmaxf(pm[half][0], pm[half][1]), fmaxf(pm[half][2], pm[half][3]));
      mx[half] = fmaxf(mx[half], __shfl_xor_sync(0xffffffffu, mx[half], 1));
      mx[half] = fmaxf(mx[half], __shfl_xor_sync(0xffffffffu, mx[half], 2));
    }
    rescale = !lazy || __any_sync(0xffffffffu, mx[0] > m_row[0] || mx[1] > m_row[1]);
    float mxs[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      if (rescale) {
        alpha[half] = ex2((m_row[half] - mx[half]) * scale_log2);
        m_row[half] = mx[half];
      }
      mxs[half] = m_row[half] * scale_log2;
    }
    float ps[2][4] = {};
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      s[i] = ex2(fmaf(s[i], scale_log2, -mxs[(i / 2) % 2]));
      ps[(i / 2) % 2][(i / 4) % 4] += s[i];
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float sum = (ps[half][0] + ps[half][1]) + (ps[half][2] + ps[half][3]);
      l_row[half] = rescale ? l_row[half] * alpha[half] + sum : l_row[half] + sum;
    }
  };
  // P as the A operand: for keys 16*kk.., the m16n8k16 fragment is s[8kk .. 8kk + 7] in order.
  auto pack_p = [&] {
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk)
#pragma unroll
      for (int e = 0; e < 4; ++e) pa[kk][e] = ptx::pack2<kBf16>(s[8 * kk + 2 * e], s[8 * kk + 2 * e + 1]);
  };

  // Software pipeline (FlashAttention-3's intra-warpgroup overlap): while P(t-1) V(t-1) runs on
  // the tensor cores, the softmax of S(t) runs on the CUDA cores.
  if (tiles > 0) {
    wait_full(0, 0);
    wgmma::fence_async_shared();
    turn_begin();
    wgmma::fence();
    issue_s(0);
    turn_end();
    wgmma::wait<0>();
    wgmma::fence_regs(s);
    wgmma::mbar_arrive(&empty[0]);
    softmax(0);
    pack_p();
    for (int t = 1; t < tiles; ++t) {
      wait_full(0, t);
      wait_full(1, t - 1);
      wgmma::fence_async_shared();
      turn_begin();
      wgmma::fence_regs(o);
      wgmma::fence_regs(pa);
      wgmma::fence();
      issue_s(t);
      issue_pv(t - 1);
      turn_end();
      wgmma::wait<1>();
      wgmma::fence_regs(s);
      wgmma::mbar_arrive(&empty[t & 1]);
      softmax(t);
      wgmma::wait<0>();
      wgmma::fence_regs(o);
      wgmma::fence_regs(pa);
      wgmma::mbar_arrive(&empty[2 + ((t - 1) & 1)]);
      if (rescale) {
#pragma unroll
        for (int i = 0; i < 64; ++i) o[i] *= alpha[(i / 2) % 2];
      }
      pack_p();
    }
    wait_full(1, tiles - 1);
    wgmma::fence_async_shared();
    turn_begin();
    wgmma::fence_regs(o);
    wgmma::fence_regs(pa);
    wgmma::fence();
    issue_pv(tiles - 1);
    turn_end();
    wgmma::wait<0>();
    wgmma::fence_regs(o);
    wgmma::mbar_arrive(&empty[2 + ((tiles - 1) & 1)]);
  }
  if (pingpong && g == 0) wgmma::named_sync(3, 256);

  // Normalise, stage the rows in this warpgroup's part of the Q tile, write through the permutation.
  float inv[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float l = l_row[half];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[half] = l > 0.f ? 1.f / l : 0.f;
    const int r = g * 64 + warp * 16 + half * 8 + lane / 4;
    if (a.lse && lane % 4 == 0 && r < rows) {
      a.lse[h * a.q.tokens + q_tok[r]] = l > 0.f ? m_row[half] * (scale_log2 / 1.4426950408889634f) + logf(l) : -INFINITY;
    }
  }
#pragma unroll
  for (int i = 0; i < 64; i += 2) {
    const int half = (i / 2) % 2;
    const int r = g * 64 + warp * 16 + half * 8 + lane / 4;
    *reinterpret_cast<std::uint32_t*>(sq + swz(r, i / 4) + 4 * (lane % 4)) =
        ptx::pack2<kBf16>(o[i] * inv[half], o[i + 1] * inv[half]);
  }
  wgmma::named_sync(1 + g, 128);
  auto* obase = static_cast<std::uint16_t*>(a.out.data) + h * a.out.head_stride;
  for (int e = ctid; e < 64 * 16; e += 128) {
    const int r = g * 64 + e / 16, c = e % 16;
    if (r >= rows) continue;
    *reinterpret_cast<uint4*>(obase + static_cast<std::int64_t>(q_tok[r]) * a.out.row_stride + c * 8) = *reinterpret_cast<const uint4*>(sq + swz(r, c));
  }
#endif
}

// SVOO_ATTN_PINGPONG=0 turns the consumers' turn-taking off, SVOO_ATTN_LAZY=0 the lazy
// rescaling (for comparison).
int hopper_flags() {
  static const int flags = [] {
    auto off = [](const char* name) {
      const char* e = std::getenv(name);
      return e && std::strcmp(e, "0") == 0;
    };
    return (off("SVOO_ATTN_PINGPONG") ? 0 : kPingpong) | (off("SVOO_ATTN_LAZY") ? 0 : kLazyRescale);
  }();
  return flags;
}

template <bool kBf16>
void launch_typed(const AttentionArgs& a, cudaStream_t stream) {
  const std::int64_t grid = a.range_ptr ? a.item_capacity : a.q.heads * ((a.q.tokens + kBM - 1) / kBM);
  if (grid == 0) return;
  cudaFuncSetAttribute(attention_hopper_kernel<kBf16>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  attention_hopper_kernel<kBf16><<<static_cast<unsigned>(grid), kThreads, kSmemBytes, stream>>>(a, hopper_flags());
}

}  // namespace

bool attention_hopper_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("SVOO_ATTN_KERNEL");
    return !(e && std::strcmp(e, "sm80") == 0) && assign_wgmma_available();
  }();
  return on && attention_rows() == kBM;
}

void launch_attention_hopper(const AttentionArgs& a, cudaStream_t stream) {
  a.q.elem == Elem::bf16 ? launch_typed<true>(a, stream) : launch_typed<false>(a, stream);
}

}  // namespace svoo::cuda::detail
