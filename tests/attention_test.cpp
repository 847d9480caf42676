// Dense and sparse attention on the CPU against literal double-precision attention.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "svoo/cpu.hpp"
#include "svoo/error.hpp"
#include "svoo/selection.hpp"
#include "test_util.hpp"

namespace svoo {
namespace {

using test::masked_attention;
using test::random_tensor;
using test::rel_max_error;

struct Shape {
  std::int64_t h, nq, nk, d;
  DType dtype;
};

class DenseAttention : public ::testing::TestWithParam<Shape> {};

TEST_P(DenseAttention, MatchesLiteralAttentionAndLse) {
  const Shape s = GetParam();
  auto q = random_tensor(s.dtype, {s.h, s.nq, s.d}, 1, 2.0f);
  auto k = random_tensor(s.dtype, {s.h, s.nk, s.d}, 2, 2.0f);
  auto v = random_tensor(s.dtype, {s.h, s.nk, s.d}, 3);
  HostTensor out(DType::f32, {s.h, s.nq, s.d});
  for (std::int64_t i = 0; i < out.numel(); ++i) out.set(i, NAN);  // poison: every element must be written
  std::vector<float> lse(static_cast<std::size_t>(s.h * s.nq), NAN);
  cpu::dense_attention(q.view(), k.view(), v.view(), out.view(), lse.data());
  std::vector<double> ref_lse;
  auto ref = masked_attention(q.view(), k.view(), v.view(), [](auto, auto, auto) { return true; }, &ref_lse);
  EXPECT_LT(rel_max_error(out, ref), 2e-5);
  for (std::size_t i = 0; i < lse.size(); ++i) EXPECT_NEAR(lse[i], ref_lse[i], 1e-4 * (1 + std::fabs(ref_lse[i])));
}

INSTANTIATE_TEST_SUITE_P(Shapes, DenseAttention,
                         ::testing::Values(Shape{1, 1, 1, 8, DType::f32}, Shape{2, 37, 53, 16, DType::f32},
                                           Shape{3, 130, 70, 64, DType::bf16}, Shape{1, 65, 200, 128, DType::f16},
                                           Shape{2, 129, 129, 128, DType::bf16}));

TEST(DenseAttention, ReadsAndWritesStridedViews) {
  // [tokens, heads, dim] storage viewed as [heads, tokens, dim], as a diffusers tensor would be.
  const std::int64_t H = 3, N = 40, D = 16;
  auto qs = random_tensor(DType::bf16, {N, H, D}, 4), ks = random_tensor(DType::bf16, {N, H, D}, 5),
       vs = random_tensor(DType::bf16, {N, H, D}, 6);
  HostTensor os(DType::bf16, {N, H, D});
  auto transpose = [&](HostTensor& t) {
    TensorView v = t.view();
    v.shape = {H, N, D, 0};
    v.strides = {D, H * D, 1, 0};
    return v;
  };
  cpu::dense_attention(transpose(qs), transpose(ks), transpose(vs), transpose(os));
  auto ref = masked_attention(transpose(qs), transpose(ks), transpose(vs), [](auto, auto, auto) { return true; });
  double err = 0;
  for (std::int64_t h = 0; h < H; ++h)
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t d = 0; d < D; ++d)
        err = std::max(err, std::fabs(os.get((n * H + h) * D + d) - ref[(h * N + n) * D + d]));
  EXPECT_LT(err, 2e-2);  // bf16 output rounding
}

Clustering random_clustering(std::int64_t h, std::int64_t nq, std::int64_t nk, std::int64_t d, int kq, int kk,
                             std::uint32_t seed, bool leave_empty) {
  std::mt19937 rng(seed);
  Clustering c;
  c.heads = h, c.q_tokens = nq, c.k_tokens = nk, c.dim = d, c.kq = kq, c.kk = kk;
  // leave_empty: labels avoid the last cluster of each side, so it is empty.
  std::uniform_int_distribution<int> lq(0, leave_empty ? kq - 2 : kq - 1), lk(0, leave_empty ? kk - 2 : kk - 1);
  c.q_labels.resize(h * nq);
  c.k_labels.resize(h * nk);
  c.q_sizes.assign(h * kq, 0);
  c.k_sizes.assign(h * kk, 0);
  for (std::int64_t x = 0; x < h; ++x) {
    for (std::int64_t n = 0; n < nq; ++n) ++c.q_sizes[x * kq + (c.q_labels[x * nq + n] = lq(rng))];
    for (std::int64_t n = 0; n < nk; ++n) ++c.k_sizes[x * kk + (c.k_labels[x * nk + n] = lk(rng))];
  }
  c.q_centroids.assign(h * kq * d, 0.0f);
  c.k_centroids.assign(h * kk * d, 0.0f);
  return c;
}

TEST(SparseAttention, MatchesLiteralMaskedAttentionWithEmptyClustersAndEmptyRows) {
  for (std::uint32_t seed : {1u, 2u, 3u}) {
    const std::int64_t H = 2, Nq = 150, Nk = 170, D = 32;
    const int kq = 7, kk = 9;
    auto q = random_tensor(DType::bf16, {H, Nq, D}, 10 + seed, 2.0f);
    auto k = random_tensor(DType::bf16, {H, Nk, D}, 20 + seed, 2.0f);
    auto v = random_tensor(DType::bf16, {H, Nk, D}, 30 + seed);
    Clustering c = random_clustering(H, Nq, Nk, D, kq, kk, seed, /*leave_empty=*/true);
    Selection sel = keep_all(H, kq, kk);
    std::mt19937 rng(seed);
    for (auto& x : sel.keep) x = rng() % 3 == 0;
    for (int j = 0; j < kk; ++j) sel.keep[(0 * kq + 2) * kk + j] = 0;  // query cluster 2 of head 0 keeps nothing
    BlockLayout L = build_layout(c, sel);
    HostTensor out(DType::f32, {H, Nq, D});
    for (std::int64_t i = 0; i < out.numel(); ++i) out.set(i, NAN);
    std::vector<float> lse(H * Nq, NAN);
    cpu::sparse_attention(q.view(), k.view(), v.view(), L, out.view(), lse.data());
    std::vector<double> ref_lse;
    auto mask = [&](std::int64_t h, std::int64_t n, std::int64_t m) {
      return sel.kept(h, c.q_labels[h * Nq + n], c.k_labels[h * Nk + m]);
    };
    auto ref = masked_attention(q.view(), k.view(), v.view(), mask, &ref_lse);
    EXPECT_LT(rel_max_error(out, ref), 2e-5) << "seed " << seed;
    for (std::size_t i = 0; i < lse.size(); ++i) {
      if (std::isinf(ref_lse[i])) {
        EXPECT_TRUE(std::isinf(lse[i]) && lse[i] < 0) << i;
      } else {
        EXPECT_NEAR(lse[i], ref_lse[i], 1e-4 * (1 + std::fabs(ref_lse[i]))) << i;
      }
    }
  }
}

TEST(SparseAttention, KeepingEveryClusterEqualsDense) {
  const std::int64_t H = 3, N = 300, D = 64;
  auto q = random_tensor(DType::bf16, {H, N, D}, 41, 2.0f);
  auto k = random_tensor(DType::bf16, {H, N, D}, 42, 2.0f);
  auto v = random_tensor(DType::bf16, {H, N, D}, 43);
  ClusterConfig cfg;
  cfg.kq = 8;
  cfg.kk = 16;
  Clustering c = cpu::cluster(q.view(), k.view(), cfg);
  BlockLayout L = build_layout(c, keep_all(H, cfg.kq, cfg.kk));
  EXPECT_EQ(L.kept_pairs(), H * N * N);
  HostTensor sparse(DType::f32, {H, N, D}), dense(DType::f32, {H, N, D});
  cpu::sparse_attention(q.view(), k.view(), v.view(), L, sparse.view());
  cpu::dense_attention(q.view(), k.view(), v.view(), dense.view());
  double err = 0;
  for (std::int64_t i = 0; i < dense.numel(); ++i) err = std::max(err, (double)std::fabs(sparse.get(i) - dense.get(i)));
  EXPECT_LT(err, 1e-5);
}

TEST(AttentionErrors, RejectBadShapesDtypesDevicesStridesAndNaN) {
  auto q = random_tensor(DType::f32, {2, 10, 8}, 1), k = random_tensor(DType::f32, {2, 12, 8}, 2),
       v = random_tensor(DType::f32, {2, 12, 8}, 3);
  HostTensor out(DType::f32, {2, 10, 8});
  auto expect_kind = [](auto&& fn, ErrorKind kind, const char* text) {
    try {
      fn();
      ADD_FAILURE() << "no error; expected " << text;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), kind) << e.what();
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  auto run = [&](TensorView qv, TensorView kv, TensorView vv, TensorView ov) {
    return [=] { cpu::dense_attention(qv, kv, vv, ov); };
  };
  HostTensor bad_rank(DType::f32, {10, 8});
  expect_kind(run(bad_rank.view(), k.view(), v.view(), out.view()), ErrorKind::shape, "q must have shape");
  auto kb = random_tensor(DType::bf16, {2, 12, 8}, 2);
  expect_kind(run(q.view(), kb.view(), v.view(), out.view()), ErrorKind::dtype, "share one dtype");
  HostTensor i32(DType::i32, {2, 10, 8});
  expect_kind(run(i32.view(), k.view(), v.view(), out.view()), ErrorKind::dtype, "f32, f16 or bf16");
  auto k_heads = random_tensor(DType::f32, {3, 12, 8}, 2);
  expect_kind(run(q.view(), k_heads.view(), v.view(), out.view()), ErrorKind::shape, "same number of heads");
  auto v_short = random_tensor(DType::f32, {2, 11, 8}, 2);
  expect_kind(run(q.view(), k.view(), v_short.view(), out.view()), ErrorKind::shape, "v must have the shape of k");
  TensorView cuda = q.view();
  cuda.device = Device::cuda;
  expect_kind(run(cuda, k.view(), v.view(), out.view()), ErrorKind::device, "must be on cpu");
  TensorView strided = q.view();
  strided.strides = {80, 1, 10, 0};
  expect_kind(run(strided, k.view(), v.view(), out.view()), ErrorKind::stride, "last stride 1");
  TensorView overlap = out.view();
  overlap.strides = {8, 4, 1, 0};
  expect_kind(run(q.view(), k.view(), v.view(), overlap), ErrorKind::stride, "overlapping rows");
  HostTensor wrong_out(DType::f32, {2, 12, 8});
  expect_kind(run(q.view(), k.view(), v.view(), wrong_out.view()), ErrorKind::shape, "out must have shape");
  q.set(5 * 8 + 3, NAN);
  expect_kind(run(q.view(), k.view(), v.view(), out.view()), ErrorKind::non_finite, "head 0, token 5");
  auto q2 = random_tensor(DType::f32, {2, 10, 8}, 1);
  k.set((12 + 7) * 8, INFINITY);
  expect_kind(run(q2.view(), k.view(), v.view(), out.view()), ErrorKind::non_finite, "k has a NaN or infinite value at head 1, token 7");
}

TEST(AttentionErrors, RejectALayoutOfOtherShapes) {
  auto q = random_tensor(DType::f32, {1, 20, 8}, 1), k = random_tensor(DType::f32, {1, 20, 8}, 2),
       v = random_tensor(DType::f32, {1, 20, 8}, 3);
  HostTensor out(DType::f32, {1, 20, 8});
  ClusterConfig cfg;
  cfg.kq = 2;
  cfg.kk = 3;
  Clustering c = cpu::cluster(q.view(), k.view(), cfg);
  BlockLayout L = build_layout(c, keep_all(1, 2, 3));
  auto q_long = random_tensor(DType::f32, {1, 21, 8}, 1);
  HostTensor out_long(DType::f32, {1, 21, 8});
  EXPECT_THROW(cpu::sparse_attention(q_long.view(), k.view(), v.view(), L, out_long.view()), Error);
  BlockLayout broken = L;
  broken.range_end[0] = 99;
  EXPECT_THROW(cpu::sparse_attention(q.view(), k.view(), v.view(), broken, out.view()), Error);
  broken = L;
  broken.q_perm[0] = broken.q_perm[1];
  EXPECT_THROW(cpu::sparse_attention(q.view(), k.view(), v.view(), broken, out.view()), Error);
}

}  // namespace
}  // namespace svoo
