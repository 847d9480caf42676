// tau-density (spec 1) on the device without the N x N matrix and without sorting: two
// tensor-core passes over the scores of each query tile, then a per-head mean.
//   pass 1: a histogram per row of p = exp2((s - r) log2(e) / sqrt(d)) by octave: the count and
//           the exact mass (each significand added to two 32-bit sums, its high and low bits;
//           shared-memory integer atomics; the bin and the sums are read off p's float bits),
//           walked at the end of the tile to the bin where the mass crosses tau, which also gives
//           the mass and count above that bin and the total. The reference r is the row's max
//           over its first key tile, so no pass of its own computes the row max; the bins reach 32
//           octaves above r, and a CTA where some row's max goes beyond that sweeps again with the
//           row maxima as references;
//   pass 2: only the crossing bin: scores in its score range (a superset, two compares) go
//           through a per-warp queue; draining it with every lane busy recomputes p exactly as
//           pass 1 did, keeps those in the bin and splits them into 128 sub-bins (the next 7
//           significand bits), walked to a bracket [lo, hi] that holds the exact count and an
//           estimate inside it. No exp and no sums a score (but for tau = 1, the count of p > 0
//           against the row max).
// The arithmetic of the bins and of both walks is density_math.hpp (shared with the CPU tests).
// A CTA owns 64 query rows of one head (4 warps x 16 rows; Q fragments stay in registers) and
// streams every key of the head in 64-key tiles through a two-stage cp.async pipeline, as
// attention.cu does. Shared memory: 2 K stages (34.8 KB) + the histograms (66 KB), which also
// stage the Q tile before its fragments are loaded (pass 1: three arrays of kBins1 + 1 words a
// row; pass 2: two of 129), + pass 2's queues (8 KB): two CTAs per SM.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <type_traits>

#include "common.cuh"
#include "density_kernels.cuh"
#include "device_info.hpp"
#include "density_math.hpp"
#include "ptx.cuh"

namespace svoo::cuda::detail {
namespace {

namespace dm = density;

constexpr int kD = 128, kBM = 64, kBN = 64, kThreads = 128, kPitch = kD + 8;
constexpr int kTileElems = kBN * kPitch;
constexpr int kBinsMax = dm::kBins1 > dm::kBins2 ? dm::kBins1 : dm::kBins2;
constexpr int kHP = kBinsMax + 1;  // level-2 histogram row pitch in words: rows start on different banks
// Level 1 (pass 1) lays three arrays (count, high and low significand sums) of kH1 words a row in
// the same region.
constexpr int kH1 = dm::kBins1 + 1;
static_assert(3 * kH1 <= 2 * kHP, "level 1's three arrays fit the level-2 region");
constexpr int kHistBytes = 2 * kBM * kHP * 4;
// Pass 2's queue of crossing-bin scores, per warp: (p, local row) pairs of the scores of 2
// n-tiles (16 rows x 16 keys at most), drained with every lane busy. Without it the two atomics of
// the few crossing-bin scores ran behind a divergent branch that some lane of the warp took at
// nearly every score: the pass cost as much as pass 1's atomics for every score.
constexpr int kQueueNTiles = 2;
constexpr int kQueueCap = 16 * 8 * kQueueNTiles;
constexpr int kQueueBytes = (kThreads / 32) * kQueueCap * 8;
constexpr int kSmemBytes = 2 * kTileElems * 2 + kHistBytes + kQueueBytes;
static_assert(kBM * kPitch * 2 <= kHistBytes, "the Q tile is staged in the histogram region");

__device__ __noinline__ dm::Level1 walk1_noinline(const std::uint32_t* cnt, const std::uint32_t* hi,
                                                  const std::uint32_t* lo, int drop, double tau) {
  return dm::walk1(cnt, hi, lo, drop, tau);
}
__device__ __noinline__ dm::Count finish_noinline(const dm::Row3& r, const dm::Level1& l, const std::uint32_t* cnt,
                                                  const std::uint32_t* units, float scale, double tau) {
  return dm::finish_row(r, l, cnt, units, scale, tau);
}

constexpr int kPassHistogram = 1, kPassRefine = 2;

template <bool kBf16>
__global__ void __launch_bounds__(kThreads, 2) density_pass_kernel(DensityArgs a, int mode) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto* sk = reinterpret_cast<std::uint16_t*>(smem_raw);  // 2 stages
  unsigned char* hist_raw = smem_raw + 2 * kTileElems * 2;
  auto* sq = reinterpret_cast<std::uint16_t*>(hist_raw);
  auto* hcnt = reinterpret_cast<std::uint32_t*>(hist_raw);
  std::uint32_t* hunits = hcnt + kBM * kHP;
  auto* queue = reinterpret_cast<float2*>(hist_raw + kHistBytes) + (threadIdx.x / 32) * kQueueCap;
  __shared__ long long s_pos[kBM];
  __shared__ int s_bstar[kBM];
  __shared__ float s_ref[kBM];

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const std::int64_t h = blockIdx.y;
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) * kBM;
  const std::int64_t nk = a.k.tokens;
  const auto* qbase = static_cast<const std::uint16_t*>(a.q.data) + h * a.q.head_stride;
  const auto* kbase = static_cast<const std::uint16_t*>(a.k.data) + h * a.k.head_stride;
  const std::int64_t out0 = h * a.nrows;  // per-row arrays: [heads, nrows]

