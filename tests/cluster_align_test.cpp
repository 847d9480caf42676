// Query-cluster alignment (ClusterConfig::query_align): the rounds of align_clusters on hand-made
// candidate lists whose outcome is known, and the CPU post-pass on random data.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <string>

#include "svoo/cpu.hpp"
#include "svoo/error.hpp"
#include "test_util.hpp"

namespace svoo {
namespace {

std::vector<std::int32_t> sizes_of(const std::vector<std::int32_t>& labels, int clusters) {
  std::vector<std::int32_t> s(clusters, 0);
  for (auto l : labels) ++s[l];
  return s;
}

// Candidate lists of e entries a row, -1 padded: rows -> {(cluster, cost), ...}.
struct Lists {
  int e;
  std::vector<std::int32_t> cand;
  std::vector<float> cost;
  Lists(std::size_t rows, int e_) : e(e_), cand(rows * e_, -1), cost(rows * e_, 0.0f) {}
  void set(std::size_t row, std::initializer_list<std::pair<int, float>> l) {
    int k = 0;
    for (auto [c, v] : l) cand[row * e + k] = c, cost[row * e + k] = v, ++k;
  }
};

TEST(AlignClusters, TakersAreClustersMoreThanHalfFull) {
  // align 4: remainders 0, 1, 2 shed (or are aligned); 3 takes.
  EXPECT_EQ(alignment_takers(std::vector<std::int32_t>{4, 5, 6, 7, 3, 0, 1}, 4, 2),
            (std::vector<std::uint8_t>{0, 0, 0, 1, 1, 0, 0}));
}

TEST(AlignClusters, CheapestRowMovesToTheClusterWithRoom) {
  // align 4. Cluster 0 has 5 rows (sheds 1), cluster 1 has 3 (takes 1).
  std::vector<std::int32_t> labels{0, 0, 0, 0, 0, 1, 1, 1};
  Lists l(labels.size(), 2);
  for (int i = 0; i < 5; ++i) l.set(i, {{1, 1.0f + i}});
  l.set(3, {{1, 0.25f}});  // the cheapest
  EXPECT_EQ(align_clusters(labels, 2, 4, l.e, l.cand, l.cost, 2), 1);
  EXPECT_EQ(labels, (std::vector<std::int32_t>{0, 0, 0, 1, 0, 1, 1, 1}));
}

TEST(AlignClusters, AClusterThatCannotPlaceEveryRowKeepsThemAll) {
  // align 8. Cluster 0: 10 rows (sheds 2); cluster 1: 7 rows (takes 1); nothing else has room.
  std::vector<std::int32_t> labels(17, 0);
  std::fill(labels.begin() + 10, labels.end(), 1);
  Lists l(labels.size(), 2);
  for (int i = 0; i < 10; ++i) l.set(i, {{1, 0.5f}});
  const auto before = labels;
  EXPECT_EQ(align_clusters(labels, 2, 8, l.e, l.cand, l.cost, 4), 0);
  EXPECT_EQ(labels, before);
}

TEST(AlignClusters, TheRefusedTryTheirNextCandidateAndTiesGoToTheLowerRow) {
  // align 4. Clusters 0 and 1 each shed one row (5 rows each); clusters 2 and 3 take one each
  // (3 rows each). Both shedders' cheapest rows want cluster 2 at equal cost: the lower row
  // (row 1, of cluster 0) wins it, the other (row 7, of cluster 1) moves to its second choice.
  std::vector<std::int32_t> labels{0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3};
  Lists l(labels.size(), 3);
  for (int i = 0; i < 10; ++i) l.set(i, {{2, 5.0f}, {3, 6.0f}});
  l.set(1, {{2, 0.5f}, {3, 0.6f}});
  l.set(7, {{2, 0.5f}, {3, 0.9f}});
  EXPECT_EQ(align_clusters(labels, 4, 4, l.e, l.cand, l.cost, 2), 2);
  EXPECT_EQ(labels[1], 2);
  EXPECT_EQ(labels[7], 3);
  for (auto s : sizes_of(labels, 4)) EXPECT_EQ(s % 4, 0);
}

TEST(AlignClusters, AFailedClusterTakesBackTheRowsAlreadyAccepted) {
  // align 4. Cluster 0 sheds 2 (6 rows), rows 0 and 1 listing only cluster 2 (3 rows, room 1):
  // row 0 is accepted in the first round, row 1 refused, and with no candidate left cluster 0
  // fails in the second, so row 0 goes home. Cluster 1 sheds 1 (5 rows): its row 6, refused by
  // cluster 2 in the first round, moves to its second choice, cluster 3 (3 rows), in the second.
  std::vector<std::int32_t> labels{0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3};
  Lists l(labels.size(), 2);
  l.set(0, {{2, 0.1f}});
  l.set(1, {{2, 0.2f}});
  l.set(6, {{2, 0.9f}, {3, 0.95f}});
  EXPECT_EQ(align_clusters(labels, 4, 4, l.e, l.cand, l.cost, 2), 1);
  EXPECT_EQ(labels[0], 0);
  EXPECT_EQ(labels[1], 0);
  EXPECT_EQ(labels[6], 3);
}

TEST(AlignClusters, CandidatesThatDoNotTakeRowsAreSkipped) {
  // align 4. Cluster 0 sheds 1; its row lists cluster 1 (aligned: 4 rows) before cluster 2 (takes).
  std::vector<std::int32_t> labels{0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2};
  Lists l(labels.size(), 2);
  l.set(0, {{1, 0.1f}, {2, 0.3f}});
  EXPECT_EQ(align_clusters(labels, 3, 4, l.e, l.cand, l.cost, 2), 1);
  EXPECT_EQ(labels[0], 2);
}

TEST(AlignClusters, LaterPassesLowerTheBarForTaking) {
  EXPECT_EQ(alignment_take_above(128, 0), 64);
  EXPECT_EQ(alignment_take_above(128, 1), 56);
  EXPECT_EQ(alignment_take_above(128, 4), 32);
  EXPECT_EQ(alignment_take_above(128, 7), 8);
  EXPECT_EQ(alignment_take_above(32, 3), 10);
  EXPECT_EQ(alignment_take_above(8, 3), 4);  // align / 16 = 0: the bar stays
  EXPECT_EQ(alignment_take_above(2, 0), 1);
  // align 8, bar 2: remainders 3 and up take.
  EXPECT_EQ(alignment_takers(std::vector<std::int32_t>{8, 9, 10, 11, 12, 15}, 8, 2),
            (std::vector<std::uint8_t>{0, 0, 0, 1, 1, 1}));
}

TEST(AlignClusters, ALowerBarAlignsWhatTheFirstPassCouldNot) {
  // align 8. Cluster 0 holds 3 rows, cluster 1 holds 2: both shed at the first pass's bar (4) and
  // nothing takes, so nothing moves. At bar 2, cluster 0 takes (room 5) and cluster 1's two rows
  // move there: one partly filled item instead of two.
  std::vector<std::int32_t> labels{0, 0, 0, 1, 1};
  Lists l(labels.size(), 1);
  l.set(3, {{0, 0.5f}});
  l.set(4, {{0, 0.25f}});
  const auto before = labels;
  EXPECT_EQ(align_clusters(labels, 2, 8, l.e, l.cand, l.cost, alignment_take_above(8, 0)), 0);
  EXPECT_EQ(labels, before);
  EXPECT_EQ(align_clusters(labels, 2, 8, l.e, l.cand, l.cost, 2), 2);
  EXPECT_EQ(labels, (std::vector<std::int32_t>{0, 0, 0, 0, 0}));
  // A bar outside [1, align / 2] is named.
  EXPECT_THROW(align_clusters(labels, 2, 8, l.e, l.cand, l.cost, 5), Error);
  EXPECT_THROW(align_clusters(labels, 2, 8, l.e, l.cand, l.cost, 0), Error);
  EXPECT_THROW(alignment_takers(std::vector<std::int32_t>{3}, 8, 5), Error);
}

TEST(AlignClusters, RejectsBadInput) {
  std::vector<std::int32_t> labels{0, 1, 2};
  Lists l(labels.size(), 2);
  EXPECT_THROW(align_clusters(labels, 2, 4, l.e, l.cand, l.cost, 2), Error);  // label 2 out of range
  labels = {0, 1, 1};
  EXPECT_THROW(align_clusters(labels, 2, 1, l.e, l.cand, l.cost, 1), Error);  // align below 2
  EXPECT_THROW(align_clusters(labels, 2, 4, 3, l.cand, l.cost, 2), Error);    // lists of 2, e = 3
  EXPECT_THROW(empty_chunk_rows(std::vector<std::int32_t>{1}, 0), Error);
}

TEST(AlignClusters, EmptyChunkRows) {
  EXPECT_EQ(empty_chunk_rows(std::vector<std::int32_t>{0, 1, 64, 65, 127}, 64), 0 + 63 + 0 + 63 + 1);
}

// The post-pass on random data: fewer empty rows, few rows moved, a valid clustering whose
// centroids are the means of the new members, and the same result twice.
TEST(AlignQueries, CpuClusteringWithAlignment) {
  const auto q = test::random_tensor(DType::bf16, {2, 3000, 32}, 5), k = test::random_tensor(DType::bf16, {2, 3000, 32}, 6);
  ClusterConfig cfg;
  cfg.kq = 24, cfg.kk = 40, cfg.seed = 3;
  const Clustering plain = cpu::cluster(q.view(), k.view(), cfg);
  cfg.query_align = 32;
  const Clustering aligned = cpu::cluster(q.view(), k.view(), cfg), again = cpu::cluster(q.view(), k.view(), cfg);
  EXPECT_EQ(aligned.q_labels, again.q_labels);
  EXPECT_NO_THROW(check_clustering(aligned));
  EXPECT_EQ(aligned.k_labels, plain.k_labels);  // keys untouched
  const std::int64_t before = empty_chunk_rows(plain.q_sizes, 32), after = empty_chunk_rows(aligned.q_sizes, 32);
  EXPECT_LT(after, before * 3 / 4);
  std::int64_t moved = 0;
  for (std::size_t i = 0; i < plain.q_labels.size(); ++i) moved += plain.q_labels[i] != aligned.q_labels[i];
  EXPECT_GT(moved, 0);
  EXPECT_LT(moved, static_cast<std::int64_t>(plain.q_labels.size()) / 5);
  // Centroid of a changed cluster = mean of its members.
  const std::int64_t D = 32;
  for (int j = 0; j < cfg.kq; ++j) {
    if (aligned.q_sizes[j] == plain.q_sizes[j] || aligned.q_sizes[j] == 0) continue;
    std::vector<double> mean(D, 0.0);
    for (std::int64_t n = 0; n < 3000; ++n)
      if (aligned.q_labels[n] == j)
        for (std::int64_t d = 0; d < D; ++d) mean[d] += test::at(q.view(), 0, n, d);
    for (std::int64_t d = 0; d < D; ++d)
      EXPECT_NEAR(aligned.q_centroids[j * D + d], mean[d] / aligned.q_sizes[j], 1e-4);
  }
  // More passes leave fewer empty rows than one (ClusterConfig::align_passes), and the post-pass
  // with the same passes gives the same labels.
  ClusterConfig one = cfg;
  one.align_passes = 1;
  const Clustering single = cpu::cluster(q.view(), k.view(), one);
  EXPECT_LE(after, empty_chunk_rows(single.q_sizes, 32));
  EXPECT_LT(empty_chunk_rows(single.q_sizes, 32), before);
  Clustering post1 = plain;
  cpu::align_queries(q.view(), post1, 32, cfg.align_candidates, ClusterMethod::coclustering, 1);
  EXPECT_EQ(post1.q_labels, single.q_labels);
  // The post-pass on a clustering made without it gives the same labels.
  Clustering post = plain;
  cpu::align_queries(q.view(), post, 32, cfg.align_candidates);
  EXPECT_EQ(post.q_labels, aligned.q_labels);
  EXPECT_EQ(post.q_sizes, aligned.q_sizes);
  // align 0 leaves it alone; bad arguments are named.
  Clustering same = plain;
  cpu::align_queries(q.view(), same, 0, 8);
  EXPECT_EQ(same.q_labels, plain.q_labels);
  EXPECT_THROW(cpu::align_queries(q.view(), same, 32, 0), Error);
  EXPECT_THROW(cpu::align_queries(k.view(), same, -1, 8), Error);
  // q that is not the clustering's, or not host memory, is named.
  const auto short_q = test::random_tensor(DType::bf16, {2, 2999, 32}, 7);
  try {
    cpu::align_queries(short_q.view(), same, 32, 8);
    ADD_FAILURE() << "a q of 2999 tokens was accepted for a clustering of 3000";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[heads, q_tokens, dim] = [2, 3000, 32]"), std::string::npos) << e.what();
  }
  TensorView on_device = q.view();
  on_device.device = Device::cuda;
  EXPECT_THROW(cpu::align_queries(on_device, same, 32, 8), Error);
  cfg.align_candidates = 65;
  EXPECT_THROW(cpu::cluster(q.view(), k.view(), cfg), Error);
  cfg.align_candidates = 8;
  for (const int passes : {0, 9}) {
    cfg.align_passes = passes;
    try {
      cpu::cluster(q.view(), k.view(), cfg);
      ADD_FAILURE() << passes << " alignment passes were accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("1 to 8 passes"), std::string::npos) << e.what();
    }
    EXPECT_THROW(cpu::align_queries(q.view(), same, 32, 8, ClusterMethod::coclustering, passes), Error);
  }
  cfg.align_passes = 5;
  // An alignment past the kernel's largest item is named, not clamped.
  cfg.align_candidates = 8, cfg.query_align = 257;
  try {
    cpu::cluster(q.view(), k.view(), cfg);
    ADD_FAILURE() << "query_align 257 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("align in [0, 256]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace svoo
