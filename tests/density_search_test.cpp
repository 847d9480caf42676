// The threshold search of the Hopper tau-density (src/cuda/density_search.hpp), run on the host as
// density_wgmma.cu runs it per row (128-key tiles, fp32 sums of each lane's 32 scores a tile added
// to fp64 sums, the reference moved up tile by tile), against svoo::tau_count: the bracket must
// hold the exact count, the estimate lie inside it, and the width stay small.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "cuda/density_search.hpp"
#include "svoo/measures.hpp"
#include "test_util.hpp"

namespace {

namespace ds = svoo::cuda::detail::density::search;
using svoo::cuda::detail::density::Count;

constexpr int kTile = 128;

struct Sim {
  Count count;
  std::int64_t exact;        // tau_count of p relative to the row max (the spec's probabilities)
  std::int64_t exact_own;    // tau_count of the search's own fp32 p
  std::int64_t window_keys;  // keys in the fine window
  std::int64_t crossing_bin_keys;
  double bin_rel_width;      // a fine sub-bin's relative width in p: 2^(window / kFine) - 1
};

// Sums of one pass: for each tile, each of 4 lanes adds its 32 scores in fp32 (thresholds and
// the total), then adds the partials to fp64 sums.
template <class Thresholds>
void tile_sums(const std::vector<float>& s, std::int64_t t, float sl2, float c, const Thresholds& th,
               std::vector<double>& sums) {
  const int nth = static_cast<int>(th.size());
  const std::int64_t n = static_cast<std::int64_t>(s.size());
  for (int lane = 0; lane < 4; ++lane) {
    std::vector<float> part(nth + 1, 0.f);
    for (std::int64_t j = t * kTile; j < std::min(n, (t + 1) * kTile); ++j) {
      if (((j % kTile) / 2) % 4 != lane) continue;
      const float p = ds::pvalue(s[j], sl2, c);
      part[nth] += p;
      for (int k = 0; k < nth; ++k) part[k] += s[j] < th[k] ? p : 0.f;
    }
    for (int k = 0; k <= nth; ++k) sums[k] += part[k];
  }
}

Sim simulate(const std::vector<float>& s, double tau) {
  const float sl2 = static_cast<float>(1.4426950408889634 / std::sqrt(128.0));
  const auto n = static_cast<std::int64_t>(s.size());
  const std::int64_t tiles = (n + kTile - 1) / kTile;
  const float span = static_cast<float>(std::log2(static_cast<double>(n) / (1.0 - tau)));
  // Pass 1.
  float c = 0.f, top = -3.4e38f, smax = -3.4e38f;
  bool first = true;
  std::vector<float> th(ds::kCoarse);
  std::vector<double> sums(ds::kCoarse + 1, 0.0);
  for (std::int64_t t = 0; t < tiles; ++t) {
    float tm = -3.4e38f;
    for (std::int64_t j = t * kTile; j < std::min(n, (t + 1) * kTile); ++j) tm = std::max(tm, s[j]);
    if (tm >= top) {
      const float cn = ds::reference_above(tm, sl2);
      const int jj = first ? 1 << 20 : static_cast<int>((cn - c) / ds::kCoarseStep + 0.5f);
      const double f = jj * ds::kCoarseStep > 1000 ? 0.0 : std::exp2(-static_cast<double>(jj * ds::kCoarseStep));
      const double total = sums[ds::kCoarse] * f;
      for (int k = ds::kCoarse - 1; k >= 0; --k) sums[k] = k - jj >= 0 ? sums[k - jj] * f : total;
      sums[ds::kCoarse] = total;
      c = cn, top = ds::theta(cn, sl2), first = false;
      for (int k = 0; k < ds::kCoarse; ++k) th[k] = ds::theta(cn - static_cast<float>((k + 1) * ds::kCoarseStep), sl2);
    }
    smax = std::max(smax, tm);
    tile_sums(s, t, sl2, c, th, sums);
  }
  const ds::Window coarse = ds::coarse_window(sums.data(), sums[ds::kCoarse], tau, c, smax, sl2, span);
  // Pass 2.
  th.assign(ds::kMid, 0.f);
  for (int k = 0; k < ds::kMid; ++k) th[k] = ds::theta(ds::mid_threshold(coarse, k), sl2);
  sums.assign(ds::kMid + 1, 0.0);
  for (std::int64_t t = 0; t < tiles; ++t) tile_sums(s, t, sl2, c, th, sums);
  const ds::Fine fine = ds::fine_window(sums.data(), sums[ds::kMid], tau, coarse, c);
  // Pass 3.
  const float hi = ds::theta(fine.w.hi, sl2), lo = ds::theta(fine.w.lo, sl2);
  const float btop = fine.w.hi - c, inv_step = 1.f / ds::fine_step(fine.w);
  const float us = ds::unit_scale(n, fine.w, c);
  std::vector<std::uint32_t> cnt(ds::kFine, 0), units(ds::kFine, 0);
  std::int64_t count = 0, in_window = 0;
  for (float x : s) {
    count += x >= hi;
    if (x >= lo && x < hi) {
      const float xv = ds::xvalue(x, sl2, c);
      const int b = ds::fine_bin(xv, btop, inv_step);
      cnt[b] += 1;
      units[b] += ds::units_of(ds::pexp(xv), us);
      ++in_window;
    }
  }
  Sim out;
  out.count = ds::finish({fine.below, sums[ds::kMid], count, n}, fine.w, c, cnt.data(), units.data(), tau);
  out.exact = svoo::test::spec_tau_count(s, sl2, tau);
  std::vector<float> p(s.size());
  for (std::size_t j = 0; j < s.size(); ++j) p[j] = ds::pvalue(s[j], sl2, c);
  out.exact_own = svoo::tau_count(p.data(), n, tau);
  out.window_keys = in_window;
  out.crossing_bin_keys = *std::max_element(cnt.begin(), cnt.end());
  out.bin_rel_width = std::exp2(static_cast<double>(ds::fine_step(fine.w))) - 1.0;
  return out;
}

std::vector<float> row(std::int64_t n, float spread, unsigned seed, bool ties = false) {
  return svoo::test::normal_scores(n, spread, seed, ties);
}

void expect_holds(const Sim& r) {
  EXPECT_LE(r.count.lo, r.exact_own);
  EXPECT_GE(r.count.hi, r.exact_own);
  EXPECT_LE(r.count.lo, r.exact);
  EXPECT_GE(r.count.hi, r.exact);
  EXPECT_LE(r.count.lo, r.count.estimate);
  EXPECT_GE(r.count.hi, r.count.estimate);
  EXPECT_FALSE(r.count.fallback);
}

TEST(DensitySearch, BracketHoldsTheExactCount) {
  const double one_step_bin_width = std::exp2(static_cast<double>(ds::kCoarseStep) / ds::kMid / ds::kFine) - 1.0;
  int rows = 0;
  for (const svoo::test::ScoreRows& sh : svoo::test::density_test_rows())
    for (double tau : {0.5, 0.9, 0.95, 0.99, 0.999})
      for (unsigned seed = 0; seed < 3; ++seed) {
        const Sim r = simulate(row(sh.n, sh.spread, seed * 7 + static_cast<unsigned>(sh.n), sh.ties), tau);
        ++rows;
        SCOPED_TRACE("n " + std::to_string(sh.n) + " spread " + std::to_string(sh.spread) + " tau " +
                     std::to_string(tau) + " seed " + std::to_string(seed));
        expect_holds(r);
        // Width: a sub-bin's relative width (2^(kCoarseStep / kMid / kFine) - 1, 1.09 % with 4
        // octaves, 4 and 64, where the coarse window is one step; wider where the crossing lies
        // below the coarse thresholds) of the keys in the crossing sub-bin, plus the delta margin
        // of a few keys.
        EXPECT_LE(r.count.hi - r.count.lo, r.bin_rel_width * r.crossing_bin_keys + 4 + 1e-4 * r.exact);
        if (sh.spread <= 8.f) EXPECT_LT(r.bin_rel_width, one_step_bin_width * (1.0 + 1e-6));
      }
  EXPECT_GT(rows, 150);
}

TEST(DensitySearch, RowMaxLateAndFarAboveTheFirstTiles) {
  // The first tiles hold only small scores; the mass sits far later: the reference moves up by many
  // thresholds (the sums shifted out entirely) and the bracket still holds the count.
  for (float peak : {4.f, 20.f, 100.f, 300.f}) {
    std::vector<float> s = row(5000, 1.f, 9);
    for (int j = 3000; j < 3040; ++j) s[j] += peak;
    for (double tau : {0.5, 0.95}) {
      SCOPED_TRACE("peak " + std::to_string(peak) + " tau " + std::to_string(tau));
      expect_holds(simulate(s, tau));
    }
  }
}

TEST(DensitySearch, CrossingBelowTheCoarseThresholds) {
  // Near-uniform rows over many keys at tau close to 1: the crossing lies far below the max
  // (beyond kCoarse thresholds for wide spreads); the last window reaches log2(N / (1 - tau)).
  for (float spread : {6.f, 15.f, 25.f})
    for (double tau : {0.999, 0.9999}) {
      SCOPED_TRACE("spread " + std::to_string(spread) + " tau " + std::to_string(tau));
      expect_holds(simulate(row(40000, spread, 4), tau));
    }
}

TEST(DensitySearch, AllEqualAndTwoLevels) {
  std::vector<float> s(3000, 1.5f);
  for (double tau : {0.3, 0.9, 0.999}) {
    const Sim r = simulate(s, tau);
    expect_holds(r);
  }
  for (int j = 0; j < 3000; j += 3) s[j] = 9.f;  // a third of the keys 7.5 score units (1 octave) higher
  for (double tau : {0.3, 0.6, 0.9}) expect_holds(simulate(s, tau));
}

TEST(DensitySearch, OneDominantKey) {
  std::vector<float> s(5000, 0.f);
  s[4242] = 400.f;
  const Sim r = simulate(s, 0.99);
  EXPECT_EQ(r.exact, 1);
  EXPECT_EQ(r.count.lo, 1);
  EXPECT_EQ(r.count.hi, 1);
}

TEST(DensitySearch, ReferenceIsAboveEveryScore) {
  const float sl2 = static_cast<float>(1.4426950408889634 / std::sqrt(128.0));
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-500.f, 500.f);
  for (int i = 0; i < 20000; ++i) {
    const float smax = u(rng);
    const float c = ds::reference_above(smax, sl2);
    ASSERT_GT(ds::theta(c, sl2), smax);
    ASSERT_LE(ds::theta(c - ds::kCoarseStep, sl2), smax + 1e-3f) << smax;  // the least such multiple (up to rounding)
    ASSERT_EQ(std::fmod(c, static_cast<float>(ds::kCoarseStep)), 0.f);
  }
}