  for (int e = tid; e < kBM * (kD / 8); e += kThreads) {
    const int r = e / (kD / 8), c = e % (kD / 8);
    const std::int64_t ri = row0 + r;
    const bool ok = ri < a.nrows;
    std::int64_t tok = ok ? (a.rows ? a.rows[ri] : ri) : 0;
    if (tok < 0 || tok >= a.q.tokens) tok = 0;  // flagged by nonfinite_kernel: the densities are NaN
    ptx::cp_async16(sq + r * kPitch + c * 8, qbase + tok * a.q.row_stride + c * 8, ok ? 16 : 0);
  }
  auto issue_k = [&](int tile, int stage) {
    for (int e = tid; e < kBN * (kD / 8); e += kThreads) {
      const int r = e / (kD / 8), c = e % (kD / 8);
      const std::int64_t key = static_cast<std::int64_t>(tile) * kBN + r;
      const bool ok = key < nk;
      ptx::cp_async16(sk + stage * kTileElems + r * kPitch + c * 8, kbase + (ok ? key : 0) * a.k.row_stride + c * 8,
                      ok ? 16 : 0);
    }
  };
  const int tiles = static_cast<int>((nk + kBN - 1) / kBN);
  const bool hist_pass = mode == kPassHistogram;

  // The two rows of this thread (mma accumulator layout): local rows lr[half].
  int lr[2];
  bool row_ok[2];
  float m[2] = {0.f, 0.f};  // the rows' references (histogram pass: set from the first tile)
  float peak[2] = {0.f, 0.f};  // refine pass, tau == 1: the row maxima
  int bs[2] = {0, 0};
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    lr[half] = warp * 16 + lane / 4 + half * 8;
    row_ok[half] = row0 + lr[half] < a.nrows;
    if (row_ok[half] && !hist_pass) m[half] = a.row_ref[out0 + row0 + lr[half]];
    if (row_ok[half] && !hist_pass) bs[half] = a.bstar[out0 + row0 + lr[half]];
  }
  const float sl2 = a.scale_log2, fscale = a.fixed_scale;
  const int fshift = dm::fixed_shift(fscale);
  const bool count_pos = a.tau >= 1.0;  // tau == 1: the count of p > 0, p relative to the row max
