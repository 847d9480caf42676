// Internal: the arithmetic of the Hopper tau-density (density_wgmma.cu), a threshold search in
// passes over every row's scores (three; by default pass 2 only for the rows that pass 1's
// interpolated window misses: interp_window below), written once for the device and the host so that the CPU
// tests run the same search on rows of scores and compare it with svoo::tau_count.
//
// Why thresholds and not histograms: the earlier kernel (density.cu) binned every score into a
// per-row octave histogram with shared-memory atomics, and its time went to those atomics and to
// the instructions around them, not to the products. Here every score costs register arithmetic
// only (a compare and an add per threshold in passes 1 and 2; pass 3's mass below its window's
// top an exp and a predicated add), and pass 3 sends the few scores of a
// narrow window to queues (per warp on sm_80, per lane on Hopper).
//
// Units. For a row with fp32 scores s_j, sl2 = log2(e) / sqrt(d) and a reference c (an integer
// number of octaves), p_j = 2^(s_j sl2 - c), computed as ex2(fma(s_j, sl2, -c)) (pvalue). Scores
// are compared with thresholds theta(y) = y / sl2 rounded to fp32, for dyadic y, so every pass and
// the host classify a score the same way whatever its reference.
//
// The sums are of the mass *below* each threshold, B, and the total T: the crossing is where
// B <= (1 - tau) T, and what the last pass needs, R = tau T - (T - B) = B - (1 - tau) T, then
// carries the rounding of B (small near the crossing) and (1 - tau) times that of T, not that of
// T itself: for tau = 0.999 a thousand times less than with masses above the thresholds.
//
// Pass 1: c is the least multiple of kCoarseStep with theta(c) above the row max so far; when a
//   tile raises the max past theta(c), c moves up by whole steps and the sums are shifted by whole
//   thresholds and scaled by a power of two (exact). Per row it sums the total T and the masses
//   B_k below theta(c - k kCoarseStep), k = 1..kCoarse, and picks the coarse window: the first k
//   with B_k <= (1 - tau) T gives [c - k step, c - (k - 1) step); none, [low, c - kCoarse step) with low
//   at least log2(N / (1 - tau)) + 1 octaves below the max (no key of the minimal set is lower:
//   if the c-th largest p were below (1 - tau) p_max / N, the keys from it on would hold less than
//   (1 - tau) T).
// Pass 2: kMid thresholds y_k = hi - k (hi - lo) / kMid, k = 0..kMid-1, in that window, the same
//   sums with the final c; the first k with B_k <= (1 - tau) T gives the fine window
//   [y_k, y_(k-1)) and the mass below its top B_(k-1); k = 0 (the crossing above the window: only
//   where pass 1's sums were rounded across a threshold) gives [hi, c) with B = T (no key reaches
//   theta(c)); none gives [lo, y_(kMid-1)).
// Pass 3: the count C of scores at or above the fine window, and the window's scores in kFine
//   sub-bins (equal in y) with their count and their mass in fixed point. The walk to R = B - (1 -
//   tau) T gives a bracket [lo, hi] that holds the count of the GPU's fp32 probabilities: each element of
//   a sub-bin lies between the sub-bin's bounds, and delta (the sums' rounding) widens R on both
//   sides (finish).
//
// Sums: each thread adds at most 32 probabilities of a row in fp32 per key tile (relative error
// below 31 x 2^-24 of the partial) and then adds the partial to an fp64 sum, so each sum is
// within kSumRelError of itself, as an exact sum of the same fp32 p would be.
#pragma once

#include <cstdint>

#include "density_math.hpp"

