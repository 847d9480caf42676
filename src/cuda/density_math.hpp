// Internal: the histogram arithmetic of the device tau-density (density.cu), written once for the
// device and the host so that the CPU tests can run the same two-level search on probability
// rows and compare it with svoo::tau_count. No CUDA header is needed to include this file.
//
// Values. For one query row with fp32 scores s_j and max m, a_j = (s_j - m) * log2(e) / sqrt(d)
// <= 0 and p_j = 2^a_j (the probability times the row's sum, relative to the max: p_max = 1).
// t_j = -a_j * kBinsPerOctave >= 0 is the position on a log2 scale.
//
// Level 1 (pass 2): bin b = min(floor(t), kBins1 - 1), i.e. bin b holds p in (2^-(b+1)/4, 2^-b/4]
// (the last bin everything below 2^-31.75). Per bin: the count (u32) and the mass in fixed point,
// sum of round(v * S) with v = p / top(b) in (0, 1], so a bin's mass is top(b) * units / S.
// S = fixed_scale(k_tokens) keeps every sum below 2^32. The crossing bin b* is the first where
// the cumulative mass reaches tau * total.
//
// Level 2 (pass 3): the scores are recomputed; A (mass of bins < b*), T (total) and C (count of
// bins < b*) are summed exactly in registers (fp32 per key tile, fp64 across tiles), and bin b*
// is split into kBins2 sub-bins of 1/512 octave (the last sub-bin of the last bin: everything
// below), again count + fixed-point mass. Walking the sub-bins to R = tau * T - A gives the count
// c up to the sub-bin in which R is reached; inside it, every element lies in (lo, hi], so the
// number k it needs satisfies R'/hi <= k <= R'/lo. Fixed-point rounding (<= 0.5/S of a sub-bin's
// top per element) and exp2 rounding widen R by delta on both sides; the bracket [lo_count,
// hi_count] therefore contains the exact count of the GPU's fp32 probabilities. Width: at most
// about k * (2^(1/512) - 1) = 0.14 % of the keys that fall in the crossing sub-bin, plus 1.
//
// Fallback: when the exact A and T show the crossing outside bin b* (the fixed-point level 1
// misplaced it: only when tau * total lies within ~1e-5 of a bin edge), the bracket is taken from
// level 1's counts with one bin of margin on each side; such rows are counted.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SVOO_HD __host__ __device__ __forceinline__
#define SVOO_NO_UNROLL _Pragma("unroll 1")
#else
#define SVOO_NO_UNROLL
#include <cmath>
#define SVOO_HD inline
#endif

