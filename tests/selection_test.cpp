// Block scores, the selection rules on hand-built rows, and the block layout.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "svoo/cpu.hpp"
#include "svoo/error.hpp"
#include "svoo/selection.hpp"
#include "test_util.hpp"

namespace svoo {
namespace {

std::vector<int> kept_indices(const std::vector<float>& row, const SelectionConfig& cfg, double profiled) {
  std::vector<std::uint8_t> keep(row.size());
  select_row(row.data(), static_cast<int>(row.size()), cfg, profiled, keep.data());
  std::vector<int> out;
  for (std::size_t j = 0; j < keep.size(); ++j)
    if (keep[j]) out.push_back(static_cast<int>(j));
  return out;
}

SelectionConfig no_floor(double p) {
  SelectionConfig c;
  c.top_p = p;
  c.floor_lo = c.floor_hi = 0.0;
  return c;
}

TEST(TopP, KeepsTheElementThatCrossesP) {
  const std::vector<float> row{0.1f, 0.4f, 0.05f, 0.3f, 0.15f};  // order: 1, 3, 4, 0, 2
  EXPECT_EQ(kept_indices(row, no_floor(0.5), 0), (std::vector<int>{1, 3}));         // 0.4 <= 0.5 keeps 3
  EXPECT_EQ(kept_indices(row, no_floor(0.7), 0), (std::vector<int>{1, 3}));         // 0.7 crossed by 3
  EXPECT_EQ(kept_indices(row, no_floor(0.75), 0), (std::vector<int>{1, 3, 4}));
  EXPECT_EQ(kept_indices(row, no_floor(0.0), 0), (std::vector<int>{1}));            // p near 0: the top one
  EXPECT_EQ(kept_indices(row, no_floor(1e-9), 0), (std::vector<int>{1}));
  EXPECT_EQ(kept_indices(row, no_floor(1.0), 0), (std::vector<int>{0, 1, 2, 3, 4}));  // p = 1: all
}

TEST(TopP, TiesAreBrokenByLowerIndex) {
  const std::vector<float> row{0.25f, 0.25f, 0.25f, 0.25f};
  EXPECT_EQ(kept_indices(row, no_floor(0.3), 0), (std::vector<int>{0, 1}));
  EXPECT_EQ(kept_indices(row, no_floor(0.2), 0), (std::vector<int>{0}));
}

TEST(Floor, ClippedProfileDensityRaisesTheCountAndCapLimitsIt) {
  std::vector<float> row(100, 0.0f);
  row[7] = 0.95f;  // top-p alone keeps 2 (0.95 > 0.9 after 7; 7 crosses) ... one: 0.95 crosses at once
  for (int j = 0; j < 100; ++j)
    if (j != 7) row[j] = 0.05f / 99;
  SelectionConfig c;
  c.top_p = 0.9;
  c.floor_lo = 0.15;
  c.floor_hi = 0.20;
  EXPECT_EQ(kept_indices(row, no_floor(0.9), 0).size(), 1u);
  EXPECT_EQ(kept_indices(row, c, 0.01).size(), 15u);  // clipped up to lo
  EXPECT_EQ(kept_indices(row, c, 0.17).size(), 17u);
  EXPECT_EQ(kept_indices(row, c, 0.90).size(), 20u);  // clipped down to hi
  auto kept = kept_indices(row, c, 0.17);
  EXPECT_TRUE(std::find(kept.begin(), kept.end(), 7) != kept.end());
  // Ties among the floor's extra clusters go to lower indices.
  EXPECT_EQ(kept[0], 0);
  c.cap = 0.10;  // the cap never goes below the floor
  EXPECT_EQ(kept_indices(row, c, 0.17).size(), 17u);
  c.floor_lo = c.floor_hi = 0.0;
  c.top_p = 1.0;
  EXPECT_EQ(kept_indices(row, c, 0.5).size(), 10u);  // cap 10 % of 100
  c.cap = 0.0;
  EXPECT_EQ(kept_indices(row, c, 0.5).size(), 1u);  // at least one
}

TEST(PaperRule, UsesMinAboveThetaAndMaxBelow) {
  std::vector<float> row(100, 0.005f);
  for (int j = 0; j < 30; ++j) row[j] = (1.0f - 70 * 0.005f) / 30;  // top-p 0.9 keeps about 30
  SelectionConfig c;
  c.rule = SelectionRule::paper;
  c.top_p = 0.5;
  c.theta = 0.1;
  const std::size_t r = kept_indices(row, no_floor(0.5), 0).size();  // R * Kk
  ASSERT_GT(r, 5u);
  ASSERT_LT(r, 30u);
  EXPECT_EQ(kept_indices(row, c, 0.05).size(), r);       // d <= theta: max(R, d) = R (d small)
  EXPECT_EQ(kept_indices(row, c, 0.08 + r / 100.0).size(), r);  // d > theta: min(R, d) = R
  EXPECT_EQ(kept_indices(row, c, 0.11).size(), std::min<std::size_t>(r, 11));
  c.top_p = 0.0;  // R = 1 cluster
  EXPECT_EQ(kept_indices(row, c, 0.09).size(), 9u);   // below theta: max(R, d) = d
  EXPECT_EQ(kept_indices(row, c, 0.30).size(), 1u);   // above theta: min(R, d) = R
}

TEST(SelectBlocks, ValidatesInputs) {
  std::vector<float> scores(2 * 3 * 4, 0.25f);
  SelectionConfig c;
  std::vector<double> profiled{0.1, 0.2};
  EXPECT_NO_THROW(select_blocks(scores, 2, 3, 4, c, profiled));
  std::vector<double> one{0.1};
  EXPECT_THROW(select_blocks(scores, 2, 3, 4, c, one), Error);
  std::vector<double> nan{0.1, NAN};
  EXPECT_THROW(select_blocks(scores, 2, 3, 4, c, nan), Error);
  c.top_p = 1.5;
  EXPECT_THROW(select_blocks(scores, 2, 3, 4, c, profiled), Error);
  c.top_p = 0.9;
  c.floor_lo = 0.3;
  c.floor_hi = 0.2;
  EXPECT_THROW(select_blocks(scores, 2, 3, 4, c, profiled), Error);
  c = SelectionConfig{};
  EXPECT_THROW(select_blocks(std::span<const float>(scores.data(), 5), 2, 3, 4, c, profiled), Error);
}

TEST(BlockScores, MatchSizeWeightedSoftmaxAndIgnoreEmptyClusters) {
  const int kq = 3, kk = 4;
  const std::int64_t D = 16;
  auto cq = test::random_tensor(DType::f32, {kq, D}, 1), ck = test::random_tensor(DType::f32, {kk, D}, 2);
  const std::int32_t sizes[kk] = {5, 0, 1, 30};
  auto p = block_scores_head(cq.data<float>(), ck.data<float>(), sizes, kq, kk, D);
  for (int i = 0; i < kq; ++i) {
    double w[kk], total = 0;
    for (int j = 0; j < kk; ++j) {
      double a = 0;
      for (int d = 0; d < D; ++d) a += (double)cq.get(i * D + d) * ck.get(j * D + d);
      w[j] = sizes[j] * std::exp(a / 4.0);  // scale 1/sqrt(16)
      total += w[j];
    }
    for (int j = 0; j < kk; ++j) EXPECT_NEAR(p[i * kk + j], w[j] / total, 1e-6);
    EXPECT_EQ(p[i * kk + 1], 0.0f);
  }
}

TEST(BlockScores, CpuBackendAgreesWithTheHeadFunction) {
  auto q = test::random_tensor(DType::f32, {2, 100, 32}, 3), k = test::random_tensor(DType::f32, {2, 120, 32}, 4);
  ClusterConfig cfg;
  cfg.kq = 5;
  cfg.kk = 9;
  const Clustering c = cpu::cluster(q.view(), k.view(), cfg);
  const auto all = cpu::block_scores(c);
  for (int h = 0; h < 2; ++h) {
    auto one = block_scores_head(c.q_centroids.data() + h * 5 * 32, c.k_centroids.data() + h * 9 * 32,
                                 c.k_sizes.data() + h * 9, 5, 9, 32);
    for (int i = 0; i < 45; ++i) EXPECT_NEAR(all[h * 45 + i], one[i], 1e-6);
  }
}

TEST(Layout, PermutationIsAStableSortAndRangesMergeAdjacentClusters) {
  Clustering c;
  c.heads = 1, c.q_tokens = 6, c.k_tokens = 8, c.dim = 1, c.kq = 3, c.kk = 4;
  c.q_labels = {2, 0, 2, 1, 0, 2};
  c.k_labels = {3, 3, 0, 2, 0, 3, 2, 3};  // cluster 1 is empty
  c.q_sizes = {2, 1, 3};
  c.k_sizes = {2, 0, 2, 4};
  c.q_centroids.assign(3, 0.f);
  c.k_centroids.assign(4, 0.f);
  Selection s = keep_all(1, 3, 4);
  s.keep = {1, 0, 1, 1,   // query cluster 0: 0 and 2,3 -> key clusters 0..3 with empty 1 between: one range
            0, 1, 0, 0,   // query cluster 1: only the empty cluster -> no range
            1, 0, 0, 1};  // query cluster 2: two ranges
  const BlockLayout L = build_layout(c, s);
  EXPECT_EQ(L.q_perm, (std::vector<std::int32_t>{1, 4, 3, 0, 2, 5}));
  EXPECT_EQ(L.k_perm, (std::vector<std::int32_t>{2, 4, 3, 6, 0, 1, 5, 7}));
  EXPECT_EQ(L.q_offsets, (std::vector<std::int32_t>{0, 2, 3, 6}));
  EXPECT_EQ(L.k_offsets, (std::vector<std::int32_t>{0, 2, 2, 4, 8}));
  EXPECT_EQ(L.range_ptr, (std::vector<std::int64_t>{0, 1, 1, 3}));
  EXPECT_EQ(L.range_begin, (std::vector<std::int32_t>{0, 0, 4}));
  EXPECT_EQ(L.range_end, (std::vector<std::int32_t>{8, 2, 8}));
  EXPECT_EQ(L.kept_pairs(), 2 * 8 + 0 + 3 * 6);
  const auto inv = invert_permutation(L.q_perm);
  for (int r = 0; r < 6; ++r) EXPECT_EQ(inv[L.q_perm[r]], r);
  EXPECT_THROW(invert_permutation({0, 0, 1}), Error);
}

}  // namespace
}  // namespace svoo