#pragma unroll
  for (int half = 0; half < 2; ++half)
    if (row_ok[half] && !hist_pass && count_pos) peak[half] = a.row_peak[out0 + row0 + lr[half]];
  float mx[2] = {-FLT_MAX, -FLT_MAX};
  long long pos[2] = {0, 0};
  std::uint32_t qf[kD / 16][4];
  // Pass 1's rows in the three level-1 arrays.
  std::uint32_t* const c1_row[2] = {hcnt + lr[0] * kH1, hcnt + lr[1] * kH1};
  std::uint32_t* const hi_row[2] = {hcnt + kBM * kH1 + lr[0] * kH1, hcnt + kBM * kH1 + lr[1] * kH1};
  std::uint32_t* const lo_row[2] = {hcnt + 2 * kBM * kH1 + lr[0] * kH1, hcnt + 2 * kBM * kH1 + lr[1] * kH1};
  const int drop = a.drop;
  const unsigned lane_below = (1u << lane) - 1u;
  // Pass 2's queue drain needs any row's reference and crossing bin: their owner lanes hold them.
  if (!hist_pass && lane % 4 == 0) {
    s_bstar[lr[0]] = bs[0], s_bstar[lr[1]] = bs[1];
    s_ref[lr[0]] = m[0], s_ref[lr[1]] = m[1];
  }
  // Pass 2's candidates: a superset of bin bs's scores in score space (the exact test is the
  // drain's, on p's own bits).
  float cand_lo[2] = {-FLT_MAX, -FLT_MAX}, cand_hi[2] = {FLT_MAX, FLT_MAX};
