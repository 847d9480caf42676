// Internal: the histogram arithmetic of the device tau-density (density.cu), written once for the
// device and the host so that the CPU tests can run the same two-level search on probability
// rows and compare it with svoo::tau_count. No CUDA header is needed to include this file.
//
// Values. For one query row with fp32 scores s_j and a reference r (the max of the row's first key
// tile, or the row max), p_j = 2^((s_j - r) * log2(e) / sqrt(d)) (the probability times the row's
// sum, relative to the reference), computed once in fp32. The bins are read off p's float bits,
// so binning a score costs a few integer operations. With K = kRefOctaves:
//
// Level 1 (pass 1): bin b = 127 + K - (biased exponent of p), i.e. bin b holds the octave
// p in [2^(K-b), 2^(K+1-b)); the last bin kBins1 - 1 also holds everything below (and p = 0). The
// kernel makes sure no p reaches 2^(K+1) (a row max more than K octaves above its first tile's:
// the tile's CTA redoes the pass with the row maxima as references). Per bin: the count (u32) and
// the mass in fixed point relative to the octave's top ref(b) = 2^(K+1-b): each element adds
// round(v * S), v = p / ref(b) in [1/2, 1), taken from the 24-bit significand (S a power of two);
// a bin's mass is ref(b) * units / S. The last bin adds no mass (its elements are below
// 2^(K+2-kBins1) of the reference, negligible against T: within kExpRelError's slack).
// S = fixed_scale(k_tokens) keeps every sum below 2^32. The crossing bin b* is the first where the
// cumulative mass reaches tau * total.
//
// The crossing lies within log2(N / (1 - tau)) octaves of the row max (the keys below it hold at
// most 1 - tau of the mass), so 64 octaves below the reference hold it.
//
// Level 2 (pass 2): A (mass of bins < b*), T (total) and C (count of bins < b*) come from pass
// 1's exact sums (walk1); the scores are recomputed, and bin b*
// is split into kBins2 = 128 sub-bins by the next 7 significand bits (sub-bin s holds
// p in [2^(K-b*) (1 + (127 - s)/128), 2^(K-b*) (1 + (128 - s)/128)), so s = 0 is the top), again count +
// fixed-point mass with the same reference. Walking the sub-bins to R = tau * T - A gives the count
// c up to the sub-bin in which R is reached; inside it, every element lies in [lo, hi), so the
// number k it needs satisfies R'/hi <= k <= R'/lo. Fixed-point rounding (<= 0.5/S of ref(b*) per
// element) and exp2 rounding widen R by delta on both sides; the bracket [lo_count, hi_count]
// therefore contains the exact count of the GPU's fp32 probabilities. Width: at most about
// k / 128 (a sub-bin's relative width, 1/256 to 1/128) of the keys that fall in the crossing
// sub-bin, plus 1.
//
// Fallback: when the exact A and T show the crossing outside bin b* (the fixed-point level 1
// misplaced it: only when tau * total lies within ~1e-5 of a bin edge), the bracket is taken from
// level 1's counts with one bin of margin on each side; such rows are counted.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SVOO_HD __host__ __device__ __forceinline__
#define SVOO_NO_UNROLL _Pragma("unroll 1")
#else
#define SVOO_NO_UNROLL
#include <cmath>
#define SVOO_HD inline
#endif

namespace svoo::cuda::detail::density {

inline constexpr int kRefOctaves = 32;     // octaves above the row's reference the bins cover
inline constexpr int kBins1 = 80;          // level-1 bins: one octave each, 47 below the reference
inline constexpr int kLoBits = 12;         // level 1 sums a significand's high and low 12 bits apart
inline constexpr int kBins2 = 128;         // level-2 sub-bins of the crossing bin (7 significand bits)
inline constexpr double kExpRelError = 5e-7;  // bound on exp2 + fp32 partial-sum error, relative to T

SVOO_HD double pow2(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp2(x);
#else
  return std::exp2(x);
#endif
}
SVOO_HD std::uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
#endif
}

