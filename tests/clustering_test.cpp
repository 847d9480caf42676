// Co-clustering and k-means on the CPU against the literal formulas of spec 2.1.
#include <gtest/gtest.h>

#include <cmath>

#include "core/splitmix.hpp"
#include "svoo/cpu.hpp"
#include "svoo/error.hpp"
#include "test_util.hpp"

namespace svoo {
namespace {

using test::random_tensor;

std::vector<double> rows_of(const TensorView& t, std::int64_t h) {
  std::vector<double> r(static_cast<std::size_t>(t.shape[1] * t.shape[2]));
  for (std::int64_t n = 0; n < t.shape[1]; ++n)
    for (std::int64_t d = 0; d < t.shape[2]; ++d) r[n * t.shape[2] + d] = test::at(t, h, n, d);
  return r;
}

// Literal co-clustering assignment scores in double: for row x, score_j = <f/|f|, G[j]> with
// f = x C_other^T and G = rownorm(C_own C_other^T).
std::vector<double> cocluster_scores(const double* x, const std::vector<double>& own, int n_own,
                                     const std::vector<double>& other, int n_other, std::int64_t D) {
  std::vector<double> f(n_other), g(static_cast<std::size_t>(n_own) * n_other), out(n_own);
  double fn = 1e-8;
  for (int i = 0; i < n_other; ++i) {
    f[i] = 0;
    for (std::int64_t d = 0; d < D; ++d) f[i] += x[d] * other[i * D + d];
    fn += f[i] * f[i];
  }
  fn = std::sqrt(fn);
  for (int j = 0; j < n_own; ++j) {
    double gn = 0;
    for (int i = 0; i < n_other; ++i) {
      double dot = 0;
      for (std::int64_t d = 0; d < D; ++d) dot += own[j * D + d] * other[i * D + d];
      g[j * n_other + i] = dot;
      gn += dot * dot;
    }
    gn = std::sqrt(gn);
    double s = 0;
    for (int i = 0; i < n_other; ++i) s += f[i] / fn * g[j * n_other + i] / gn;
    out[j] = s;
  }
  return out;
}

std::vector<double> kmeans_scores(const double* x, const std::vector<double>& own, int n_own, std::int64_t D) {
  std::vector<double> out(n_own);
  for (int j = 0; j < n_own; ++j) {
    double dist = 0;
    for (std::int64_t d = 0; d < D; ++d) dist += (x[d] - own[j * D + d]) * (x[d] - own[j * D + d]);
    out[j] = -dist;
  }
  return out;
}

// The chosen label must be the argmax up to rounding: its score within `tol` of the best. Counts
// labels that are not the exact argmax (near-ties decided by rounding).
int check_near_argmax(const std::vector<double>& scores, int chosen, double tol) {
  const double best = *std::max_element(scores.begin(), scores.end());
  EXPECT_GE(scores[chosen], best - tol) << "label " << chosen << " is not a near-argmax";
  return scores[chosen] < best ? 1 : 0;
}

// Centroids are the means of their members; an empty cluster keeps `previous`.
void check_means(const std::vector<double>& x, std::int64_t N, std::int64_t D, const std::int32_t* labels,
                 const float* centroids, const std::int32_t* sizes, int clusters, const std::vector<double>& previous) {
  std::vector<double> sum(static_cast<std::size_t>(clusters) * D, 0.0);
  std::vector<int> count(clusters, 0);
  for (std::int64_t n = 0; n < N; ++n) {
    ++count[labels[n]];
    for (std::int64_t d = 0; d < D; ++d) sum[labels[n] * D + d] += x[n * D + d];
  }
  for (int c = 0; c < clusters; ++c) {
    ASSERT_EQ(count[c], sizes[c]);
    for (std::int64_t d = 0; d < D; ++d) {
      const double expect = count[c] ? sum[c * D + d] / count[c] : previous[c * D + d];
      ASSERT_NEAR(centroids[c * D + d], expect, 1e-5 * (1 + std::fabs(expect))) << "cluster " << c;
    }
  }
}

std::vector<double> to_double(const float* p, std::size_t n) { return std::vector<double>(p, p + n); }

struct Case {
  ClusterMethod method;
  std::int64_t heads, nq, nk, dim;
  int kq, kk;
};

class ClusterVsLiteral : public ::testing::TestWithParam<Case> {};

// T = 1 from known anchors, then T = 2 continuing from the T = 1 state: every label is a
// near-argmax of the literal formula and every centroid the mean of its members.
TEST_P(ClusterVsLiteral, EveryStepMatchesTheSpec) {
  const Case cs = GetParam();
  auto q = random_tensor(DType::bf16, {cs.heads, cs.nq, cs.dim}, 100, 1.5f);
  auto k = random_tensor(DType::bf16, {cs.heads, cs.nk, cs.dim}, 200, 1.5f);
  ClusterConfig cfg;
  cfg.kq = cs.kq;
  cfg.kk = cs.kk;
  cfg.method = cs.method;
  cfg.seed = 5;
  const Anchors anchors = draw_anchors(cs.heads, cs.nq, cs.nk, cs.kq, cs.kk, cfg.seed);
  cfg.iterations = 1;
  const Clustering c1 = cpu::cluster(q.view(), k.view(), cfg, &anchors);
  cfg.iterations = 2;
  const Clustering c2 = cpu::cluster(q.view(), k.view(), cfg, &anchors);
  const std::int64_t D = cs.dim;
  int not_exact = 0;
  for (std::int64_t h = 0; h < cs.heads; ++h) {
    const auto qd = rows_of(q.view(), h), kd = rows_of(k.view(), h);
    std::vector<double> cq0(cs.kq * D), ck0(cs.kk * D);
    for (int i = 0; i < cs.kq; ++i)
      for (std::int64_t d = 0; d < D; ++d) cq0[i * D + d] = qd[anchors.q[h * cs.kq + i] * D + d];
    for (int j = 0; j < cs.kk; ++j)
      for (std::int64_t d = 0; d < D; ++d) ck0[j * D + d] = kd[anchors.k[h * cs.kk + j] * D + d];
    // Iteration 1 from the anchors (c1), iteration 2 from c1's centroids (c2).
    struct Step {
      const Clustering* c;
      std::vector<double> cq_before, ck_before;
    };
    std::vector<Step> steps;
    steps.push_back({&c1, cq0, ck0});
    steps.push_back({&c2, to_double(c1.q_centroids.data() + h * cs.kq * D, cs.kq * D),
                     to_double(c1.k_centroids.data() + h * cs.kk * D, cs.kk * D)});
    for (const Step& st : steps) {
      const Clustering& c = *st.c;
      const std::int32_t* lk = c.k_labels.data() + h * cs.nk;
      const std::int32_t* lq = c.q_labels.data() + h * cs.nq;
      const float* ck = c.k_centroids.data() + h * cs.kk * D;
      const float* cq = c.q_centroids.data() + h * cs.kq * D;
      // A: keys, against the query centroids before this iteration.
      for (std::int64_t n = 0; n < cs.nk; ++n) {
        auto s = cs.method == ClusterMethod::coclustering
                     ? cocluster_scores(&kd[n * D], st.ck_before, cs.kk, st.cq_before, cs.kq, D)
                     : kmeans_scores(&kd[n * D], st.ck_before, cs.kk, D);
        not_exact += check_near_argmax(s, lk[n], 1e-4 * (1 + std::fabs(s[lk[n]])));
      }
      check_means(kd, cs.nk, D, lk, ck, c.k_sizes.data() + h * cs.kk, cs.kk, st.ck_before);
      // B: queries, against the NEW key centroids.
      const auto ck_new = to_double(ck, cs.kk * D);
      for (std::int64_t n = 0; n < cs.nq; ++n) {
        auto s = cs.method == ClusterMethod::coclustering
                     ? cocluster_scores(&qd[n * D], st.cq_before, cs.kq, ck_new, cs.kk, D)
                     : kmeans_scores(&qd[n * D], st.cq_before, cs.kq, D);
        not_exact += check_near_argmax(s, lq[n], 1e-4 * (1 + std::fabs(s[lq[n]])));
      }
      check_means(qd, cs.nq, D, lq, cq, c.q_sizes.data() + h * cs.kq, cs.kq, st.cq_before);
    }
  }
  // Rounding may decide near-ties, but rarely.
  EXPECT_LE(not_exact, (cs.nq + cs.nk) * cs.heads / 50);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ClusterVsLiteral,
    ::testing::Values(Case{ClusterMethod::coclustering, 2, 200, 300, 16, 6, 12},
                      Case{ClusterMethod::coclustering, 1, 1500, 1300, 64, 16, 64},
                      Case{ClusterMethod::coclustering, 1, 50, 50, 8, 50, 50},  // as many clusters as rows
                      Case{ClusterMethod::kmeans, 2, 200, 300, 16, 6, 12},
                      Case{ClusterMethod::kmeans, 1, 1500, 1300, 64, 16, 64}));

TEST(Cluster, SameSeedSameResultOtherSeedOtherResult) {
  auto q = random_tensor(DType::f16, {2, 400, 32}, 1), k = random_tensor(DType::f16, {2, 400, 32}, 2);
  ClusterConfig cfg;
  cfg.kq = 8;
  cfg.kk = 20;
  cfg.seed = 11;
  const Clustering a = cpu::cluster(q.view(), k.view(), cfg), b = cpu::cluster(q.view(), k.view(), cfg);
  EXPECT_EQ(a.q_labels, b.q_labels);
  EXPECT_EQ(a.k_labels, b.k_labels);
  EXPECT_EQ(a.q_centroids, b.q_centroids);
  cfg.seed = 12;
  const Clustering c = cpu::cluster(q.view(), k.view(), cfg);
  EXPECT_NE(a.k_labels, c.k_labels);
  // Explicit anchors equal to the seed's draw give the same result.
  const Anchors an = draw_anchors(2, 400, 400, 8, 20, 11);
  cfg.seed = 999;
  const Clustering d = cpu::cluster(q.view(), k.view(), cfg, &an);
  EXPECT_EQ(a.k_labels, d.k_labels);
  EXPECT_EQ(a.q_labels, d.q_labels);
}

TEST(Cluster, AnchorsAreDeterministicInRangeAndDifferPerHead) {
  const Anchors a = draw_anchors(3, 100, 70, 10, 20, 42), b = draw_anchors(3, 100, 70, 10, 20, 42);
  EXPECT_EQ(a.q, b.q);
  EXPECT_EQ(a.k, b.k);
  for (auto x : a.q) EXPECT_TRUE(x >= 0 && x < 100);
  for (auto x : a.k) EXPECT_TRUE(x >= 0 && x < 70);
  EXPECT_NE(std::vector<std::int32_t>(a.q.begin(), a.q.begin() + 10), std::vector<std::int32_t>(a.q.begin() + 10, a.q.begin() + 20));
}

// The GPU draws anchors in parallel: draw i is output i of the generator (output_at) unless an
// earlier output was rejected, which it detects and then redraws sequentially.
TEST(Cluster, GeneratorOutputsCanBeTakenOutOfOrder) {
  for (std::uint64_t seed : {0ull, 42ull, ~0ull}) {
    detail::SplitMix64 g(seed);
    for (std::uint64_t i = 0; i < 2000; ++i) ASSERT_EQ(g.next(), detail::SplitMix64::output_at(seed, i)) << i;
  }
  const Anchors a = draw_anchors(2, 75600, 75600, 256, 1024, 3);
  for (std::int64_t h = 0; h < 2; ++h) {
    const std::uint64_t s = detail::mix_seed(3, static_cast<std::uint64_t>(h));
    EXPECT_EQ(a.q[h * 256 + 5], static_cast<std::int32_t>(detail::SplitMix64::output_at(s, 5) % 75600));
    EXPECT_EQ(a.k[h * 1024 + 7], static_cast<std::int32_t>(detail::SplitMix64::output_at(s, 256 + 7) % 75600));
  }
}

TEST(Cluster, DuplicateAnchorsTieToTheLowestClusterAndLeaveEmptyClusters) {
  // Every anchor is row 0, so all centroids are equal: every row ties and takes cluster 0; the
  // other clusters stay empty and keep their (anchor) centroids.
  auto q = random_tensor(DType::f32, {1, 30, 8}, 1), k = random_tensor(DType::f32, {1, 40, 8}, 2);
  ClusterConfig cfg;
  cfg.kq = 3;
  cfg.kk = 4;
  cfg.iterations = 1;
  for (ClusterMethod m : {ClusterMethod::coclustering, ClusterMethod::kmeans}) {
    cfg.method = m;
    Anchors an;
    an.heads = 1, an.kq = 3, an.kk = 4;
    an.q.assign(3, 0);
    an.k.assign(4, 0);
    const Clustering c = cpu::cluster(q.view(), k.view(), cfg, &an);
    for (auto l : c.k_labels) EXPECT_EQ(l, 0);
    for (auto l : c.q_labels) EXPECT_EQ(l, 0);
    EXPECT_EQ(c.k_sizes, (std::vector<std::int32_t>{40, 0, 0, 0}));
    EXPECT_EQ(c.q_sizes, (std::vector<std::int32_t>{30, 0, 0}));
    for (int d = 0; d < 8; ++d) EXPECT_EQ(c.k_centroids[3 * 8 + d], k.get(d));  // empty keeps its anchor
  }
}

TEST(Cluster, RejectsBadConfigurationsAndAnchors) {
  auto q = random_tensor(DType::f32, {2, 30, 8}, 1), k = random_tensor(DType::f32, {2, 40, 8}, 2);
  ClusterConfig cfg;
  cfg.kq = 0;
  EXPECT_THROW(cpu::cluster(q.view(), k.view(), cfg), Error);
  cfg.kq = 4;
  cfg.kk = 4;
  cfg.iterations = 0;
  EXPECT_THROW(cpu::cluster(q.view(), k.view(), cfg), Error);
  cfg.iterations = 2;
  Anchors an = draw_anchors(2, 30, 40, 4, 4, 0);
  an.k[5] = 40;  // out of range
  try {
    cpu::cluster(q.view(), k.view(), cfg, &an);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("key anchor 40 (head 1)"), std::string::npos) << e.what();
  }
  Anchors wrong = draw_anchors(1, 30, 40, 4, 4, 0);
  EXPECT_THROW(cpu::cluster(q.view(), k.view(), cfg, &wrong), Error);
}

TEST(Cluster, CheckClusteringCatchesInconsistentSizes) {
  auto q = random_tensor(DType::f32, {1, 30, 8}, 1), k = random_tensor(DType::f32, {1, 40, 8}, 2);
  ClusterConfig cfg;
  cfg.kq = 3;
  cfg.kk = 5;
  Clustering c = cpu::cluster(q.view(), k.view(), cfg);
  EXPECT_NO_THROW(check_clustering(c));
  Clustering bad = c;
  bad.k_sizes[0] += 1;
  EXPECT_THROW(check_clustering(bad), Error);
  bad = c;
  bad.q_labels[3] = 7;
  EXPECT_THROW(check_clustering(bad), Error);
  bad = c;
  bad.k_centroids.pop_back();
  EXPECT_THROW(check_clustering(bad), Error);
}

}  // namespace
}  // namespace svoo