namespace svoo::cuda::detail::density::search {

// Each threshold costs two instructions a score, and the passes are bound by their instructions.
// Measured at Wan2.1-1.3B 720p (run69-70, H100; synthetic / normal data, tau 0.9, against 8
// thresholds 3 octaves apart): 5 thresholds 4 octaves apart cover the 20 octaves below the
// reference (a crossing lies at most log2(N / (1 - tau)) below the row max: 19.5 octaves here;
// deeper ones take coarse_window's last, wider window) and make pass 1 79 ms instead of 102; pass
// 3's window is then an octave instead of 3/4 (pass 3 +4 / +13 ms). The whole: 255 / 275 ms
// against 276 / 286, brackets 1.43e-4 / 5.8e-5 of the keys against 1.16e-4 / 6.3e-5. (7 x 3: 270 /
// 280, the same brackets; 4 x 5: 251 / 266, brackets 1.78e-4 / 6.3e-5.) Since pass 2 runs only for
// the rows the interpolated window misses (interp_window), 4 thresholds (16 octaves below the
// reference; a deeper crossing takes the second round, which no row of either benchmark layer
// needs: bench/results/2026-11-29-cpu-density_interp_study_*_count4.txt): pass 1 67.9 / 69.2 ms
// against 75.9 / 76.8 (run214, H200), the whole 197.0 / 208.7 against 205.9 / 216.3.
inline constexpr int kCoarse = 4;       // pass 1 thresholds
inline constexpr int kCoarseStep = 4;   // octaves between them (whole octaves: rebasing is exact)
// Pass 2 thresholds in the coarse window: windows of kCoarseStep / kMid octaves. 8 took pass 2 from
// 69 to 96 ms and saved pass 3 less than a tenth of that (run51-52); 2 save 17 ms in pass 2 and
// cost pass 3 6-13 ms and twice the bracket (run69).
inline constexpr int kMid = 4;
inline constexpr int kFine = 64;        // pass 3 sub-bins of the fine window
inline constexpr double kSumRelError = 2e-6;
// Relative error of pvalue against 2^(s sl2 - c) in exact arithmetic: the fma's rounding (|x| < 64:
// 2^-19 absolute, 1.3e-6 relative in p) and ex2.approx (2^-22).
inline constexpr double kExpSlack = 2e-6;

SVOO_HD float theta(float y, float sl2) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(y, sl2);
#else
  return y / sl2;
#endif
}

// 2^x in fp32 (ex2.approx, denormals flushed to zero, as on the device).
SVOO_HD float pexp(float x) {
#if defined(__CUDA_ARCH__)
  float p;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(p) : "f"(x));
  return p;
#else
  const float p = std::exp2(x);
  return p < 1.17549435e-38f ? 0.f : p;
#endif
}
SVOO_HD float xvalue(float s, float sl2, float c) { return fmaf(s, sl2, -c); }
SVOO_HD float pvalue(float s, float sl2, float c) { return pexp(xvalue(s, sl2, c)); }

// The least multiple of kCoarseStep above which no score of the row lies: theta(c) > smax.
// (One step up at most corrects the rounding of the estimate; the bound on the loop keeps a NaN
// score from spinning.)
SVOO_HD float reference_above(float smax, float sl2) {
  float c = (floorf(smax * sl2 / kCoarseStep) + 1.f) * kCoarseStep;
  for (int i = 0; i < 4 && !(theta(c, sl2) > smax); ++i) c += kCoarseStep;
  return c;
}

// A window [lo, hi) in octaves (y).
struct Window {
  float lo, hi;
};

// Pass 1's choice. b[k - 1] = mass below theta(c - k kCoarseStep), k = 1..kCoarse; span =
// log2(N / (1 - tau)) (the depth below the max that holds the minimal set).
SVOO_HD Window coarse_window(const double* b, double total, double tau, float c, float smax, float sl2, float span) {
  const double rest = (1.0 - tau) * total;
  for (int k = 1; k <= kCoarse; ++k)
    if (b[k - 1] <= rest) return {c - static_cast<float>(k * kCoarseStep), c - static_cast<float>((k - 1) * kCoarseStep)};
  const float hi = c - static_cast<float>(kCoarse * kCoarseStep);
  const float floor_y = smax * sl2 - span - 1.f;
  float lo = hi - kCoarseStep;
  while (lo > floor_y) lo -= kCoarseStep;
  return {lo, hi};
}

SVOO_HD float mid_threshold(Window w, int k) { return w.hi - static_cast<float>(k) * ((w.hi - w.lo) / kMid); }