#pragma unroll
  for (int half = 0; half < 2; ++half)
    if (!hist_pass) dm::candidate_range(m[half], bs[half], sl2, cand_lo[half], cand_hi[half]);
  auto quad_max = [&](float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
  };

  // Q K^T of the tile in stage `stage` into acc (fp32, the mma accumulator layout).
  auto qk = [&](float (&acc)[kBN / 8][4], int stage) {
    const std::uint16_t* tk = sk + stage * kTileElems;
#pragma unroll
    for (int n = 0; n < kBN / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
#pragma unroll
      for (int p = 0; p < kBN / 16; ++p) {
        std::uint32_t b[4];
        ptx::ldmatrix_x4(b, tk + (p * 16 + (lane % 8) + (lane / 16) * 8) * kPitch + ks * 16 + ((lane / 8) % 2) * 8);
        ptx::mma16816<kBf16>(acc[2 * p], qf[ks], b[0], b[1]);
        ptx::mma16816<kBf16>(acc[2 * p + 1], qf[ks], b[2], b[3]);
      }
    }
  };

  // The histogram pass sweeps the keys once, or twice where some row of this CTA has its max more
  // than kRefOctaves octaves above its first tile's (then with the row maxima as references).
  // Within a sweep, tile t+1's products are issued before tile t's scores are binned, so that the
  // tensor cores work while the binning runs (tile j sits in stage j % 2).
  for (int sweep = 0; sweep < 2; ++sweep) {
    issue_k(0, 0);
    ptx::cp_async_commit();
    if (tiles > 1) issue_k(1, 1);
    ptx::cp_async_commit();
    ptx::cp_async_wait<1>();
    __syncthreads();
    if (sweep == 0) {
#pragma unroll
      for (int ks = 0; ks < kD / 16; ++ks)
        ptx::ldmatrix_x4(qf[ks], sq + (warp * 16 + (lane % 16)) * kPitch + ks * 16 + (lane / 16) * 8);
      __syncthreads();  // every warp has its Q fragments: the staging area becomes the histograms
    }
    for (int i = tid; i < 2 * kBM * kHP; i += kThreads) hcnt[i] = 0u;
    float s[kBN / 8][4];
    qk(s, 0);
    for (int t = 0; t < tiles; ++t) {
      ptx::cp_async_wait<0>();  // tile t+1
      __syncthreads();          // ... visible to all; every warp is done with tile t's stage
      if (t + 2 < tiles) issue_k(t + 2, t & 1);
      ptx::cp_async_commit();
      float sn[kBN / 8][4];
      if (t + 1 < tiles) qk(sn, (t + 1) & 1);
      // Keys past the end exist only in the last tile: the other tiles take the check-free path.
      const int rem = static_cast<int>(nk - static_cast<std::int64_t>(t) * kBN < kBN ? nk - static_cast<std::int64_t>(t) * kBN
                                                                                   : kBN);
      const int col0 = (lane % 4) * 2;
      auto epilogue = [&](auto full_tag) {
        constexpr bool kFull = decltype(full_tag)::value;
        auto valid = [&](int n, int e) { return kFull || col0 + n * 8 + (e % 2) < rem; };
        if (hist_pass) {
          if (t == 0 && sweep == 0) {  // the references: each row's max over this first tile
            float r[2] = {-FLT_MAX, -FLT_MAX};
#pragma unroll
            for (int n = 0; n < kBN / 8; ++n)
#pragma unroll
              for (int e = 0; e < 4; ++e)
                if (valid(n, e)) r[e / 2] = fmaxf(r[e / 2], s[n][e]);
            m[0] = quad_max(r[0]), m[1] = quad_max(r[1]);
          }
#pragma unroll
          for (int n = 0; n < kBN / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              if (!valid(n, e)) continue;
              const int half = e / 2;
              mx[half] = fmaxf(mx[half], s[n][e]);
              const float p = exp2f((s[n][e] - m[half]) * sl2);
              const int b = dm::bin1(p);
              atomicAdd(c1_row[half] + b, 1u);
              atomicAdd(hi_row[half] + b, dm::sig_hi(p, drop));
              atomicAdd(lo_row[half] + b, dm::sig_lo(p, drop));
            }
        } else {
          int pc[2] = {0, 0};
          int queued = 0;  // warp-uniform
#pragma unroll
          for (int n = 0; n < kBN / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int half = e / 2;
              const bool ok = valid(n, e);
              if (count_pos) pc[half] += ok && exp2f((s[n][e] - peak[half]) * sl2) > 0.f;
              // Candidates go to the warp's queue (ballot + prefix count), not to atomics here.
              const bool cand = ok && s[n][e] >= cand_lo[half] && s[n][e] < cand_hi[half];
              const unsigned mask = __ballot_sync(0xffffffffu, cand);
              if (cand) queue[queued + __popc(mask & lane_below)] = make_float2(s[n][e], __int_as_float(lr[half]));
              queued += __popc(mask);
            }
            if (n % kQueueNTiles == kQueueNTiles - 1) {
              __syncwarp();
              for (int i = lane; i < queued; i += 32) {
                const float2 q = queue[i];
                const int row = __float_as_int(q.y), bsr = s_bstar[row];
                const float p = exp2f((q.x - s_ref[row]) * sl2);  // exactly pass 1's p
                if (dm::bin1(p) != bsr) continue;
                const int sub = dm::bin2(p);
                atomicAdd(&hcnt[row * kHP + sub], 1u);
                atomicAdd(&hunits[row * kHP + sub], dm::units_in_bin(p, bsr, fshift));
              }
              __syncwarp();
              queued = 0;
            }
          }
          if (count_pos) pos[0] += pc[0], pos[1] += pc[1];
        }
      };
      if (rem == kBN) epilogue(std::true_type{});
      else epilogue(std::false_type{});
#pragma unroll
      for (int n = 0; n < kBN / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] = sn[n][e];
    }
    ptx::cp_async_wait<0>();
    if (!hist_pass || sweep == 1) break;
    // A row max at or beyond 2^kRefOctaves of its reference would overflow bin 0.
    bool over = false;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      mx[half] = quad_max(mx[half]);
      over = over || (row_ok[half] && (mx[half] - m[half]) * sl2 >= static_cast<float>(dm::kRefOctaves));
    }
    if (!__syncthreads_or(over)) break;
    m[0] = mx[0], m[1] = mx[1];
  }

  if (hist_pass)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float row_max = quad_max(mx[half]);
      if (lane % 4 == 0 && row_ok[half]) {
        a.row_ref[out0 + row0 + lr[half]] = m[half];
        a.row_peak[out0 + row0 + lr[half]] = row_max;
      }
    }
  if (tiles == 0) return;  // no keys: nothing was zeroed (the host rejects k_tokens == 0)
  if (!hist_pass && count_pos) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      long long P = pos[half];
      for (int o = 1; o <= 2; o <<= 1) P += __shfl_xor_sync(0xffffffffu, P, o);
      if (lane % 4 == 0) s_pos[lr[half]] = P;
    }
  }
  __syncthreads();
  if (tid < kBM && row0 + tid < a.nrows) {
    const std::int64_t o = out0 + row0 + tid;
    if (hist_pass) {
      const dm::Level1 l = walk1_noinline(hcnt + tid * kH1, hcnt + kBM * kH1 + tid * kH1,
                                          hcnt + 2 * kBM * kH1 + tid * kH1, drop, a.tau);
      a.bstar[o] = l.bstar, a.fb_lo[o] = l.fb_lo, a.fb_hi[o] = l.fb_hi;
      a.row_above[o] = l.above_mass, a.row_total[o] = l.total, a.row_error[o] = l.error;
      a.row_count_above[o] = static_cast<std::int32_t>(l.above_count);
    } else {
      const dm::Level1 l{a.bstar[o], a.fb_lo[o], a.fb_hi[o]};
      const dm::Row3 r{a.row_above[o], a.row_total[o], a.row_count_above[o], count_pos ? s_pos[tid] : 0,
                       a.row_error[o]};
      const dm::Count c = finish_noinline(r, l, hcnt + tid * kHP, hunits + tid * kHP, fscale, a.tau);
      a.counts[o] = c.estimate, a.count_lo[o] = c.lo, a.count_hi[o] = c.hi;
      a.fallback[o] = c.fallback ? 1 : 0;
    }
  }
}

