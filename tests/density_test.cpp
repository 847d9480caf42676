// tau_count, sample_rows and tau_density (spec 1) against brute-force references.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <set>
#include <vector>

#include "svoo/error.hpp"
#include "svoo/measures.hpp"
#include "svoo/tensor.hpp"

namespace svoo {
namespace {

// The definition, literally: sort descending, cumulative sum (double), first index reaching
// tau * total (total summed in index order, as tau_count does); tau == 1 is all positive entries.
std::int64_t sorted_count(std::vector<float> p, double tau) {
  double total = 0;
  std::int64_t positives = 0;
  for (float x : p) {
    total += x;
    positives += x > 0;
  }
  if (tau == 1.0) return std::max<std::int64_t>(positives, 1);
  std::sort(p.begin(), p.end(), std::greater<float>());
  double c = 0;
  for (std::size_t r = 0; r < p.size(); ++r) {
    c += p[r];
    if (c >= tau * total) return static_cast<std::int64_t>(r) + 1;
  }
  return std::max<std::int64_t>(positives, 1);
}

TEST(TauCount, MatchesSortedCountOnRandomRows) {
  std::mt19937 rng(1);
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 3000);
    std::normal_distribution<float> logit(0.0f, 0.5f + (trial % 7));
    std::vector<float> p(n);
    for (float& x : p) x = std::exp(logit(rng));
    for (double tau : {0.05, 0.5, 0.9, 0.95, 0.99}) {
      EXPECT_EQ(tau_count(p.data(), n, tau), sorted_count(p, tau)) << "n " << n << " tau " << tau;
    }
  }
}

TEST(TauCount, MatchesSortedCountWithTies) {
  std::mt19937 rng(2);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 2000);
    const int distinct = 1 + static_cast<int>(rng() % 6);  // few values, many repeats
    std::vector<float> values(distinct);
    for (float& v : values) v = static_cast<float>(1 + rng() % 9) / 8.0f;
    std::vector<float> p(n);
    for (float& x : p) x = values[rng() % distinct];
    if (trial % 3 == 0)
      for (int i = 0; i < n / 4; ++i) p[rng() % n] = 0.0f;  // zeros among them
    for (double tau : {0.1, 0.5, 0.95, 0.999}) {
      EXPECT_EQ(tau_count(p.data(), n, tau), sorted_count(p, tau)) << "n " << n << " tau " << tau;
    }
  }
}

TEST(TauCount, ValuesDifferingOnlyInTheLowestBits) {
  // All in one top-level and one second-level bucket: the last radix level and the copy counting
  // decide the count.
  std::mt19937 rng(4);
  std::vector<float> p(5000);
  for (float& x : p) x = std::nextafter(1.0f, 2.0f) + static_cast<float>(rng() % 200) * std::ldexp(1.0f, -23);
  for (double tau : {0.01, 0.3, 0.77, 0.95, 0.9999})
    EXPECT_EQ(tau_count(p.data(), 5000, tau), sorted_count(p, tau)) << tau;
}

TEST(TauCount, UniformRowNeedsCeilTauN) {
  std::vector<float> p(1000, 0.25f);
  EXPECT_EQ(tau_count(p.data(), 1000, 0.95), 950);
  EXPECT_EQ(tau_count(p.data(), 1000, 0.9505), 951);
}

TEST(TauCount, TinyTauTakesTheLargestEntry) {
  // Dyadic values: every sum is exact, total == 1.
  std::vector<float> p = {0.125f, 0.375f, 0.0625f, 0.4375f};
  EXPECT_EQ(tau_count(p.data(), 4, 1e-6), 1);
  EXPECT_EQ(tau_count(p.data(), 4, 0.4375), 1);  // reaching the threshold exactly counts
  EXPECT_EQ(tau_count(p.data(), 4, 0.44), 2);
  EXPECT_EQ(tau_count(p.data(), 4, 0.8125), 2);
  EXPECT_EQ(tau_count(p.data(), 4, 0.82), 3);
  EXPECT_EQ(tau_count(p.data(), 4, 0.9375), 3);
  EXPECT_EQ(tau_count(p.data(), 4, 0.94), 4);
}