TEST(DensitySearch, FineBinsHoldTheirProbabilities) {
  // Every p of a window's score lies within the bounds of the bin fine_bin gives it.
  const float sl2 = static_cast<float>(1.4426950408889634 / std::sqrt(128.0));
  for (const ds::Window w : {ds::Window{-7.5f, -7.125f}, ds::Window{-48.f, -45.f}, ds::Window{-0.375f, 0.f}})
    for (float c : {3.f, 30.f, -60.f}) {
      std::mt19937 rng(1);
      std::uniform_real_distribution<float> u(ds::theta(w.lo + c, sl2), ds::theta(w.hi + c, sl2));
      const float top = w.hi, inv_step = 1.f / ds::fine_step(w);  // relative to c: w + c - c
      const ds::Window rel{w.lo + c, w.hi + c};
      for (int i = 0; i < 20000; ++i) {
        const float s = u(rng);
        if (s < ds::theta(rel.lo, sl2) || s >= ds::theta(rel.hi, sl2)) continue;
        const float x = ds::xvalue(s, sl2, c);
        const int b = ds::fine_bin(x, top, inv_step);
        const double p = ds::pexp(x);
        ASSERT_LE(p, ds::bin_top(rel, c, b)) << s;
        ASSERT_GE(p, ds::bin_bottom(rel, c, b)) << s;
      }
    }
}

}  // namespace