// The middle pass replaced by interpolation (the default; `svoo_density_interp_study`,
// bench/results/2026-11-29-cpu-density_interp_study_*.txt). Pass 1 knows ln B at every coarse
// threshold; pass 3 takes a window around the crossing estimated from them, and computes the mass
// below that window's top itself (its top is no threshold of pass 1). The estimate: ln B(y) as the
// parabola through (hi + step, hi, lo), solved for ln((1 - tau) T) in [lo, hi] (the line between lo
// and hi where hi is c, with no third point, or where the parabola does not cross in [lo, hi]). The
// window's width: kInterpWidth plus the distance between the parabola's and the line's estimates
// (their disagreement says how far the curve bends), at most 2 octaves. Rows whose crossing the
// window misses (finish() reports a fallback) run pass 3 again on a window interpolated anew inside
// the side of the coarse window where the crossing lies, from the masses at the first window's
// ends (reinterp_window); rows that miss again, and rows whose crossing lies below pass 1's
// thresholds, run passes 2 and 3 on the coarse window. Each later round runs on a list of its
// rows only. The study (Wan2.1-1.3B 720p, tau 0.9): the first window misses 4.0 % of the synthetic
// layer's rows and none of normal data's, and holds 8.6 % / 16.7 % of the scores, against 11.2 % /
// 25.7 % for pass 2's one-octave window. (The parabola alone with one octave: 2.3 % of the rows
// missed, 11.5 % / 25.7 % of the scores; a line alone missed 12 %; a monotone cubic 4.3 %.)
inline constexpr float kInterpWidth = 0.5f;
inline constexpr float kInterpMaxWidth = 2.f;

SVOO_HD float dyadic16(float y) { return floorf(y * 16.f + 0.5f) / 16.f; }

// Pass 1's mass below theta(y) for a coarse threshold y = c - j kCoarseStep, j = 0..kCoarse (j = 0:
// c itself, which no score reaches: the total).
SVOO_HD double coarse_below(const double* b, double total, float c, float y) {
  const int j = static_cast<int>((c - y) / kCoarseStep + 0.5f);
  return j <= 0 ? total : b[j - 1];
}
// Whether w is one of coarse_window's one-step windows (not the deep one below every threshold).
SVOO_HD bool is_coarse_step(Window w, float c) {
  return w.hi - w.lo <= static_cast<float>(kCoarseStep) && w.lo >= c - static_cast<float>(kCoarse * kCoarseStep);
}
// The coarse window that holds w (a window of interp_window or reinterp_window, or w itself where
// it is no narrower than a step).
SVOO_HD Window coarse_of(Window w, float c) {
  if (!(w.hi - w.lo < static_cast<float>(kCoarseStep))) return w;
  const float hi = c - static_cast<float>(kCoarseStep) * floorf((c - w.hi) / kCoarseStep);
  return {hi - static_cast<float>(kCoarseStep), hi};
}
// A window of `width` octaves around est inside [lo, hi) (all of it where it is no wider), bounds
// multiples of 1/16 (lo and hi are). fmin / fmax: a NaN estimate (a NaN input, whose density is NaN)
// lands on the bottom.
SVOO_HD Window place_window(double est, float width, float lo, float hi) {
  if (!(width < hi - lo)) return {lo, hi};
  const float b = dyadic16(fminf(fmaxf(static_cast<float>(est) - 0.5f * width, lo), hi - width));
  return {b, b + width};
}
SVOO_HD double ln_mass(double m) { return log(fmax(m, 1e-300)); }
// Where the line through (x2, ln m2) and (x1, ln m1) reaches ln rest (m2 <= rest < m1).
SVOO_HD double line_crossing(double x2, double m2, double x1, double m1, double rest) {
  const double y2 = ln_mass(m2), y1 = ln_mass(m1);
  return y1 > y2 ? x2 + (x1 - x2) * (ln_mass(rest) - y2) / (y1 - y2) : 0.5 * (x1 + x2);
}

