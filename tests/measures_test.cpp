// Block density, attention recall and output error against direct computations.
#include <gtest/gtest.h>

#include <cmath>

#include "svoo/cpu.hpp"
#include "svoo/error.hpp"
#include "svoo/measures.hpp"
#include "svoo/selection.hpp"
#include "test_util.hpp"

namespace svoo {
namespace {

struct Fixture {
  HostTensor q, k, v;
  Clustering c;
  Selection s;
};

Fixture make(std::uint32_t seed) {
  Fixture f{test::random_tensor(DType::bf16, {2, 160, 32}, seed, 2.0f),
            test::random_tensor(DType::bf16, {2, 190, 32}, seed + 1, 2.0f),
            test::random_tensor(DType::bf16, {2, 190, 32}, seed + 2), {}, {}};
  ClusterConfig cfg;
  cfg.kq = 6;
  cfg.kk = 12;
  f.c = cpu::cluster(f.q.view(), f.k.view(), cfg);
  SelectionConfig sc;
  sc.top_p = 0.6;
  sc.floor_lo = sc.floor_hi = 0.0;
  const std::vector<double> prof{0.0, 0.0};
  f.s = select_blocks(cpu::block_scores(f.c), 2, 6, 12, sc, prof);
  return f;
}

TEST(BlockDensity, EqualsKeptPairsOfTheLayoutOverNSquared) {
  Fixture f = make(1);
  const auto d = block_density(f.c, f.s);
  const BlockLayout L = build_layout(f.c, f.s);
  EXPECT_NEAR(d[0] + d[1], static_cast<double>(L.kept_pairs()) / (160.0 * 190.0), 1e-12);
  EXPECT_GT(d[0], 0.0);
  EXPECT_LT(d[0], 1.0);
  const auto all = block_density(f.c, keep_all(2, 6, 12));
  EXPECT_DOUBLE_EQ(all[0], 1.0);
  EXPECT_DOUBLE_EQ(all[1], 1.0);
}

TEST(Recall, AgreesWithOneMinusTheDroppedMassComputedFromAttentionWeights) {
  Fixture f = make(2);
  const auto recall = attention_recall(f.q.view(), f.k.view(), f.c, f.s, {});
  // Second way: recall of row n = sum over kept keys of p, with p from literal dense attention
  // whose "values" are the kept indicator (attention of a one-column V of 0/1).
  for (std::int64_t h = 0; h < 2; ++h) {
    double total = 0;
    for (std::int64_t n = 0; n < 160; ++n) {
      double m = -INFINITY;
      std::vector<double> s(190);
      for (std::int64_t j = 0; j < 190; ++j) {
        double dot = 0;
        for (int d = 0; d < 32; ++d) dot += test::at(f.q.view(), h, n, d) * test::at(f.k.view(), h, j, d);
        s[j] = dot / std::sqrt(32.0);
        m = std::max(m, s[j]);
      }
      double all = 0, kept = 0;
      for (std::int64_t j = 0; j < 190; ++j) {
        all += std::exp(s[j] - m);
        if (f.s.kept(h, f.c.q_labels[h * 160 + n], f.c.k_labels[h * 190 + j])) kept += std::exp(s[j] - m);
      }
      total += kept / all;
    }
    EXPECT_NEAR(recall[h], total / 160, 1e-5);
    EXPECT_GT(recall[h], 0.3);
    EXPECT_LT(recall[h], 1.0);
  }
  const auto full = attention_recall(f.q.view(), f.k.view(), f.c, keep_all(2, 6, 12), {});
  EXPECT_NEAR(full[0], 1.0, 1e-9);
  // Sampled rows estimate the same quantity.
  const auto sampled = attention_recall(f.q.view(), f.k.view(), f.c, f.s, {80, 3});
  EXPECT_NEAR(sampled[0], recall[0], 0.1);
}

TEST(Recall, SparseOutputErrorShrinksAsRecallGrows) {
  Fixture f = make(3);
  HostTensor dense(DType::f32, {2, 160, 32}), sparse(DType::f32, {2, 160, 32});
  cpu::dense_attention(f.q.view(), f.k.view(), f.v.view(), dense.view());
  double last_err = INFINITY;
  for (double p : {0.3, 0.7, 0.95}) {
    SelectionConfig sc;
    sc.top_p = p;
    sc.floor_lo = sc.floor_hi = 0.0;
    const std::vector<double> prof{0.0, 0.0};
    Selection s = select_blocks(cpu::block_scores(f.c), 2, 6, 12, sc, prof);
    cpu::sparse_attention(f.q.view(), f.k.view(), f.v.view(), build_layout(f.c, s), sparse.view());
    const OutputError e = output_error_total(sparse.view(), dense.view());
    EXPECT_LT(e.relative_l2, last_err);
    last_err = e.relative_l2;
  }
}

TEST(OutputError, HandComputedValues) {
  HostTensor a(DType::f32, {1, 1, 2}), b(DType::f32, {1, 1, 2});
  a.set(0, 1.0f), a.set(1, 1.0f);
  b.set(0, 1.0f), b.set(1, 0.0f);
  const auto e = output_error(a.view(), b.view());
  EXPECT_DOUBLE_EQ(e[0].relative_l2, 1.0);
  EXPECT_NEAR(e[0].cosine, 1.0 / std::sqrt(2.0), 1e-12);
  HostTensor c(DType::f32, {1, 2, 2});
  EXPECT_THROW(output_error(a.view(), c.view()), Error);
}

}  // namespace
}  // namespace svoo