// Sets *flag where a row of `v` (rows[] of each head, or every row) holds a NaN or an infinity (an
// all-ones exponent: bf16 0x7f80, f16 0x7c00; eight elements per 16-byte load), or where rows[]
// names a token outside [0, v.tokens) (the passes read token 0 in its place).
__global__ void nonfinite_kernel(RowsView v, const std::int64_t* rows, std::int64_t nrows, std::uint16_t exp_mask,
                                 std::int32_t* flag) {
  const std::int64_t pieces = v.heads * nrows * (v.dim / 8);
  bool bad = false;
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < pieces;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t c = e % (v.dim / 8), r = (e / (v.dim / 8)) % nrows, h = e / (v.dim / 8) / nrows;
    const std::int64_t tok = rows ? rows[r] : r;
    if (tok < 0 || tok >= v.tokens) {
      bad = true;
      continue;
    }
    const uint4 x = *reinterpret_cast<const uint4*>(static_cast<const std::uint16_t*>(v.data) + h * v.head_stride +
                                                    tok * v.row_stride + c * 8);
    for (const unsigned w : {x.x, x.y, x.z, x.w})
      bad = bad || (w & exp_mask) == exp_mask || ((w >> 16) & exp_mask) == exp_mask;
  }
  if (__any_sync(0xffffffffu, bad) && threadIdx.x % 32 == 0) atomicOr(flag, 1);
}