// Pass 1's choice without pass 2: a window inside the coarse window w around the interpolated
// crossing (see above); w itself where it is the deep window. b[k - 1] = mass below theta(c - k
// kCoarseStep), k = 1..kCoarse.
SVOO_HD Window interp_window(const double* b, double total, double tau, float c, Window w, float width) {
  if (!is_coarse_step(w, c)) return w;
  const double rest = (1.0 - tau) * total, lr = ln_mass(rest);
  const double x1 = w.hi, x2 = w.lo, y1 = ln_mass(coarse_below(b, total, c, w.hi)), y2 = ln_mass(coarse_below(b, total, c, w.lo));
  const double line = line_crossing(x2, coarse_below(b, total, c, w.lo), x1, coarse_below(b, total, c, w.hi), rest);
  double est = line;
  const float up = w.hi + static_cast<float>(kCoarseStep);
  if (up <= c) {
    const double x0 = up, y0 = ln_mass(coarse_below(b, total, c, up));
    auto f = [&](double x) {
      return y0 * (x - x1) * (x - x2) / ((x0 - x1) * (x0 - x2)) + y1 * (x - x0) * (x - x2) / ((x1 - x0) * (x1 - x2)) +
             y2 * (x - x0) * (x - x1) / ((x2 - x0) * (x2 - x1));
    };
    double a = x2, z = x1;
    if (f(a) <= lr && f(z) > lr) {
      for (int i = 0; i < 32; ++i) {
        const double m = 0.5 * (a + z);
        if (f(m) <= lr) a = m; else z = m;
      }
      est = 0.5 * (a + z);
    }
  }
  const float wide = fminf(kInterpMaxWidth, fmaxf(width, dyadic16(width + static_cast<float>(fabs(est - line)))));
  return place_window(est, wide, w.lo, w.hi);
}

// After pass 3 on window w (inside coarse window cw) missed the crossing: b_top = B(w.hi) (pass 3's
// own), window_mass its scores' mass, b_chi / b_clo = B(cw.hi) / B(cw.lo) (pass 1's). The crossing
// lies above w where B(w.hi) <= rest, else below it; the next window is interpolated on the line
// through that side's ends and is `width` wide, or that whole side. ok == false where the side is
// empty (w reaches the coarse window's end there: only by the sums' rounding).
struct Next {
  Window w;
  bool ok;
};
SVOO_HD Next reinterp_window(Window w, Window cw, double b_top, double window_mass, double b_chi, double b_clo,
                             double rest, float width) {
  if (b_top <= rest) {
    if (!(w.hi < cw.hi)) return {cw, false};
    return {place_window(line_crossing(w.hi, b_top, cw.hi, b_chi, rest), width, w.hi, cw.hi), true};
  }
  if (!(cw.lo < w.lo)) return {cw, false};
  return {place_window(line_crossing(cw.lo, b_clo, w.lo, b_top - window_mass, rest), width, cw.lo, w.lo), true};
}

struct Fine {
  Window w;
  double below;  // B: the mass below theta(w.hi)
};
// Pass 2's choice. b[k] = mass below theta(mid_threshold(w, k)), k = 0..kMid-1.
SVOO_HD Fine fine_window(const double* b, double total, double tau, Window w, float c) {
  const double rest = (1.0 - tau) * total;
  if (b[0] <= rest) return {{w.hi, c}, total};
  for (int k = 1; k < kMid; ++k)
    if (b[k] <= rest) return {{mid_threshold(w, k), mid_threshold(w, k - 1)}, b[k - 1]};
  return {{w.lo, mid_threshold(w, kMid - 1)}, b[kMid - 1]};
}

// Pass 3's sub-bins, in x = fma(s, sl2, -c) (the exponent of p): bin i holds the window's scores
// with top - (i + 1) step <= x < top - i step, top = w.hi - c, up to the rounding of x and of the
// bin's computation (fine_bin: a subtraction and a product, at most 1e-3 of a bin for |x| < 128),
// which kBinSlack covers in each bin's bounds in p. No division: the scores of the window go to
// their bins with a multiply, where edges in score space would take an IEEE division each.
inline constexpr double kBinSlack = 1e-5;
SVOO_HD float fine_step(Window w) { return (w.hi - w.lo) / kFine; }
SVOO_HD int fine_bin(float x, float top, float inv_step) {
  const int i = static_cast<int>((top - x) * inv_step);
  return i < 0 ? 0 : i > kFine - 1 ? kFine - 1 : i;
}
// Bounds of p in bin i (relative slack for x's rounding, ex2's error and the bin's computation).
SVOO_HD double bin_top(Window w, float c, int i) {
  return pow2(static_cast<double>(w.hi) - c - i * static_cast<double>(fine_step(w))) * (1.0 + kExpSlack + kBinSlack);
}
SVOO_HD double bin_bottom(Window w, float c, int i) {
  return pow2(static_cast<double>(w.hi) - c - (i + 1) * static_cast<double>(fine_step(w))) *
         (1.0 - kExpSlack - kBinSlack);
}
// Fixed point: an element adds round(p * unit_scale) with unit_scale = S 2^(c - w.hi), S half of
// fixed_scale(N) so that N elements (each at most S (1 + kExpSlack) + 0.5 units) stay below 2^32.
SVOO_HD float unit_scale(std::int64_t k_tokens, Window w, float c) {
  return 0.5f * fixed_scale(k_tokens) * static_cast<float>(pow2(static_cast<double>(c) - w.hi));
}
SVOO_HD std::uint32_t units_of(float p, float scale) { return static_cast<std::uint32_t>(p * scale + 0.5f); }

