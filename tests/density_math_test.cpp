// The histogram arithmetic of the device tau-density (src/cuda/density_math.hpp), run on the host
// exactly as the three passes of density.cu run it per row, against svoo::tau_count on the same
// fp32 probabilities: the bracket must contain the exact count, the estimate lie inside it, and
// the width stay within the stated bound. Also the argument checks of the public entry.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "cuda/density_math.hpp"
#include "svoo/measures.hpp"
#include "test_util.hpp"

#ifdef SVOO_WITH_CUDA
#include "svoo/cuda.hpp"
#include "svoo/error.hpp"
#endif

namespace {

namespace dm = svoo::cuda::detail::density;

struct Sim {
  dm::Count count;
  std::int64_t exact;
  std::int64_t crossing_subbin_keys;
};

// One row of scores through the two passes (the kernel's per-element arithmetic) and the final
// walk. The reference is the max of the first 64-key tile, or the row max where that one is more
// than kRefOctaves octaves above it (as the kernel redoes such a tile).
Sim simulate(const std::vector<float>& s, double tau) {
  const float sl2 = static_cast<float>(1.4426950408889634 / std::sqrt(128.0));
  const auto n = static_cast<std::int64_t>(s.size());
  float m = *std::max_element(s.begin(), s.begin() + std::min<std::int64_t>(n, 64));
  const float row_max = *std::max_element(s.begin(), s.end());
  if ((row_max - m) * sl2 >= static_cast<float>(dm::kRefOctaves)) m = row_max;
  const float scale = dm::fixed_scale(n);
  const int shift = dm::fixed_shift(scale);
  std::vector<float> p(s.size());
  for (std::size_t j = 0; j < s.size(); ++j) p[j] = std::exp2((s[j] - m) * sl2);
  // Pass 1: counts and exact significand sums per octave; A, T, C come out of its walk.
  const int drop = dm::exact_drop(n);
  std::vector<std::uint32_t> cnt(dm::kBins1, 0), hi(dm::kBins1, 0), lo(dm::kBins1, 0);
  for (float x : p) {
    const int b = dm::bin1(x);
    cnt[b] += 1;
    hi[b] += dm::sig_hi(x, drop);
    lo[b] += dm::sig_lo(x, drop);
  }
  const dm::Level1 l1 = dm::walk1(cnt.data(), hi.data(), lo.data(), drop, tau);
  // Pass 2: the crossing bin's elements into sub-bins.
  std::vector<std::uint32_t> c2(dm::kBins2, 0), u2(dm::kBins2, 0);
  dm::Row3 r{l1.above_mass, l1.total, l1.above_count, 0, l1.error};
  for (float x : p) {
    if (dm::bin1(x) == l1.bstar) {
      const int sub = dm::bin2(x);
      c2[sub] += 1;
      u2[sub] += dm::units(x, shift);
    }
  }
  for (float x : s) r.positives += std::exp2((x - row_max) * sl2) > 0.f;  // p > 0 against the row max
  Sim out;
  out.count = dm::finish_row(r, l1, c2.data(), u2.data(), scale, tau);
  out.exact = svoo::test::spec_tau_count(s, sl2, tau);
  out.crossing_subbin_keys = *std::max_element(c2.begin(), c2.end());
  return out;
}

std::vector<float> row(std::int64_t n, float spread, unsigned seed, bool ties = false) {
  return svoo::test::normal_scores(n, spread, seed, ties);
}

TEST(DensityMath, LevelOneMassesAreExact) {
  // The split significand sums reproduce the exact sum of the fp32 values of a bin.
  const std::vector<float> s = row(75600, 3.f, 21);
  const float sl2 = static_cast<float>(1.4426950408889634 / std::sqrt(128.0));
  const float m = *std::max_element(s.begin(), s.end());
  const int drop = dm::exact_drop(75600);
  EXPECT_EQ(drop, 0);
  EXPECT_EQ(dm::exact_drop(std::int64_t{1} << 20), 0);
  EXPECT_EQ(dm::exact_drop((std::int64_t{1} << 20) + 1), 1);
  std::vector<std::uint32_t> hi(dm::kBins1, 0), lo(dm::kBins1, 0);
  std::vector<double> exact(dm::kBins1, 0.0);
  for (float x : s) {
    const float p = std::exp2((x - m) * sl2);
    const int b = dm::bin1(p);
    hi[b] += dm::sig_hi(p, drop), lo[b] += dm::sig_lo(p, drop), exact[b] += p;
  }
  for (int b = 0; b < dm::kBins1 - 1; ++b) EXPECT_EQ(dm::mass1(b, hi[b], lo[b], drop), exact[b]) << b;
}

TEST(DensityMath, CandidateRangeHoldsEveryScoreOfItsBin) {
  // Pass 2 keeps scores in candidate_range(r, bs) and then tests bin1(p) == bs exactly: no score
  // of bin bs may fall outside the range.
  const float sl2 = static_cast<float>(1.4426950408889634 / std::sqrt(128.0));
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> ref(-300.f, 300.f), off(-400.f, 250.f);
  std::int64_t checked = 0;
  for (int i = 0; i < 200000; ++i) {
    const float r = ref(rng), s = r + off(rng);
    const float p = std::exp2((s - r) * sl2);
    const int b = dm::bin1(p);
    float lo, hi;
    dm::candidate_range(r, b, sl2, lo, hi);
    EXPECT_TRUE(s >= lo && s < hi) << s << " " << r << " bin " << b;
    ++checked;
  }
  EXPECT_EQ(checked, 200000);
}

TEST(DensityMath, FixedPointSumsCannotOverflow) {
  for (std::int64_t n : {1LL, 77LL, 75600LL, 1000000LL, 3000000000LL}) {
    const double s = dm::fixed_scale(n);
    EXPECT_LT(static_cast<double>(n) * s, 4294967296.0) << n;
    EXPECT_GE(s, 1.0);
  }
  EXPECT_EQ(dm::fixed_scale(75600), 32768.0f);
}

TEST(DensityMath, BinsOrderValues) {
  // Larger probabilities never land in a later bin or sub-bin, every value lies inside its
  // sub-bin's bounds, and the fixed-point mass is v * S with v = p / ref(bin) in [1/2, 1].
  const float scale = dm::fixed_scale(75600);
  const int shift = dm::fixed_shift(scale);
  EXPECT_EQ(shift, 9);
  const float top = std::ldexp(1.0f, dm::kRefOctaves + 1) * 0.9999f;
  float prev = top;
  for (float p = top; p > 1e-30f; p *= 0.9993f) {
    const int b = dm::bin1(p), pb = dm::bin1(prev);
    EXPECT_GE(b, pb);
    if (b == pb && b < dm::kBins1 - 1) EXPECT_GE(dm::bin2(p), dm::bin2(prev));
    prev = p;
    if (b == dm::kBins1 - 1) continue;
    const int sub = dm::bin2(p);
    ASSERT_GE(sub, 0);
    ASSERT_LT(sub, dm::kBins2);
    EXPECT_LE(dm::bottom2(b, sub), p);
    EXPECT_GT(dm::top2(b, sub), p);
    const double v = static_cast<double>(dm::units(p, shift)) / scale;
    EXPECT_NEAR(v * dm::top1(b), p, 0.5 / scale * dm::top1(b) * 1.0001) << p;
  }
  EXPECT_EQ(dm::bin1(top), 0);
  EXPECT_EQ(dm::bin1(1.0f), dm::kRefOctaves);
  EXPECT_EQ(dm::bin1(0.0f), dm::kBins1 - 1);
  EXPECT_EQ(dm::units(0.0f, shift), 0u);
}

TEST(DensityMath, BracketHoldsTheExactCount) {
  int rows = 0;
  for (const svoo::test::ScoreRows& sh : svoo::test::density_test_rows())
    for (double tau : {0.5, 0.9, 0.95, 0.99, 0.999})
      for (unsigned seed = 0; seed < 3; ++seed) {
        const Sim r = simulate(row(sh.n, sh.spread, seed * 7 + static_cast<unsigned>(sh.n), sh.ties), tau);
        ++rows;
        SCOPED_TRACE("n " + std::to_string(sh.n) + " spread " + std::to_string(sh.spread) + " tau " +
                     std::to_string(tau));
        EXPECT_LE(r.count.lo, r.exact);
        EXPECT_GE(r.count.hi, r.exact);
        EXPECT_LE(r.count.lo, r.count.estimate);
        EXPECT_GE(r.count.hi, r.count.estimate);
        EXPECT_FALSE(r.count.fallback);
        // Width: a sub-bin's relative width (at most 1/128) of the keys in the crossing sub-bin (at
        // most all of them), plus the delta margin of a few keys.
        EXPECT_LE(r.count.hi - r.count.lo, r.crossing_subbin_keys / 128.0 + 4 + 0.002 * r.exact);
      }
  EXPECT_GT(rows, 100);
}

TEST(DensityMath, TauOneIsThePositiveCount) {
  std::vector<float> s = row(1000, 1.f, 3);
  s[10] = -1e6f;  // underflows to 0
  s[500] = 1200.f;  // the row max, far above the first tile: still counted against the max
  const Sim r = simulate(s, 1.0);
  // Against the max, the first tile's scores (about 1200 below) underflow too: only keys within
  // ~1170 raw score units of the max (149 octaves) stay positive, i.e. the max itself.
  EXPECT_EQ(r.count.estimate, r.exact);
  EXPECT_EQ(r.count.lo, r.count.hi);
}

TEST(DensityMath, RowMaxFarAboveTheFirstTile) {
  // The first tile holds only small scores; the row's mass sits far later: the reference moves to
  // the row max (the kernel's second sweep) and the bracket still holds the exact count.
  for (float peak : {100.f, 300.f}) {
    std::vector<float> s = row(5000, 1.f, 9);
    for (int j = 3000; j < 3040; ++j) s[j] += peak;
    for (double tau : {0.5, 0.95}) {
      const Sim r = simulate(s, tau);
      EXPECT_LE(r.count.lo, r.exact) << peak;
      EXPECT_GE(r.count.hi, r.exact) << peak;
    }
  }
}

TEST(DensityMath, OneDominantKey) {
  std::vector<float> s(5000, 0.f);
  s[42] = 400.f;  // p of the rest ~ 2^-51: all mass on one key
  const Sim r = simulate(s, 0.99);
  EXPECT_EQ(r.exact, 1);
  EXPECT_EQ(r.count.estimate, 1);
  EXPECT_EQ(r.count.lo, 1);
}


}  // namespace