// Fixed-point scale: a power of two S with k_tokens * S < 2^32 (at most 2^24).
SVOO_HD float fixed_scale(std::int64_t k_tokens) {
  double s = 16777216.0;
  while (s > 1.0 && static_cast<double>(k_tokens) * s >= 4294967295.0) s *= 0.5;
  return static_cast<float>(s);
}
// The right shift that turns a 24-bit significand (v * 2^24, v in [1/2, 1)) into v * S.
SVOO_HD int fixed_shift(float scale) { return 24 - (static_cast<int>(float_bits(scale) >> 23) - 127); }

// Level 1: the octave of p (p >= 0; bin 0 would also take p >= 2^(kRefOctaves + 1), which the
// kernel rules out by checking the row max against the reference).
SVOO_HD int bin1(float p) {
  const int b = 127 + kRefOctaves - static_cast<int>(float_bits(p) >> 23);
  return b < 0 ? 0 : b < kBins1 - 1 ? b : kBins1 - 1;
}
// round(v * S) with v = p / ref(bin1(p)): the significand with its implicit bit, shifted; 0 in the
// last bin.
SVOO_HD std::uint32_t units(float p, int shift) {
  const std::uint32_t bits = float_bits(p);
  if (127 + kRefOctaves - static_cast<int>(bits >> 23) >= kBins1 - 1) return 0u;
  const std::uint32_t sig = (bits & 0x7fffffu) | 0x800000u;
  return shift > 0 ? (sig + (1u << (shift - 1))) >> shift : sig;
}
// units(p) for p known to lie in bin b (saves re-reading the exponent).
SVOO_HD std::uint32_t units_in_bin(float p, int b, int shift) {
  if (b >= kBins1 - 1) return 0u;
  const std::uint32_t sig = (float_bits(p) & 0x7fffffu) | 0x800000u;
  return shift > 0 ? (sig + (1u << (shift - 1))) >> shift : sig;
}
// Level 2: the sub-bin of p inside its octave (0 = the top).
SVOO_HD int bin2(float p) { return 127 - static_cast<int>((float_bits(p) >> 16) & 127u); }

// ref(b): the octave's top, the reference of its fixed-point mass.
SVOO_HD double top1(int b) { return pow2(1.0 + kRefOctaves - b); }
// Element bounds in sub-bin s of bin bs: [bottom2, top2).
SVOO_HD double top2(int bs, int sub) { return pow2(kRefOctaves - bs) * (1.0 + (128 - sub) / 128.0); }
SVOO_HD double bottom2(int bs, int sub) {
  if (bs == kBins1 - 1) return 0.0;  // everything below
  return pow2(kRefOctaves - bs) * (1.0 + (127 - sub) / 128.0);
}

// Level 1's masses are exact: each element adds its 24-bit significand (v * 2^24, v = p / ref(b))
// to two 32-bit sums, the high bits and the low kLoBits bits, so that N elements cannot overflow
// either; beyond 2^20 keys `drop` low bits are dropped first (exact_drop), and the error they
// leave is bounded. A bin's mass is ref(b) * (hi * 2^kLoBits + lo) * 2^drop / 2^24.
SVOO_HD int exact_drop(std::int64_t k_tokens) {
  int bits = 0;
  while ((std::int64_t{1} << bits) < k_tokens) ++bits;
  return bits > 32 - kLoBits ? bits - (32 - kLoBits) : 0;
}
SVOO_HD std::uint32_t sig_of(float p) { return (float_bits(p) & 0x7fffffu) | 0x800000u; }
SVOO_HD std::uint32_t sig_hi(float p, int drop) { return sig_of(p) >> (kLoBits + drop); }
SVOO_HD std::uint32_t sig_lo(float p, int drop) { return (sig_of(p) >> drop) & ((1u << kLoBits) - 1u); }
SVOO_HD double mass1(int b, std::uint32_t hi, std::uint32_t lo, int drop) {
  if (b >= kBins1 - 1) return 0.0;  // the last bin adds no mass (see the error bound)
  return top1(b) * (static_cast<double>(hi) * (1 << kLoBits) + static_cast<double>(lo)) * pow2(drop - 24.0);
}