// The mass of pass 3's window (its sub-bins' units).
SVOO_HD double window_mass(const std::uint32_t* units, std::int64_t k_tokens, Window w, float c) {
  const double uscale = unit_scale(k_tokens, w, c);
  double m = 0.0;
  SVOO_NO_UNROLL
  for (int i = 0; i < kFine; ++i) m += static_cast<double>(units[i]) / uscale;
  return m;
}

// Row totals handed to pass 3's walk.
struct Row {
  double below;         // B: the mass below the window's top
  double total;         // T
  std::int64_t count;   // C: scores at or above theta(w.hi)
  std::int64_t k_tokens;
};

namespace impl {
// The count within the window whose mass reaches target: upper == false, a lower bound (each
// element at most its sub-bin's top); true, an upper bound (at least its bottom). -1 past the window.
SVOO_HD std::int64_t walk(const std::uint32_t* cnt, const std::uint32_t* units, double uscale, Window w, float c,
                          double target, bool upper) {
  return bound(
      kFine, cnt, [&](int i) { return static_cast<double>(units[i]) / uscale; },
      [&](int i) { return bin_top(w, c, i); }, [&](int i) { return bin_bottom(w, c, i); }, target, upper);
}
}  // namespace impl

// The bracket of one row from pass 3's sub-bins (cnt, units: kFine each).
SVOO_HD Count finish(const Row& r, Window w, float c, const std::uint32_t* cnt, const std::uint32_t* units,
                     double tau) {
  const double uscale = unit_scale(r.k_tokens, w, c);
  const double R = r.below - (1.0 - tau) * r.total;
  double window_mass = 0.0;
  std::int64_t window_count = 0;
  SVOO_NO_UNROLL
  for (int i = 0; i < kFine; ++i) window_mass += static_cast<double>(units[i]) / uscale, window_count += cnt[i];
  // delta: the sums' rounding (B and T, each within kSumRelError of itself) and half a unit an
  // element.
  const double delta =
      kSumRelError * (r.below + (1.0 - tau) * r.total) + 0.51 * static_cast<double>(window_count) / uscale;
  bool fallback = false;
  std::int64_t lo, hi;
  if (R - delta > 0.0) {
    const std::int64_t in = impl::walk(cnt, units, uscale, w, c, R - delta, false);
    lo = r.count + (in >= 0 ? in : window_count);
    if (in < 0) fallback = true;
  } else if (R > 0.0) {
    // The crossing may lie among the elements above the window, by at most delta of mass; each of
    // them is at least the window's top.
    const double top = pow2(static_cast<double>(w.hi) - c) * (1.0 - kExpSlack - kBinSlack);
    lo = r.count - static_cast<std::int64_t>(delta / top);
  } else {
    lo = 1;  // cannot happen: pass 2 chose the window with B > (1 - tau) T
    fallback = true;
  }
  const std::int64_t up = impl::walk(cnt, units, uscale, w, c, R + delta, true);
  if (up >= 0) {
    hi = r.count + up;
  } else {
    hi = r.k_tokens;  // the crossing below the window (R within delta of its mass): no bound from here
    if (R > window_mass) fallback = true;
  }
  if (lo < 1) lo = 1;
  if (hi > r.k_tokens) hi = r.k_tokens;
  if (hi < lo) hi = lo;
  // Estimate: in the sub-bin where R is reached, elements at the sub-bin's mean.
  const std::int64_t est = estimate(
      kFine, cnt, [&](int i) { return static_cast<double>(units[i]) / uscale; }, R, window_mass, r.count, lo, hi);
  return {static_cast<std::int32_t>(est), static_cast<std::int32_t>(lo), static_cast<std::int32_t>(hi), fallback};
}

}  // namespace svoo::cuda::detail::density::search