// Per head: density = mean(estimate) / k_tokens, bound = mean(hi - lo) / k_tokens, fallback rows;
// NaN density and bound where q or k was not finite.
__global__ void density_finish_kernel(DensityArgs a, double* density, double* bound, std::int32_t* fallbacks) {
  __shared__ double scratch[32];
  const std::int64_t h = blockIdx.x;
  double sum = 0.0, width = 0.0, fb = 0.0;
  for (std::int64_t i = threadIdx.x; i < a.nrows; i += blockDim.x) {
    const std::int64_t o = h * a.nrows + i;
    sum += a.counts[o];
    width += a.count_hi[o] - a.count_lo[o];
    fb += a.fallback[o];
  }
  sum = block_sum(sum, scratch);
  width = block_sum(width, scratch);
  fb = block_sum(fb, scratch);
  if (threadIdx.x == 0) {
    const double denom = static_cast<double>(a.nrows) * static_cast<double>(a.k.tokens);
    const bool finite = *a.nonfinite == 0;
    density[h] = finite ? sum / denom : __longlong_as_double(0x7ff8000000000000LL);
    if (bound) bound[h] = finite ? width / denom : __longlong_as_double(0x7ff8000000000000LL);
    if (fallbacks) fallbacks[h] = static_cast<std::int32_t>(fb);
  }
}

template <bool kBf16>
void launch_passes(const DensityArgs& a, cudaStream_t stream) {
  cudaFuncSetAttribute(density_pass_kernel<kBf16>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  const dim3 grid(static_cast<unsigned>((a.nrows + kBM - 1) / kBM), static_cast<unsigned>(a.q.heads));
  // SVOO_DENSITY_PASSES=1 stops after the histogram pass (benchmark breakdown only: the results are
  // then invalid).
  const char* env = std::getenv("SVOO_DENSITY_PASSES");
  density_pass_kernel<kBf16><<<grid, kThreads, kSmemBytes, stream>>>(a, kPassHistogram);
  if (!(env && env[0] == '1'))
    density_pass_kernel<kBf16><<<grid, kThreads, kSmemBytes, stream>>>(a, kPassRefine);
}

}  // namespace

void launch_tau_density(const DensityArgs& a, double* density, double* bound, std::int32_t* fallbacks,
                        cudaStream_t stream) {
  if (a.q.heads == 0 || a.nrows == 0) return;
  // Inputs first: a NaN or an infinity in the rows measured, or a row index out of range, makes
  // every density NaN (a row's scores would otherwise give a count without meaning).
  const std::uint16_t mask = a.q.elem == Elem::bf16 ? 0x7f80 : 0x7c00;
  cudaMemsetAsync(a.nonfinite, 0, sizeof(std::int32_t), stream);
  nonfinite_kernel<<<264, 256, 0, stream>>>(a.q, a.rows, a.nrows, mask, a.nonfinite);
  nonfinite_kernel<<<264, 256, 0, stream>>>(a.k, nullptr, a.k.tokens, mask, a.nonfinite);
  const char* path = std::getenv("SVOO_DENSITY_PATH");
  if (hopper_device() && !(path && std::string_view(path) == "mma")) {
    // SVOO_DENSITY_PASSES=1 or 2 stops early (benchmark breakdown only). SVOO_DENSITY_SEARCH=three
    // runs the three passes on every row instead of the default (density_search.hpp,
    // interp_window); SVOO_DENSITY_WIDTH its windows' least width in octaves (experiments: a multiple of
    // 1/16 in (0, 4)).
    const char* env = std::getenv("SVOO_DENSITY_PASSES");
    const char* search = std::getenv("SVOO_DENSITY_SEARCH");
    const char* width = std::getenv("SVOO_DENSITY_WIDTH");
    DensityArgs b = a;
    b.interp = !(search && std::string_view(search) == "three");
    if (width) {
      const float w = std::strtof(width, nullptr);
      if (w > 0.f && w < 4.f && std::floor(w * 16.f) == w * 16.f) b.interp_width = w;
    }
    launch_density_wgmma_passes(b, env && (env[0] == '1' || env[0] == '2') ? env[0] - '0' : 3, stream);
  } else if (a.q.elem == Elem::bf16) {
    launch_passes<true>(a, stream);
  } else {
    launch_passes<false>(a, stream);
  }
  density_finish_kernel<<<static_cast<unsigned>(a.q.heads), 256, 0, stream>>>(a, density, bound, fallbacks);
}

}  // namespace svoo::cuda::detail