// Pass 2's prefilter: a score range that holds every score whose p (relative to reference r)
// falls in bin bs, i.e. (s - r) sl2 in [K - bs, K + 1 - bs), widened by 1e-3 octave for the
// rounding of (s - r) sl2 and exp2; the exact test is bin1 on p itself. lo = -FLT_MAX for the
// last bin (it reaches p = 0), hi = FLT_MAX for bin 0.
SVOO_HD void candidate_range(float r, int bs, float sl2, float& lo, float& hi) {
  const float k_oct = static_cast<float>(kRefOctaves - bs);
  lo = bs < kBins1 - 1 ? r + (k_oct - 1e-3f) / sl2 : -3.402823466e38f;
  hi = bs > 0 ? r + (k_oct + 1.0f + 1e-3f) / sl2 : 3.402823466e38f;
}

// Result of the level-1 walk for one row, with the sums that pass 2 then needs no more compute:
// the mass and count above the crossing bin and the total, and a bound on their error.
struct Level1 {
  std::int32_t bstar;    // crossing bin
  std::int32_t fb_lo;    // count of bins < bstar - 1 (fallback lower bound)
  std::int32_t fb_hi;    // count of bins <= bstar + 1 (fallback upper bound)
  double above_mass = 0.0, total = 0.0;
  std::int64_t above_count = 0;
  double error = 0.0;    // bound on |(tau T - A) - its value on the exact p|: dropped bits, the last bin
};

// cnt, hi, lo: kBins1 entries of one row.
SVOO_HD Level1 walk1(const std::uint32_t* cnt, const std::uint32_t* hi, const std::uint32_t* lo, int drop,
                     double tau) {
  double total = 0.0, err_total = 0.0;
  SVOO_NO_UNROLL
  for (int b = 0; b < kBins1; ++b) {
    total += mass1(b, hi[b], lo[b], drop);
    // An element of the last bin is below 2^(kRefOctaves + 2 - kBins1); dropped bits cost less
    // than 2^(drop - 24) of ref(b) each.
    err_total += static_cast<double>(cnt[b]) *
                 (b == kBins1 - 1 ? pow2(kRefOctaves + 2.0 - kBins1) : (drop > 0 ? top1(b) * pow2(drop - 24.0) : 0.0));
  }
  const double target = tau * total;
  double cum = 0.0, err_above = 0.0;
  std::int64_t count_above = 0;
  int bs = kBins1 - 1;
  SVOO_NO_UNROLL
  for (int b = 0; b < kBins1; ++b) {
    const double m = mass1(b, hi[b], lo[b], drop);
    if (cum + m >= target && cnt[b] > 0) {
      bs = b;
      break;
    }
    cum += m;
    count_above += cnt[b];
    err_above += drop > 0 ? static_cast<double>(cnt[b]) * top1(b) * pow2(drop - 24.0) : 0.0;
  }
  Level1 r{bs, 0, 0};
  r.above_mass = cum, r.total = total, r.above_count = count_above;
  r.error = tau * err_total + err_above;
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
  std::int64_t positives;   // entries with p > 0 relative to the row max (tau == 1)
  double error = 0.0;       // bound on the error of tau T - A (Level1::error)
};
struct Count {
  std::int32_t estimate, lo, hi;  // lo <= estimate <= hi; the exact count lies in [lo, hi]
  bool fallback;
};

