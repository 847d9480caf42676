// The synthetic workload: determinism, shapes, calibration to the target density, and each head
// kind attending the way its name says.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "svoo/error.hpp"
#include "svoo/synthetic.hpp"

namespace svoo {
namespace {

SyntheticConfig small_config() {
  SyntheticConfig c;
  c.frames = 4;
  c.height = 12;
  c.width = 16;
  c.heads = 4;
  return c;
}

bool same_bytes(const HostTensor& a, const HostTensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.bytes(), b.bytes(), a.nbytes()) == 0;
}

TEST(Synthetic, DeterministicForASeedAndDifferentForAnother) {
  const SyntheticConfig c = small_config();
  const SyntheticLayer a = make_synthetic_layer(c);
  const SyntheticLayer b = make_synthetic_layer(c);
  EXPECT_TRUE(same_bytes(a.q, b.q));
  EXPECT_TRUE(same_bytes(a.k, b.k));
  EXPECT_TRUE(same_bytes(a.v, b.v));
  EXPECT_EQ(a.temperature, b.temperature);
  EXPECT_EQ(a.achieved_density, b.achieved_density);
  SyntheticConfig c2 = c;
  c2.seed = 1;
  const SyntheticLayer d = make_synthetic_layer(c2);
  EXPECT_FALSE(same_bytes(a.q, d.q));
  EXPECT_FALSE(same_bytes(a.k, d.k));
  EXPECT_FALSE(same_bytes(a.v, d.v));
}

TEST(Synthetic, ShapesDtypesAndDefaults) {
  for (DType dt : {DType::bf16, DType::f16, DType::f32}) {
    SyntheticConfig c = small_config();
    c.dtype = dt;
    c.dim = 64;
    const SyntheticLayer l = make_synthetic_layer(c);
    const std::vector<std::int64_t> shape = {4, 4 * 12 * 16, 64};
    for (const HostTensor* t : {&l.q, &l.k, &l.v}) {
      EXPECT_EQ(t->shape(), shape);
      EXPECT_EQ(t->dtype(), dt);
      for (std::int64_t i = 0; i < t->numel(); i += 97) ASSERT_TRUE(std::isfinite(t->get(i)));
    }
    EXPECT_EQ(l.tokens(), 768);
    EXPECT_EQ(l.kinds, (std::vector<HeadKind>{HeadKind::spatial_local, HeadKind::temporal_local, HeadKind::semantic,
                                              HeadKind::near_global}));
    EXPECT_EQ(l.target_density, (std::vector<double>{0.03, 0.05, 0.12, 0.40}));
    EXPECT_EQ(l.achieved_density.size(), 4u);
    EXPECT_EQ(l.temperature.size(), 4u);
  }
}

TEST(Synthetic, DefaultTargetsForTwelveHeadsSpreadLikeTheProfiles) {
  SyntheticConfig c;
  c.frames = 2;
  c.height = 6;
  c.width = 8;
  c.calibration_rows = 16;
  const SyntheticLayer l = make_synthetic_layer(c);
  std::vector<double> t = l.target_density;
  std::sort(t.begin(), t.end());
  EXPECT_EQ(t, (std::vector<double>{0.03, 0.05, 0.08, 0.10, 0.12, 0.15, 0.18, 0.22, 0.30, 0.40, 0.60, 0.85}));
  for (int h = 0; h < 12; ++h)
    if (l.kinds[h] == HeadKind::near_global) EXPECT_GE(l.target_density[h], 0.4);  // dense values go to near-global
}

// Tolerance documented in synthetic.cpp: calibration stops at 0.5% on fp32 logits; after rounding
// to the stored dtype the density stays within 2% of the target.
void expect_calibrated(const SyntheticLayer& l) {
  for (std::size_t h = 0; h < l.target_density.size(); ++h)
    EXPECT_NEAR(l.achieved_density[h], l.target_density[h], 0.02 * l.target_density[h])
        << "head " << h << " (" << head_kind_name(l.kinds[h]) << ")";
}

TEST(Synthetic, AchievedDensityMatchesTargetForEveryHead) {
  for (DType dt : {DType::bf16, DType::f32}) {
    SyntheticConfig c = small_config();
    c.dtype = dt;
    expect_calibrated(make_synthetic_layer(c));
    c.target_density = {0.5, 0.2, 0.04, 0.7};  // sparse near-global, dense local heads
    expect_calibrated(make_synthetic_layer(c));
    c.heads = 3;
    c.kinds = {HeadKind::semantic, HeadKind::semantic, HeadKind::temporal_local};
    c.target_density = {0.02, 0.3, 0.6};
    expect_calibrated(make_synthetic_layer(c));
  }
}

TEST(Synthetic, UnreachableTargetEndsAtTheUniformLimit) {
  SyntheticConfig c = small_config();
  c.heads = 1;
  c.target_density = {1.0};  // a uniform row needs only ceil(0.95 N) keys
  const SyntheticLayer l = make_synthetic_layer(c);
  EXPECT_GT(l.achieved_density[0], 0.9);
  EXPECT_LE(l.achieved_density[0], 0.951);
}

// Top-attended keys of sampled queries, by exact logits of the stored tensors.
struct Grid {
  int frames, height, width;
  int t(std::int64_t n) const { return static_cast<int>(n / (height * width)); }
  int y(std::int64_t n) const { return static_cast<int>(n % (height * width) / width); }
  int x(std::int64_t n) const { return static_cast<int>(n % width); }
};

std::vector<std::int64_t> top_keys(const SyntheticLayer& l, int head, std::int64_t query, int count) {
  const std::int64_t N = l.tokens(), D = l.q.shape()[2];
  std::vector<double> s(N);
  for (std::int64_t j = 0; j < N; ++j) {
    double d = 0;
    for (std::int64_t e = 0; e < D; ++e) d += double(l.q.get((head * N + query) * D + e)) * l.k.get((head * N + j) * D + e);
    s[j] = d;
  }
  std::vector<std::int64_t> idx(N);
  std::iota(idx.begin(), idx.end(), std::int64_t{0});
  std::partial_sort(idx.begin(), idx.begin() + count, idx.end(), [&](auto a, auto b) { return s[a] > s[b]; });
  idx.resize(count);
  return idx;
}

double v_cosine(const SyntheticLayer& l, int head, std::int64_t a, std::int64_t b) {
  const std::int64_t N = l.tokens(), D = l.v.shape()[2];
  double ab = 0, aa = 0, bb = 0;
  for (std::int64_t e = 0; e < D; ++e) {
    const double x = l.v.get((head * N + a) * D + e), y = l.v.get((head * N + b) * D + e);
    ab += x * y, aa += x * x, bb += y * y;
  }
  return ab / std::sqrt(aa * bb);
}

struct KindStats {
  double near_hw = 0;        // top-8 keys within (h, w) Chebyshev radius 2, any frame
  double same_hw_near_t = 0; // top-4 keys at the same (h, w), at most 3 frames away
  double other_hw = 0;       // top-8 keys at another (h, w)
  double same_object = 0;    // top-8 keys of the query's object (same V content)
  double same_object_far = 0;// ... that are in another frame or more than 2 away in (h, w)
};

KindStats stats(const SyntheticLayer& l, const Grid& g, int head) {
  KindStats st;
  const int queries = 48;
  for (int qi = 0; qi < queries; ++qi) {
    const std::int64_t i = (qi * 7919LL) % l.tokens();
    const auto top = top_keys(l, head, i, 8);
    for (int r = 0; r < 8; ++r) {
      const std::int64_t j = top[r];
      const int dh = std::max(std::abs(g.y(i) - g.y(j)), std::abs(g.x(i) - g.x(j)));
      st.near_hw += dh <= 2;
      st.other_hw += dh != 0;
      if (r < 4) st.same_hw_near_t += dh == 0 && std::abs(g.t(i) - g.t(j)) <= 3;
      // Tokens of one object share a V embedding (cosine ~0.8); others are near-orthogonal.
      const bool same = v_cosine(l, head, i, j) > 0.5;
      st.same_object += same;
      st.same_object_far += same && (dh > 2 || g.t(i) != g.t(j));
    }
  }
  st.near_hw /= queries * 8, st.other_hw /= queries * 8, st.same_hw_near_t /= queries * 4;
  st.same_object /= queries * 8, st.same_object_far /= queries * 8;
  return st;
}

TEST(Synthetic, EachHeadKindBehavesAsNamed) {
  SyntheticConfig c;
  c.frames = 6;
  c.height = 16;
  c.width = 20;
  c.heads = 4;
  c.target_density = {0.08, 0.08, 0.08, 0.08};  // same density: only the kind differs
  const SyntheticLayer l = make_synthetic_layer(c);
  const Grid g{c.frames, c.height, c.width};
  const KindStats spatial = stats(l, g, 0), temporal = stats(l, g, 1), semantic = stats(l, g, 2),
                  global = stats(l, g, 3);
  // spatial_local: the strongest keys are close in (h, w), not only the query's own position.
  EXPECT_GE(spatial.near_hw, 0.9);
  EXPECT_GE(spatial.other_hw, 0.25);
  // temporal_local: same (h, w) in nearby frames first; with 6 frames only 6 of the top 8 can share
  // the query's (h, w), so 0.25 is the floor of other_hw (measured: 0.25 for seeds 0-3).
  EXPECT_GE(temporal.same_hw_near_t, 0.85);
  EXPECT_LE(temporal.other_hw, 0.3);
  // semantic: the query's object, wherever it is.
  EXPECT_GE(semantic.same_object, 0.95);
  EXPECT_GE(semantic.same_object_far, 0.5);
  EXPECT_LE(semantic.near_hw, 0.6);
  // near_global: no positional preference.
  EXPECT_LE(global.near_hw, 0.4);
  EXPECT_LT(global.same_object, semantic.same_object);
  // Values carry the object: a same-object pair's V are strongly aligned (checked above through
  // the semantic head); outputs are therefore not pure noise.
}

TEST(Synthetic, KindsAreHonouredWhenGiven) {
  SyntheticConfig c = small_config();
  c.heads = 2;
  c.kinds = {HeadKind::near_global, HeadKind::near_global};
  const SyntheticLayer l = make_synthetic_layer(c);
  EXPECT_EQ(l.kinds, c.kinds);
  EXPECT_EQ(l.target_density, (std::vector<double>{0.40, 0.60}));
  EXPECT_STREQ(head_kind_name(HeadKind::spatial_local), "spatial_local");
  EXPECT_STREQ(head_kind_name(HeadKind::temporal_local), "temporal_local");
  EXPECT_STREQ(head_kind_name(HeadKind::semantic), "semantic");
  EXPECT_STREQ(head_kind_name(HeadKind::near_global), "near_global");
}

void expect_config_error(void (*edit)(SyntheticConfig&), const std::string& field) {
  SyntheticConfig c = small_config();
  edit(c);
  try {
    make_synthetic_layer(c);
    ADD_FAILURE() << field << ": accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument) << field;
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
}

TEST(Synthetic, RejectsBadConfigsNamingTheField) {
  expect_config_error([](SyntheticConfig& c) { c.frames = 0; }, "frames");
  expect_config_error([](SyntheticConfig& c) { c.height = -1; }, "height");
  expect_config_error([](SyntheticConfig& c) { c.width = 0; }, "width");
  expect_config_error([](SyntheticConfig& c) { c.heads = 0; }, "heads");
  expect_config_error([](SyntheticConfig& c) { c.dim = 63; }, "dim");
  expect_config_error([](SyntheticConfig& c) { c.dim = 6; }, "dim");
  expect_config_error([](SyntheticConfig& c) { c.target_density = {0.1, 0.2}; }, "target_density");
  expect_config_error([](SyntheticConfig& c) { c.target_density = {0.1, 0.2, 0.0, 0.3}; }, "target_density[2]");
  expect_config_error([](SyntheticConfig& c) { c.target_density = {0.1, 1.2, 0.1, 0.3}; }, "target_density[1]");
  expect_config_error([](SyntheticConfig& c) { c.kinds = {HeadKind::semantic}; }, "kinds");
  expect_config_error([](SyntheticConfig& c) { c.calibration_rows = 0; }, "calibration_rows");
  expect_config_error([](SyntheticConfig& c) { c.tau = 0.0; }, "tau");
  expect_config_error([](SyntheticConfig& c) { c.tau = 1.5; }, "tau");
  expect_config_error([](SyntheticConfig& c) { c.objects = -1; }, "objects");
  expect_config_error([](SyntheticConfig& c) { c.dtype = DType::i32; }, "dtype");
}

TEST(Synthetic, SmallestDimAndNoObjectsWork) {
  SyntheticConfig c = small_config();
  c.dim = 8;
  c.objects = 0;
  c.heads = 2;
  const SyntheticLayer l = make_synthetic_layer(c);
  expect_calibrated(l);
}

}  // namespace
}  // namespace svoo