TEST(TauCount, TauOneCountsEveryPositiveEntry) {
  // Tail values far below the rounding of the total are still mass: tau = 1 needs all of them.
  std::vector<float> p = {1.0f, 1e-30f, 0.0f, 1e-20f, 0.0f, 0.5f};
  EXPECT_EQ(tau_count(p.data(), 6, 1.0), 4);
  std::vector<float> zeros(5, 0.0f);
  EXPECT_EQ(tau_count(zeros.data(), 5, 1.0), 1);  // defined as 1, like the sorted formula
  EXPECT_EQ(tau_count(zeros.data(), 5, 0.5), 1);
  EXPECT_EQ(tau_count(p.data(), 0, 0.5), 0);
}

TEST(TauCount, UnnormalisedRowsGiveTheSameCount) {
  std::mt19937 rng(3);
  std::normal_distribution<float> logit(0.0f, 3.0f);
  std::vector<float> p(777);
  for (float& x : p) x = std::exp(logit(rng));
  for (double tau : {0.3, 0.95}) {
    const auto c = tau_count(p.data(), 777, tau);
    for (float scale : {std::ldexp(1.0f, 40), std::ldexp(1.0f, -90)}) {  // exact scalings
      std::vector<float> s(p);
      for (float& x : s) x *= scale;
      EXPECT_EQ(tau_count(s.data(), 777, tau), c);
    }
    std::vector<float> s(p);
    for (float& x : s) x *= 37.25f;
    EXPECT_EQ(tau_count(s.data(), 777, tau), sorted_count(s, tau));
  }
}

TEST(TauCount, RejectsBadArguments) {
  std::vector<float> p = {0.5f, 0.5f};
  for (double tau : {0.0, -0.1, 1.0000001, 2.0, std::nan("")}) {
    try {
      tau_count(p.data(), 2, tau);
      ADD_FAILURE() << "tau " << tau << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    }
  }
  std::vector<float> bad = {0.5f, NAN};
  EXPECT_THROW(tau_count(bad.data(), 2, 0.5), Error);
  bad[1] = -0.1f;
  EXPECT_THROW(tau_count(bad.data(), 2, 0.5), Error);
  bad[1] = INFINITY;
  EXPECT_THROW(tau_count(bad.data(), 2, 0.5), Error);
}