namespace svoo::cuda::detail::density {

inline constexpr int kBins1 = 128;         // level-1 bins
inline constexpr int kBinsPerOctave = 4;   // level-1 bins per octave: 32 octaves in all
inline constexpr int kBins2 = 128;         // level-2 sub-bins of the crossing bin
inline constexpr double kExpRelError = 5e-7;  // bound on exp2 + fp32 partial-sum error, relative to T

SVOO_HD double pow2(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp2(x);
#else
  return std::exp2(x);
#endif
}
SVOO_HD float floor_f(float x) {
#if defined(__CUDA_ARCH__)
  return ::floorf(x);
#else
  return std::floor(x);
#endif
}
SVOO_HD float exp2_f(float x) {
#if defined(__CUDA_ARCH__)
  return ::exp2f(x);
#else
  return std::exp2(x);
#endif
}

// Fixed-point scale: a power of two S with k_tokens * S < 2^32 (at most 2^24).
SVOO_HD float fixed_scale(std::int64_t k_tokens) {
  double s = 16777216.0;
  while (s > 1.0 && static_cast<double>(k_tokens) * s >= 4294967295.0) s *= 0.5;
  return static_cast<float>(s);
}
SVOO_HD std::uint32_t fixed(float v, float scale) {
  const float x = v * scale + 0.5f;
  return x <= 0.f ? 0u : static_cast<std::uint32_t>(x);
}

// Level 1: bin of position t >= 0, and the value relative to the bin's top.
SVOO_HD int bin1(float t) {
  const float f = floor_f(t);
  return f >= static_cast<float>(kBins1 - 1) ? kBins1 - 1 : static_cast<int>(f);
}
SVOO_HD float rel1(float t, int b) { return exp2_f((static_cast<float>(b) - t) * (1.0f / kBinsPerOctave)); }
SVOO_HD double top1(int b) { return pow2(-static_cast<double>(b) / kBinsPerOctave); }

// Level 2 inside bin bs: sub-bin of t (t in [bs, bs + 1), or beyond for the last bin), and the value
// relative to the sub-bin's top.
SVOO_HD int bin2(float t, int bs) {
  const float f = floor_f((t - static_cast<float>(bs)) * kBins2);
  return f <= 0.f ? 0 : f >= static_cast<float>(kBins2 - 1) ? kBins2 - 1 : static_cast<int>(f);
}
SVOO_HD float rel2(float t, int bs, int sub) {
  return exp2_f((static_cast<float>(bs) + static_cast<float>(sub) * (1.0f / kBins2) - t) * (1.0f / kBinsPerOctave));
}
SVOO_HD double top2(int bs, int sub) {
  return pow2(-(static_cast<double>(bs) + static_cast<double>(sub) / kBins2) / kBinsPerOctave);
}
SVOO_HD double bottom2(int bs, int sub) {
  if (bs == kBins1 - 1 && sub == kBins2 - 1) return 0.0;  // everything below
  return top2(bs, sub + 1);
}

// Result of the level-1 walk for one row.
struct Level1 {
  std::int32_t bstar;    // crossing bin
  std::int32_t fb_lo;    // count of bins < bstar - 1 (fallback lower bound)
  std::int32_t fb_hi;    // count of bins <= bstar + 1 (fallback upper bound)
};

// cnt, units: kBins1 entries of one row.
SVOO_HD Level1 walk1(const std::uint32_t* cnt, const std::uint32_t* units, float scale, double tau) {
  double total = 0.0;
  SVOO_NO_UNROLL
  for (int b = 0; b < kBins1; ++b) total += top1(b) * static_cast<double>(units[b]);
  const double target = tau * total;
  double cum = 0.0;
  int bs = kBins1 - 1;
  SVOO_NO_UNROLL
  for (int b = 0; b < kBins1; ++b) {
    cum += top1(b) * static_cast<double>(units[b]);
    if (cum >= target && cnt[b] > 0) {
      bs = b;
      break;
    }
  }
  Level1 r{bs, 0, 0};
  std::int64_t c = 0;
  SVOO_NO_UNROLL
  for (int b = 0; b < kBins1; ++b) {
    if (b == bs - 1) r.fb_lo = static_cast<std::int32_t>(c);
    c += cnt[b];
    if (b == bs + 1 || b == kBins1 - 1) {
      r.fb_hi = static_cast<std::int32_t>(c);
      break;
    }
  }
  if (bs == 0) r.fb_lo = 0;
  return r;
}

// Row totals of pass 3 (exact sums) and the final answer.
struct Row3 {
  double above_mass;        // A: mass of bins < bstar
  double total;             // T
  std::int64_t above_count; // C: count of bins < bstar
  std::int64_t positives;   // entries with p > 0 (tau == 1)
};
struct Count {
  std::int32_t estimate, lo, hi;  // lo <= estimate <= hi; the exact count lies in [lo, hi]
  bool fallback;
};

namespace impl {
// Bound of the count whose mass reaches `target` (relative to the window start), within the
// sub-bins: upper == false gives a lower bound (each element at most its sub-bin's top), true an
// upper bound (at least its bottom). Returns -1 when the target lies beyond the window.
SVOO_HD std::int64_t bound2(const std::uint32_t* cnt, const std::uint32_t* units, float scale, int bs, double target,
                            bool upper) {
  if (target <= 0.0) return 0;
  double cum = 0.0;
  std::int64_t before = 0;
  SVOO_NO_UNROLL
  for (int s = 0; s < kBins2; ++s) {
    if (cnt[s] == 0) continue;
    const double mass = top2(bs, s) * static_cast<double>(units[s]) / scale;
    if (cum + mass >= target) {
      const double need = target - cum;
      std::int64_t k;
      if (!upper) {
        k = static_cast<std::int64_t>(need / top2(bs, s));
        if (static_cast<double>(k) * top2(bs, s) < need) ++k;
      } else {
        const double lo = bottom2(bs, s);
        k = lo > 0.0 ? static_cast<std::int64_t>(need / lo) + 1 : cnt[s];
      }
      if (k < 1) k = 1;
      if (k > cnt[s]) k = cnt[s];
      return before + k;
    }
    cum += mass;
    before += cnt[s];
  }
  return -1;
}
}  // namespace impl

// The count of one row from pass 3's sums and the sub-bin histogram of bin bstar.
SVOO_HD Count finish_row(const Row3& r, const Level1& l1, const std::uint32_t* cnt, const std::uint32_t* units,
                         float scale, double tau) {
  if (tau >= 1.0) {
    const std::int32_t c = static_cast<std::int32_t>(r.positives > 1 ? r.positives : 1);
    return {c, c, c, false};
  }
  const int bs = l1.bstar;
  const double R = tau * r.total - r.above_mass;
  // delta: fixed-point rounding of the window (0.5/S of each element's sub-bin top) and exp2 /
  // summation error of A and T.
  double window_top = 0.0, window_mass = 0.0;
  std::int64_t window_count = 0;
  SVOO_NO_UNROLL
  for (int s = 0; s < kBins2; ++s) {
    window_top += top2(bs, s) * static_cast<double>(cnt[s]);
    window_mass += top2(bs, s) * static_cast<double>(units[s]) / scale;
    window_count += cnt[s];
  }
  const double delta = 0.5 / scale * window_top + kExpRelError * r.total;
  bool fallback = false;
  std::int64_t lo, hi;
  if (R - delta > 0.0) {
    lo = r.above_count + impl::bound2(cnt, units, scale, bs, R - delta, false);
  } else if (R > 0.0) {
    // The crossing may lie among the elements above the window, by at most delta of mass; each of
    // them is at least top1(bs).
    lo = r.above_count - static_cast<std::int64_t>(delta / top1(bs));
  } else {
    lo = l1.fb_lo + 1;  // level 1 misplaced the crossing: assume it is in bin bstar - 1
    fallback = true;
  }
  const std::int64_t up = impl::bound2(cnt, units, scale, bs, R + delta, true);
  if (up >= 0) {
    hi = r.above_count + up;
  } else {
    // Beyond the window: in bin bstar + 1 (level 1's count), or the window's end.
    hi = l1.fb_hi > r.above_count + window_count ? l1.fb_hi : r.above_count + window_count;
    if (R > window_mass) fallback = true;
  }
  if (lo < 1) lo = 1;
  if (hi < lo) hi = lo;
  // Estimate: the sub-bin where R is reached, elements taken at the sub-bin's mean value.
  std::int64_t est = -1;
  if (R > 0.0 && R <= window_mass) {
    double cum = 0.0;
    std::int64_t before = 0;
    SVOO_NO_UNROLL
    SVOO_NO_UNROLL
  for (int s = 0; s < kBins2; ++s) {
      if (cnt[s] == 0) continue;
      const double mass = top2(bs, s) * static_cast<double>(units[s]) / scale;
      if (cum + mass >= R) {
        const double mean = mass / static_cast<double>(cnt[s]);
        std::int64_t k = mean > 0.0 ? static_cast<std::int64_t>((R - cum) / mean) : cnt[s];
        if (static_cast<double>(k) * mean < R - cum) ++k;
        est = r.above_count + before + k;
        break;
      }
      cum += mass;
      before += cnt[s];
    }
  }
  if (est < 0) est = (lo + hi) / 2;
  if (est < lo) est = lo;
  if (est > hi) est = hi;
  return {static_cast<std::int32_t>(est), static_cast<std::int32_t>(lo), static_cast<std::int32_t>(hi), fallback};
}

}  // namespace svoo::cuda::detail::density
