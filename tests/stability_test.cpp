// Entry statistics, ranks, Spearman, ICC / variance decomposition, the stability verdict and
// profile comparison, against hand-computed values.
#include <gtest/gtest.h>

#include <cmath>

#include "svoo/error.hpp"
#include "svoo/stability.hpp"

namespace svoo {
namespace {

TEST(EntryStats, HandComputed) {
  const std::vector<double> v{0.1, 0.2, 0.6};
  const EntryStats s = entry_stats(v);
  EXPECT_EQ(s.count, 3);
  EXPECT_NEAR(s.mean, 0.3, 1e-15);
  // deviations -0.2, -0.1, 0.3: sum of squares 0.14, sample variance 0.07
  EXPECT_NEAR(s.std, std::sqrt(0.07), 1e-15);
  EXPECT_DOUBLE_EQ(s.min, 0.1);
  EXPECT_DOUBLE_EQ(s.max, 0.6);
  EXPECT_DOUBLE_EQ(aggregate_value(s, Aggregate::max), 0.6);
  EXPECT_NEAR(aggregate_value(s, Aggregate::quantile), 0.3 + 1.645 * std::sqrt(0.07), 1e-15);
}

TEST(EntryStats, OneValueHasZeroStdAndQuantileClips) {
  const std::vector<double> one{0.4};
  EXPECT_EQ(entry_stats(one).std, 0.0);
  EXPECT_DOUBLE_EQ(aggregate_value(entry_stats(one), Aggregate::quantile), 0.4);
  const std::vector<double> wide{0.1, 0.9};  // mean 0.5, std 0.5657: 0.5 + 0.93 > 1
  EXPECT_EQ(aggregate_value(entry_stats(wide), Aggregate::quantile), 1.0);
  EXPECT_THROW(entry_stats(std::vector<double>{}), Error);
}

TEST(Ranks, TiesGetAverageRanks) {
  const std::vector<double> v{10, 20, 20, 5, 20};
  const std::vector<double> want{2, 4, 4, 1, 4};
  EXPECT_EQ(average_ranks(v), want);
}

TEST(Spearman, KnownAnswers) {
  const std::vector<double> a{1, 2, 3, 4, 5};
  const std::vector<double> b{2, 4, 8, 16, 32};  // monotone, not linear
  EXPECT_NEAR(spearman(a, b), 1.0, 1e-15);
  const std::vector<double> c{5, 4, 3, 2, 1};
  EXPECT_NEAR(spearman(a, c), -1.0, 1e-15);
  // With ties: x ranks 1, 2.5, 2.5, 4; y ranks 1, 2, 3, 4 -> Pearson = 2.5 / sqrt(4.5 * 5)
  const std::vector<double> x{1, 2, 2, 3}, y{1, 2, 3, 4};
  EXPECT_NEAR(spearman(x, y), 4.5 / std::sqrt(4.5 * 5.0), 1e-15);
  EXPECT_TRUE(std::isnan(spearman(std::vector<double>{1, 1, 1}, std::vector<double>{1, 2, 3})));
}

TEST(Anova, HandComputedIcc) {
  // Groups {1, 3} and {5, 7}: grand 4, means 2 and 6, SSB = 2 * (4 + 4) = 16, MSB = 16;
  // SSW = 2 + 2 = 4, MSW = 4 / 2 = 2; ICC = (16 - 2) / (16 + 2) = 7/9; share = 16 / 20.
  const std::vector<double> v{1, 3, 5, 7};
  const Anova a = one_way_anova(v, 2, 2);
  EXPECT_NEAR(a.msb, 16, 1e-12);
  EXPECT_NEAR(a.msw, 2, 1e-12);
  EXPECT_NEAR(a.icc, 7.0 / 9.0, 1e-12);
  EXPECT_NEAR(a.between_share, 0.8, 1e-12);
  // Identical groups: no between variance, ICC = (0 - MSW) / (k MSW) = -1 / (k - 1).
  const std::vector<double> same{1, 3, 1, 3};
  EXPECT_NEAR(one_way_anova(same, 2, 2).icc, -1.0, 1e-12);
}

// A 1-step x L-layer x 1-head grid measured on k single-input profiles: values[i][l].
std::vector<Profile> per_input_profiles(const std::vector<std::vector<double>>& values) {
  std::vector<Profile> out;
  for (const auto& v : values) {
    Profile p(1, static_cast<int>(v.size()), 1);
    for (std::size_t l = 0; l < v.size(); ++l) p.set(1, static_cast<int>(l), 0, v[l]);
    out.push_back(p);
  }
  return out;
}

TEST(Verdict, StableCaseIsYes) {
  // Layers at 0.1, 0.3, 0.5 (std 0.2); inputs move each by +-0.01.
  const auto ps = per_input_profiles({{0.09, 0.29, 0.51}, {0.11, 0.31, 0.49}});
  const StabilityReport r = analyze_stability(stability_data(ps, {"a", "b"}));
  ASSERT_TRUE(r.stable.has_value());
  EXPECT_TRUE(*r.stable);
  EXPECT_NEAR(r.std_across_layers, 0.2, 1e-12);
  EXPECT_NEAR(*r.within_std, 0.01 * std::sqrt(2.0), 1e-12);  // each entry: {x - .01, x + .01}
  EXPECT_NEAR(*r.ratio, 0.01 * std::sqrt(2.0) / 0.2, 1e-12);
  ASSERT_EQ(r.pairs.size(), 1u);
  EXPECT_NEAR(r.pairs[0].spearman, 1.0, 1e-12);
  EXPECT_GT(r.anova->icc, 0.99);
}

TEST(Verdict, UnstableCaseIsNo) {
  // The inputs disagree by 0.2 on every layer; layers differ by 0.1.
  const auto ps = per_input_profiles({{0.1, 0.2, 0.3}, {0.3, 0.2, 0.1}});
  const StabilityReport r = analyze_stability(stability_data(ps, {"a", "b"}));
  ASSERT_TRUE(r.stable.has_value());
  EXPECT_FALSE(*r.stable);
  EXPECT_GT(*r.ratio, 1.0);
  EXPECT_NEAR(r.pairs[0].spearman, -1.0, 1e-12);
}

TEST(Verdict, StatsProfileGivesTheSameNumbersAsPerInputProfiles) {
  const std::vector<std::vector<double>> v{{0.09, 0.29, 0.51}, {0.11, 0.31, 0.49}, {0.1, 0.33, 0.5}};
  const auto ps = per_input_profiles(v);
  Profile stats(1, 3, 1);
  for (int l = 0; l < 3; ++l) {
    const std::vector<double> x{v[0][l], v[1][l], v[2][l]};
    const EntryStats s = entry_stats(x);
    stats.set(1, l, 0, s.max, s);
  }
  const StabilityReport a = analyze_stability(stability_data(ps, {"a", "b", "c"}));
  const StabilityReport b = analyze_stability(stability_data({stats}, {"s"}));
  EXPECT_FALSE(b.per_input);
  EXPECT_EQ(b.inputs, 3);
  EXPECT_NEAR(a.anova->icc, b.anova->icc, 1e-12);
  EXPECT_NEAR(*a.ratio, *b.ratio, 1e-12);
  EXPECT_TRUE(b.pairs.empty());  // needs per-input values
}

TEST(Verdict, OneInputIsUndecided) {
  const auto ps = per_input_profiles({{0.1, 0.2, 0.4}});
  const StabilityReport r = analyze_stability(stability_data(ps, {"a"}));
  EXPECT_FALSE(r.stable.has_value());
  EXPECT_FALSE(r.anova.has_value());
  EXPECT_NE(r.notes.front().find("One input only"), std::string::npos);
}

TEST(StabilityData, RejectsMismatchedGrids) {
  auto ps = per_input_profiles({{0.1, 0.2}, {0.1, 0.2, 0.3}});
  try {
    stability_data(ps, {"a.csv", "b.csv"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("must share the grid"), std::string::npos) << e.what();
  }
}

TEST(Compare, HandMadeProfiles) {
  Profile a(1, 2, 2), b(1, 2, 2);
  a.set(1, 0, 0, 0.1), a.set(1, 0, 1, 0.2), a.set(1, 1, 0, 0.3), a.set(1, 1, 1, 0.4);
  b.set(1, 0, 0, 0.1), b.set(1, 0, 1, 0.25), b.set(1, 1, 0, 0.5);  // (1,1,1) only in A
  const ProfileDiff d = compare_profiles(a, b);
  ASSERT_EQ(d.entries.size(), 3u);
  EXPECT_EQ(d.only_a, 1);
  EXPECT_EQ(d.only_b, 0);
  EXPECT_NEAR(d.mean_abs, (0 + 0.05 + 0.2) / 3, 1e-12);
  EXPECT_NEAR(d.max_abs, 0.2, 1e-12);
  EXPECT_EQ(d.max_entry.layer, 1);
  EXPECT_EQ(d.max_entry.head, 0);
  EXPECT_NEAR(d.correlation, pearson(std::vector<double>{0.1, 0.2, 0.3}, std::vector<double>{0.1, 0.25, 0.5}), 1e-15);
  EXPECT_EQ(format_diff_csv(d).substr(0, 24), "Step,Layer,Head,A,B,Diff");
}

}  // namespace
}  // namespace svoo