TEST(SampleRows, AllRowsWhenNotSubsampling) {
  EXPECT_EQ(sample_rows(5, {0, 9}), (std::vector<std::int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(sample_rows(5, {5, 9}), (std::vector<std::int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(sample_rows(5, {50, 9}), (std::vector<std::int64_t>{0, 1, 2, 3, 4}));
  EXPECT_TRUE(sample_rows(0, {3, 9}).empty());
  EXPECT_THROW(sample_rows(-1, {}), Error);
  EXPECT_THROW(sample_rows(10, {-2, 0}), Error);
}

TEST(SampleRows, DistinctSortedInRangeAndDeterministic) {
  for (std::int64_t tokens : {2, 10, 1000, 75600}) {
    for (std::int64_t rows : {1, 7, 256}) {
      if (rows >= tokens) continue;
      const auto a = sample_rows(tokens, {rows, 42});
      ASSERT_EQ(static_cast<std::int64_t>(a.size()), rows);
      EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
      EXPECT_EQ(std::set<std::int64_t>(a.begin(), a.end()).size(), a.size());
      EXPECT_GE(a.front(), 0);
      EXPECT_LT(a.back(), tokens);
      EXPECT_EQ(a, sample_rows(tokens, {rows, 42}));
    }
  }
  EXPECT_NE(sample_rows(1000, {20, 1}), sample_rows(1000, {20, 2}));
  // Pinned values: the generator is ours (SplitMix64), so the draw is the same on every platform.
  EXPECT_EQ(sample_rows(100, {5, 0}), (std::vector<std::int64_t>{5, 6, 13, 29, 67}));
  EXPECT_EQ(sample_rows(75600, {4, 7}), (std::vector<std::int64_t>{11201, 17169, 28988, 36507}));
}

TEST(SampleRows, RoughlyUniform) {
  std::vector<int> hits(20, 0);
  for (std::uint64_t seed = 0; seed < 4000; ++seed)
    for (auto r : sample_rows(20, {5, seed})) ++hits[r];
  for (int h : hits) EXPECT_NEAR(h, 1000, 150);  // 4000 * 5 / 20 each
}

// Reference density in double precision from the stored values.
std::vector<double> brute_density(const HostTensor& q, const HostTensor& k, double tau,
                                  const std::vector<std::int64_t>& rows) {
  const auto H = q.shape()[0], nk = k.shape()[1], D = q.shape()[2], nq = q.shape()[1];
  std::vector<double> out(H);
  for (std::int64_t h = 0; h < H; ++h) {
    double sum = 0;
    for (auto i : rows) {
      std::vector<double> s(nk);
      for (std::int64_t j = 0; j < nk; ++j) {
        double d = 0;
        for (std::int64_t c = 0; c < D; ++c) d += double(q.get((h * nq + i) * D + c)) * k.get((h * nk + j) * D + c);
        s[j] = d / std::sqrt(double(D));
      }
      const double mx = *std::max_element(s.begin(), s.end());
      std::vector<double> p(nk);
      double total = 0;
      for (std::int64_t j = 0; j < nk; ++j) total += p[j] = std::exp(s[j] - mx);
      std::sort(p.begin(), p.end(), std::greater<double>());
      double c = 0;
      std::int64_t r = 0;
      while (r < nk && (c += p[r]) < tau * total) ++r;
      sum += std::min(r + 1, nk);
    }
    out[h] = sum / rows.size() / nk;
  }
  return out;
}

HostTensor random_tensor(DType dt, std::int64_t H, std::int64_t N, std::int64_t D, float sd, std::mt19937& rng) {
  HostTensor t(dt, {H, N, D});
  std::normal_distribution<float> g(0.0f, sd);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, g(rng));
  return t;
}

TEST(TauDensity, MatchesDoublePrecisionReference) {
  std::mt19937 rng(5);
  struct Case {
    std::int64_t H, nq, nk, D;
    DType dt;
    std::int64_t rows;
    float sd;
  };
  for (const Case& c : {Case{1, 40, 40, 8, DType::f32, 0, 1.0f}, Case{3, 100, 70, 16, DType::bf16, 0, 2.0f},
                        Case{2, 300, 257, 64, DType::f32, 50, 1.5f}, Case{5, 129, 500, 32, DType::bf16, 33, 2.5f},
                        Case{1, 64, 64, 128, DType::f16, 0, 0.3f}}) {
    const HostTensor q = random_tensor(c.dt, c.H, c.nq, c.D, c.sd, rng);
    const HostTensor k = random_tensor(c.dt, c.H, c.nk, c.D, c.sd, rng);
    for (double tau : {0.5, 0.95}) {
      const RowSample sample{c.rows, 11};
      const auto got = tau_density(q.view(), k.view(), tau, sample);
      const auto want = brute_density(q, k, tau, sample_rows(c.nq, sample));
      ASSERT_EQ(got.size(), static_cast<std::size_t>(c.H));
      for (std::int64_t h = 0; h < c.H; ++h) {
        // fp32 scores may move a count by one key on a few rows
        EXPECT_NEAR(got[h], want[h], 0.002 + 0.002 * want[h]) << "head " << h << " nk " << c.nk << " tau " << tau;
        EXPECT_GT(got[h], 0.0);
        EXPECT_LE(got[h], 1.0);
      }
    }
  }
}

TEST(TauDensity, SingleHeadUsesRowParallelPathToo) {
  std::mt19937 rng(6);
  const HostTensor q = random_tensor(DType::f32, 1, 200, 16, 2.0f, rng);
  const HostTensor k = random_tensor(DType::f32, 1, 150, 16, 2.0f, rng);
  const auto got = tau_density(q.view(), k.view(), 0.9, {});
  const auto want = brute_density(q, k, 0.9, sample_rows(200, {}));
  EXPECT_NEAR(got[0], want[0], 0.002);
}

TEST(TauDensity, RejectsBadInputs) {
  HostTensor q(DType::f32, {2, 8, 16}), k(DType::f32, {2, 8, 16});
  for (double tau : {0.0, 1.5, -1.0}) {
    try {
      tau_density(q.view(), k.view(), tau, {});
      ADD_FAILURE();
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    }
  }
  q.set(5 * 16 + 3, NAN);
  try {
    tau_density(q.view(), k.view(), 0.95, {});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::non_finite);
  }
  HostTensor k2(DType::f32, {2, 8, 8});
  try {
    tau_density(q.view(), k2.view(), 0.95, {});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::shape);
  }
  HostTensor k3(DType::bf16, {2, 8, 16});
  EXPECT_THROW(tau_density(q.view(), k3.view(), 0.95, {}), Error);
}

}  // namespace
}  // namespace svoo