// The walks shared by both device searches (this file's and density_search.hpp's): bins 0.. in
// order, bin i holding cnt[i] elements of total mass mass_of(i).
//
// reach: the first non-empty bin where the cumulative mass reaches target, with the mass and the
// count of the bins before it; -1 where the target lies past the last bin.
template <class MassOf>
SVOO_HD int reach(int bins, const std::uint32_t* cnt, MassOf mass_of, double target, double& cum,
                  std::int64_t& before) {
  cum = 0.0;
  before = 0;
  SVOO_NO_UNROLL
  for (int i = 0; i < bins; ++i) {
    if (cnt[i] == 0) continue;
    const double m = mass_of(i);
    if (cum + m >= target) return i;
    cum += m;
    before += cnt[i];
  }
  return -1;
}
// bound: the count whose mass reaches target, each element of bin i taken at most at top_of(i)
// (upper == false: a lower bound of the count) or at least at bottom_of(i) (upper: an upper bound;
// a bottom of 0 takes the whole bin); -1 past the last bin.
template <class MassOf, class TopOf, class BottomOf>
SVOO_HD std::int64_t bound(int bins, const std::uint32_t* cnt, MassOf mass_of, TopOf top_of, BottomOf bottom_of,
                           double target, bool upper) {
  if (target <= 0.0) return 0;
  double cum;
  std::int64_t before;
  const int i = reach(bins, cnt, mass_of, target, cum, before);
  if (i < 0) return -1;
  const double need = target - cum;
  std::int64_t k;
  if (!upper) {
    const double top = top_of(i);
    k = static_cast<std::int64_t>(need / top);
    if (static_cast<double>(k) * top < need) ++k;
  } else {
    const double bottom = bottom_of(i);
    k = bottom > 0.0 ? static_cast<std::int64_t>(need / bottom) + 1 : cnt[i];
  }
  if (k < 1) k = 1;
  if (k > cnt[i]) k = cnt[i];
  return before + k;
}
// estimate: base + the count at which R is reached, the elements of R's bin taken at the bin's
// mean (where R lies within the bins' mass), else the middle of [lo, hi]; clamped to [lo, hi].
template <class MassOf>
SVOO_HD std::int64_t estimate(int bins, const std::uint32_t* cnt, MassOf mass_of, double R, double window_mass,
                              std::int64_t base, std::int64_t lo, std::int64_t hi) {
  std::int64_t est = -1;
  if (R > 0.0 && R <= window_mass) {
    double cum;
    std::int64_t before;
    const int i = reach(bins, cnt, mass_of, R, cum, before);
    if (i >= 0) {
      const double mean = mass_of(i) / static_cast<double>(cnt[i]);
      std::int64_t k = mean > 0.0 ? static_cast<std::int64_t>((R - cum) / mean) : cnt[i];
      if (static_cast<double>(k) * mean < R - cum) ++k;
      est = base + before + k;
    }
  }
  if (est < 0) est = (lo + hi) / 2;
  return est < lo ? lo : est > hi ? hi : est;
}

namespace impl {
// Bound of the count whose mass reaches `target` (relative to the window start), within the
// sub-bins: upper == false gives a lower bound (each element at most its sub-bin's top), true an
// upper bound (at least its bottom). Returns -1 when the target lies beyond the window.
SVOO_HD std::int64_t bound2(const std::uint32_t* cnt, const std::uint32_t* units, float scale, int bs, double target,
                            bool upper) {
  return bound(
      kBins2, cnt, [&](int i) { return top1(bs) * static_cast<double>(units[i]) / scale; },
      [&](int i) { return top2(bs, i); }, [&](int i) { return bottom2(bs, i); }, target, upper);
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
    window_top += top1(bs) * static_cast<double>(cnt[s]);
    window_mass += top1(bs) * static_cast<double>(units[s]) / scale;
    window_count += cnt[s];
  }
  const double delta = 0.5 / scale * window_top + kExpRelError * r.total + r.error;
  bool fallback = false;
  std::int64_t lo, hi;
  if (R - delta > 0.0) {
    lo = r.above_count + impl::bound2(cnt, units, scale, bs, R - delta, false);
  } else if (R > 0.0) {
    // The crossing may lie among the elements above the window, by at most delta of mass; each of
    // them is at least top1(bs), the window's top.
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
  const std::int64_t est = estimate(
      kBins2, cnt, [&](int i) { return top1(bs) * static_cast<double>(units[i]) / scale; }, R, window_mass,
      r.above_count, lo, hi);
  return {static_cast<std::int32_t>(est), static_cast<std::int32_t>(lo), static_cast<std::int32_t>(hi), fallback};
}

}  // namespace svoo::cuda::detail::density
