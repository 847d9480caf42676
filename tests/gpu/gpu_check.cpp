// GPU check: every CUDA planning kernel against the CPU backend on a grid of shapes. Runs on a
// machine with a CUDA device (exit 77 = skipped elsewhere, so CTest reports it as skipped).
//
// Clustering is checked step by step against the literal spec in double precision, starting from
// the GPU's own previous state: every label must be the argmax up to the rounding bound of the
// bf16/f16 tensor-core product (labels that are not the exact argmax are near-ties: counted and
// reported), every centroid the mean of its members. Selection and layout must equal the CPU's
// exactly given the same inputs; permutations are bit copies; recall agrees to 1e-4.
//
// The planner uses the assignment variant SVOO_ASSIGN_VARIANT selects (by default the pipelined
// wgmma kernel, 4, for co-clustering on Hopper and 0 otherwise; e.g. SVOO_ASSIGN_VARIANT=0
// svoo_gpu_check runs every case with the mma.sync kernel). Before the
// cases, every assignment variant that can run here is checked directly against a double-precision
// argmax on ragged shapes, with bias, strided rows, duplicated centroids (ties to the lower index)
// and more work items than SMs, and compared label for label with variant 0.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../src/cuda/attention_kernel.cuh"
#include "../../src/cuda/cluster_ops.cuh"
#include "../../src/cuda/kernels.cuh"
#include "check_report.hpp"
#include "device_buffer.hpp"
#include "svoo/cpu.hpp"
#include "svoo/cuda.hpp"
#include "svoo/measures.hpp"
#include "svoo/selection.hpp"
#include "svoo/synthetic.hpp"

namespace svoo {
int check_alignment(bool quick);  // align_check.cpp: failures

namespace {

int g_failures = 0;
#define CHECK(cond, ...) SVOO_GPU_CHECK(g_failures, cond, __VA_ARGS__)

struct Case {
  std::string name;
  int heads;
  std::int64_t tokens;
  int kq, kk;
  DType dtype;
  bool synthetic = false;
  ClusterMethod method = ClusterMethod::coclustering;
  bool same_anchors = false;  // every anchor is row 0: all rows tie
  int verify_heads = 1 << 30;
  std::int64_t verify_rows = 1 << 30;
  float q_std = 1.f;  // peaked scores (large q) make row maxima grow from tile to tile
};

std::vector<double> head_rows(const HostTensor& t, std::int64_t h) {
  const std::int64_t N = t.shape()[1], D = t.shape()[2];
  std::vector<double> r(static_cast<std::size_t>(N * D));
  for (std::int64_t i = 0; i < N * D; ++i) r[i] = t.get(h * N * D + i);
  return r;
}

// Projected centroids of the side whose centroids are `own` (n_own x D) through `other`.
std::vector<double> projected(const std::vector<double>& own, int n_own, const std::vector<double>& other, int n_other,
                              int D) {
  std::vector<double> g(static_cast<std::size_t>(n_own) * n_other), m(static_cast<std::size_t>(n_own) * D, 0.0);
#pragma omp parallel for
  for (int i = 0; i < n_own; ++i) {
    double ss = 0;
    for (int j = 0; j < n_other; ++j) {
      double s = 0;
      for (int d = 0; d < D; ++d) s += own[i * D + d] * other[j * D + d];
      g[i * n_other + j] = s;
      ss += s * s;
    }
    const double inv = 1.0 / std::max(std::sqrt(ss), 1e-12);
    for (int j = 0; j < n_other; ++j)
      for (int d = 0; d < D; ++d) m[i * D + d] += g[i * n_other + j] * inv * other[j * D + d];
  }
  return m;
}

struct StepReport {
  std::int64_t checked = 0, not_exact = 0, wrong = 0;
};

// Checks labels (and centroids) of one side after one step. prev: this side's centroids before the
// step; through: the other side's centroids used for the projection (co-clustering only).
void verify_side(const Case& cs, const HostTensor& x, const std::int32_t* labels, const float* centroids_after,
                 const std::int32_t* sizes, const std::vector<double>& prev, const std::vector<double>& through,
                 int own_k, int other_k, std::int64_t h, StepReport& rep) {
  const std::int64_t N = x.shape()[1];
  const int D = static_cast<int>(x.shape()[2]);
  const std::vector<double> xs = head_rows(x, h);
  std::vector<double> m = cs.method == ClusterMethod::coclustering ? projected(prev, own_k, through, other_k, D) : prev;
  std::vector<double> bias(own_k, 0.0);
  if (cs.method == ClusterMethod::kmeans)
    for (int j = 0; j < own_k; ++j) {
      double ss = 0;
      for (int d = 0; d < D; ++d) ss += prev[j * D + d] * prev[j * D + d];
      bias[j] = -0.5 * ss;
    }
  const std::int64_t step = std::max<std::int64_t>(1, N / std::min<std::int64_t>(N, cs.verify_rows));
  std::int64_t checked = 0, not_exact = 0, wrong = 0;
#pragma omp parallel for reduction(+ : checked, not_exact, wrong)
  for (std::int64_t n = 0; n < N; n += step) {
    const double* xr = &xs[n * D];
    double best = -1e300;
    int best_j = 0;
    std::vector<double> s(own_k), tol(own_k);
    for (int j = 0; j < own_k; ++j) {
      double v = 0, a = 0;
      for (int d = 0; d < D; ++d) v += xr[d] * m[j * D + d], a += std::fabs(xr[d] * m[j * D + d]);
      s[j] = v + bias[j];
      tol[j] = a * std::ldexp(1.0, -7) + 1e-6 * (1 + std::fabs(bias[j]));
      if (s[j] > best) best = s[j], best_j = j;
    }
    const int c = labels[n];
    ++checked;
    if (c < 0 || c >= own_k || s[c] < best - tol[c] - tol[best_j]) {
      ++wrong;
    } else if (c != best_j) {
      ++not_exact;
    }
  }
  rep.checked += checked, rep.not_exact += not_exact, rep.wrong += wrong;
  // Centroids: means of members; an empty cluster keeps prev.
  std::vector<double> sum(static_cast<std::size_t>(own_k) * D, 0.0);
  std::vector<int> count(own_k, 0);
  for (std::int64_t n = 0; n < N; ++n) {
    ++count[labels[n]];
    for (int d = 0; d < D; ++d) sum[labels[n] * D + d] += xs[n * D + d];
  }
  int bad = 0;
  for (int j = 0; j < own_k; ++j) {
    if (count[j] != sizes[j]) ++bad;
    for (int d = 0; d < D; ++d) {
      const double want = count[j] ? sum[j * D + d] / count[j] : prev[j * D + d];
      if (std::fabs(centroids_after[j * D + d] - want) > 1e-4 * (1 + std::fabs(want))) ++bad;
    }
  }
  CHECK(bad == 0, "head %lld: %d centroid or size values differ from the means of the GPU's labels", (long long)h, bad);
}

std::vector<double> slice(const std::vector<float>& v, std::int64_t h, std::int64_t per) {
  return std::vector<double>(v.begin() + h * per, v.begin() + (h + 1) * per);
}

// Reference attention of query token t of head h over the keys its cluster keeps (double).
void reference_row(const HostTensor& q, const HostTensor& k, const HostTensor& v, const Clustering& c,
                   const Selection* sel, std::int64_t h, std::int64_t t, std::vector<double>& out, double& lse) {
  const std::int64_t N = k.shape()[1], D = q.shape()[2];
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> s;
  std::vector<std::int64_t> keys;
  for (std::int64_t n = 0; n < N; ++n) {
    if (sel && !sel->kept(h, c.q_labels[h * q.shape()[1] + t], c.k_labels[h * N + n])) continue;
    double dot = 0;
    for (std::int64_t d = 0; d < D; ++d) dot += (double)q.get((h * q.shape()[1] + t) * D + d) * k.get((h * N + n) * D + d);
    s.push_back(dot * scale);
    keys.push_back(n);
  }
  out.assign(D, 0.0);
  if (keys.empty()) {
    lse = -INFINITY;
    return;
  }
  const double m = *std::max_element(s.begin(), s.end());
  double sum = 0;
  for (double x : s) sum += std::exp(x - m);
  for (std::size_t j = 0; j < keys.size(); ++j) {
    const double p = std::exp(s[j] - m) / sum;
    for (std::int64_t d = 0; d < D; ++d) out[d] += p * v.get((h * N + keys[j]) * D + d);
  }
  lse = m + std::log(sum);
}

// Sparse attention (the plan's layout) and dense attention on the GPU against the double
// reference on sampled rows, with the output poisoned first so that every row must be written.
void check_attention(const Case& cs, const HostTensor& q, const HostTensor& k, cuda::Planner& plan,
                     const Clustering& c, const Selection& sel) {
  const int H = cs.heads, D = 128;
  const std::int64_t N = cs.tokens;
  HostTensor v(cs.dtype, {H, N, D});
  std::mt19937 rng(99);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (std::int64_t i = 0; i < v.numel(); ++i) v.set(i, dist(rng));
  test::DeviceTensor dq(q), dk(k), dv(v);
  for (int dense = 0; dense < 2; ++dense) {
    HostTensor poison(cs.dtype, {H, N, D});
    std::memset(poison.bytes(), 0xff, poison.nbytes());  // NaN in bf16 and f16
    test::DeviceTensor dout(poison);
    HostTensor lpo(DType::f32, {H, N});
    for (std::int64_t i = 0; i < lpo.numel(); ++i) lpo.set(i, NAN);
    test::DeviceTensor dlse(lpo);
    if (dense) {
      cuda::dense_attention(dq.view(), dk.view(), dv.view(), dout.view(), static_cast<float*>(dlse.data()));
    } else {
      cuda::sparse_attention(dq.view(), dk.view(), dv.view(), plan, dout.view(), static_cast<float*>(dlse.data()));
    }
    test::cuda_ok(cudaDeviceSynchronize(), "attention");
    const HostTensor out = dout.download(), lse = dlse.download();
    std::int64_t nan_rows = 0;
    for (std::int64_t i = 0; i < out.numel(); i += D) nan_rows += std::isnan(out.get(i));
    CHECK(nan_rows == 0, "%s attention left %lld rows unwritten (NaN)", dense ? "dense" : "sparse", (long long)nan_rows);
    const auto rows = sample_rows(N, {N > 40000 ? 16 : 64, 5});
    const int heads = std::min(H, 3);
    double err = 0, ref = 0, lse_err = 0, round_err = 0;
    std::vector<double> o;
    HostTensor one(cs.dtype, {1});  // rounds a value to the output's element type
    for (int h = 0; h < heads; ++h)
      for (std::int64_t t : rows) {
        double l;
        reference_row(q, k, v, c, dense ? nullptr : &sel, h, t, o, l);
        for (int d = 0; d < D; ++d) {
          const double g = out.get((h * N + t) * D + d);
          err += (g - o[d]) * (g - o[d]);
          ref += o[d] * o[d];
          one.set(0, static_cast<float>(o[d]));
          round_err += (one.get(0) - o[d]) * (one.get(0) - o[d]);
        }
        const double gl = lse.get(h * N + t);
        lse_err = std::max(lse_err, std::isinf(l) ? (std::isinf(gl) ? 0.0 : 1.0) : std::fabs(gl - l) / (1 + std::fabs(l)));
      }
    const double rel = std::sqrt(err / std::max(ref, 1e-30));
    // A bf16/f16 attention kernel rounds P before P V and rounds its output: about twice the error
    // of rounding the exact output alone. The bound is twice that again.
    const double rounding = std::sqrt(round_err / std::max(ref, 1e-30));
    std::printf("  %s attention: rel L2 error %.2e (output rounding alone %.2e) on %zu sampled rows x %d heads, "
                "max lse error %.2e\n",
                dense ? "dense " : "sparse", rel, rounding, rows.size(), heads, lse_err);
    CHECK(rel < 4 * rounding + 1e-5, "%s attention error %.2e exceeds 4x the output rounding %.2e",
          dense ? "dense" : "sparse", rel, rounding);
    CHECK(lse_err < 1e-3, "%s lse error %.2e", dense ? "dense" : "sparse", lse_err);
  }
}

// The attention work list against a host rebuild: every (cluster, row tile) exactly once, in
// (head, cluster) order, sorted stably by (head ascending, cost descending) where the planner
// orders the layer (work_order.cu's cost: key tiles + 3, x 0.65 for items of <= 64 rows).
void check_work_order(const cuda::Planner& plan, const BlockLayout& gl) {
  const cuda::DevicePlan dp = plan.device();
  const int H = static_cast<int>(gl.heads), kq = gl.kq;
  const std::int64_t W = static_cast<std::int64_t>(H) * kq;
  std::vector<std::int64_t> tile_ptr(W + 1);
  test::cuda_ok(cudaMemcpy(tile_ptr.data(), dp.tile_ptr, sizeof(std::int64_t) * (W + 1), cudaMemcpyDeviceToHost), "copy");
  const std::int64_t n = tile_ptr[W];
  std::vector<std::int32_t> got_w(n), got_row(n);
  if (n > 0) {
    test::cuda_ok(cudaMemcpy(got_w.data(), dp.item_w, sizeof(std::int32_t) * n, cudaMemcpyDeviceToHost), "copy");
    test::cuda_ok(cudaMemcpy(got_row.data(), dp.item_row, sizeof(std::int32_t) * n, cudaMemcpyDeviceToHost), "copy");
  }
  const int R = cuda::detail::attention_rows();
  const bool ordered = cuda::detail::order_items_largest_first();
  struct Item {
    std::int32_t w, row;
    std::int64_t key;
  };
  std::vector<Item> want;
  for (std::int64_t w = 0; w < W; ++w) {
    const int h = static_cast<int>(w / kq), i = static_cast<int>(w % kq);
    const int first = gl.q_offsets[h * (kq + 1) + i], size = gl.q_offsets[h * (kq + 1) + i + 1] - first;
    std::int64_t keys = 0;
    for (std::int64_t r = gl.range_ptr[w]; r < gl.range_ptr[w + 1]; ++r) keys += gl.range_end[r] - gl.range_begin[r];
    for (int row = first; row < first + size; row += R) {
      const int left = first + size - row;
      const std::int64_t cost = std::min<std::int64_t>(((keys + 127) / 128 + 3) * (std::min(left, R) > 64 ? 100 : 65) + 1,
                                                       (1 << 24) - 1);
      want.push_back({static_cast<std::int32_t>(w), row, (static_cast<std::int64_t>(H - 1 - h) << 24) | cost});
    }
  }
  if (ordered) std::stable_sort(want.begin(), want.end(), [](const Item& a, const Item& b) { return a.key > b.key; });
  std::int64_t bad = static_cast<std::int64_t>(want.size()) == n ? 0 : 1;
  for (std::int64_t s = 0; s < n && bad == 0; ++s) bad += want[s].w != got_w[s] || want[s].row != got_row[s];
  std::printf("  work list: %lld items, %s order %s\n", (long long)n, ordered ? "largest first within each head" : "(head, cluster)",
              bad ? "DIFFERS from the host's" : "as the host's");
  CHECK(bad == 0, "the attention work list (%lld items, host %zu) differs from its host rebuild", (long long)n, want.size());
}

void run_case(const Case& cs) {
  std::printf("== %s: %d heads x %lld tokens, Kq %d, Kk %d, %s, %s%s\n", cs.name.c_str(), cs.heads,
              (long long)cs.tokens, cs.kq, cs.kk, dtype_name(cs.dtype), cluster_method_name(cs.method),
              cs.synthetic ? ", synthetic workload" : ", random normal");
  const int H = cs.heads, D = 128;
  const std::int64_t N = cs.tokens;
  HostTensor q, k;
  if (cs.synthetic) {
    SyntheticConfig sc;
    sc.heads = H;
    sc.dtype = cs.dtype;
    SyntheticLayer l = make_synthetic_layer(sc);
    q = std::move(l.q), k = std::move(l.k);
  } else {
    q = HostTensor(cs.dtype, {H, N, D}), k = HostTensor(cs.dtype, {H, N, D});
    std::mt19937 rng(static_cast<unsigned>(N * 31 + H));
    std::normal_distribution<float> dist(0.f, 1.f);
    for (std::int64_t i = 0; i < q.numel(); ++i) q.set(i, dist(rng) * cs.q_std), k.set(i, dist(rng) * 1.5f);
  }
  test::DeviceTensor dq(q), dk(k);
  cuda::PlanShape shape{H, N, N, D, cs.kq, cs.kk};
  cuda::Planner plan(shape);
  std::printf("  workspace %.1f MB\n", plan.workspace_bytes() / 1e6);
  ClusterConfig cfg;
  cfg.kq = cs.kq, cfg.kk = cs.kk, cfg.seed = 3, cfg.method = cs.method;
  Anchors an = draw_anchors(H, N, N, cs.kq, cs.kk, cfg.seed);
  if (cs.same_anchors) std::fill(an.q.begin(), an.q.end(), 0), std::fill(an.k.begin(), an.k.end(), 0);
  HostTensor aq(DType::i32, {H, cs.kq}), ak(DType::i32, {H, cs.kk});
  std::memcpy(aq.bytes(), an.q.data(), an.q.size() * 4);
  std::memcpy(ak.bytes(), an.k.data(), an.k.size() * 4);
  test::DeviceTensor daq(aq), dak(ak);
  const auto* paq = static_cast<const std::int32_t*>(daq.data());
  const auto* pak = static_cast<const std::int32_t*>(dak.data());

  // T = 1 and T = 2 from the same anchors; the device's own draw must equal the CPU's.
  cfg.iterations = 1;
  plan.cluster(dq.view(), dk.view(), cfg, nullptr, paq, pak);
  const Clustering c1 = plan.download_clustering();
  if (!cs.same_anchors) {
    plan.cluster(dq.view(), dk.view(), cfg);
    const Clustering c1d = plan.download_clustering();
    CHECK(c1d.k_labels == c1.k_labels && c1d.q_labels == c1.q_labels, "anchors drawn on the device differ from the CPU's");
  }
  cfg.iterations = 2;
  plan.cluster(dq.view(), dk.view(), cfg, nullptr, paq, pak);
  const Clustering c2 = plan.download_clustering();
  plan.cluster(dq.view(), dk.view(), cfg, nullptr, paq, pak);
  const Clustering c2b = plan.download_clustering();
  CHECK(c2b.k_labels == c2.k_labels && c2b.q_labels == c2.q_labels && c2b.q_centroids == c2.q_centroids &&
            c2b.k_centroids == c2.k_centroids,
        "two runs differ: clustering is not deterministic");

  // Step-by-step verification against the literal formulas.
  StepReport rep;
  const int vh = std::min(H, cs.verify_heads);
  for (int h = 0; h < vh; ++h) {
    std::vector<double> cq0(cs.kq * D), ck0(cs.kk * D);
    const auto qs = head_rows(q, h), ks = head_rows(k, h);
    for (int i = 0; i < cs.kq; ++i)
      for (int d = 0; d < D; ++d) cq0[i * D + d] = qs[an.q[h * cs.kq + i] * D + d];
    for (int j = 0; j < cs.kk; ++j)
      for (int d = 0; d < D; ++d) ck0[j * D + d] = ks[an.k[h * cs.kk + j] * D + d];
    struct S {
      const Clustering* c;
      std::vector<double> cq, ck;
    } steps[2] = {{&c1, cq0, ck0},
                  {&c2, slice(c1.q_centroids, h, cs.kq * D), slice(c1.k_centroids, h, cs.kk * D)}};
    for (const S& s : steps) {
      const Clustering& c = *s.c;
      verify_side(cs, k, c.k_labels.data() + h * N, c.k_centroids.data() + h * cs.kk * D, c.k_sizes.data() + h * cs.kk,
                  s.ck, s.cq, cs.kk, cs.kq, h, rep);
      verify_side(cs, q, c.q_labels.data() + h * N, c.q_centroids.data() + h * cs.kq * D, c.q_sizes.data() + h * cs.kq,
                  s.cq, slice(c.k_centroids, h, cs.kk * D), cs.kq, cs.kk, h, rep);
    }
  }
  std::printf("  labels checked %lld: %lld near-ties decided by rounding (%.3f %%), %lld wrong\n",
              (long long)rep.checked, (long long)rep.not_exact, 100.0 * rep.not_exact / std::max<std::int64_t>(1, rep.checked),
              (long long)rep.wrong);
  CHECK(rep.wrong == 0, "%lld labels are not a near-argmax", (long long)rep.wrong);
  if (cs.same_anchors) {
    bool all_zero = std::all_of(c1.k_labels.begin(), c1.k_labels.end(), [](int l) { return l == 0; }) &&
                    std::all_of(c1.q_labels.begin(), c1.q_labels.end(), [](int l) { return l == 0; });
    CHECK(all_zero, "identical centroids must tie to cluster 0");
  }

  // Agreement with the CPU backend from the same anchors (bf16 vs fp32 products: near-ties differ).
  const Clustering cc = cpu::cluster(q.view(), k.view(), cfg, &an);
  std::int64_t same_q = 0, same_k = 0;
  for (std::size_t i = 0; i < cc.q_labels.size(); ++i) same_q += cc.q_labels[i] == c2.q_labels[i];
  for (std::size_t i = 0; i < cc.k_labels.size(); ++i) same_k += cc.k_labels[i] == c2.k_labels[i];
  std::printf("  same labels as the CPU after T=2: queries %.2f %%, keys %.2f %%\n", 100.0 * same_q / cc.q_labels.size(),
              100.0 * same_k / cc.k_labels.size());

  // Scores, selection, layout on the GPU clustering.
  SelectionConfig sel;
  sel.top_p = 0.9, sel.floor_lo = 0.05, sel.floor_hi = 0.2;
  std::vector<double> prof(H);
  for (int h = 0; h < H; ++h) prof[h] = 0.02 + 0.03 * (h % 7);
  plan.select(sel, prof);
  const std::vector<float> gs = plan.download_scores();
  const Selection gk = plan.download_selection();
  const BlockLayout gl = plan.download_layout();
  const std::vector<float> cs_scores = cpu::block_scores(c2);
  double max_diff = 0;
  for (std::size_t i = 0; i < gs.size(); ++i) max_diff = std::max(max_diff, (double)std::fabs(gs[i] - cs_scores[i]));
  std::printf("  block scores: max |GPU - CPU| = %.2e\n", max_diff);
  CHECK(max_diff < 1e-5, "scores differ by %.2e", max_diff);
  const Selection ck = select_blocks(gs, H, cs.kq, cs.kk, sel, prof);
  std::int64_t keep_diff = 0;
  for (std::size_t i = 0; i < ck.keep.size(); ++i) keep_diff += ck.keep[i] != gk.keep[i];
  CHECK(keep_diff == 0, "%lld selection flags differ from the CPU's on the same scores", (long long)keep_diff);
  for (SelectionRule rule : {SelectionRule::paper}) {
    SelectionConfig s2 = sel;
    s2.rule = rule;
    s2.cap = 0.1;
    plan.select(s2, prof);
    const Selection g2 = plan.download_selection();
    const Selection c2s = select_blocks(plan.download_scores(), H, cs.kq, cs.kk, s2, prof);
    CHECK(g2.keep == c2s.keep, "paper-rule selection differs from the CPU's");
  }
  plan.select(sel, prof);
  const BlockLayout cl = build_layout(c2, gk);
  CHECK(cl.q_perm == gl.q_perm && cl.k_perm == gl.k_perm, "permutations differ from the CPU's stable sort");
  CHECK(cl.q_offsets == gl.q_offsets && cl.k_offsets == gl.k_offsets, "cluster offsets differ");
  CHECK(cl.range_ptr == gl.range_ptr && cl.range_begin == gl.range_begin && cl.range_end == gl.range_end,
        "key ranges differ (CPU %zu ranges, GPU %zu)", cl.range_begin.size(), gl.range_begin.size());
  check_work_order(plan, gl);
  const auto dens = block_density(c2, gk);
  double mean_d = 0;
  for (double d : dens) mean_d += d / H;

  // Recall on sampled rows, GPU vs CPU, and CPU clustering's recall at its own density.
  const auto rows = sample_rows(N, {256, 7});
  const auto grec = plan.recall(dq.view(), dk.view(), rows);
  const auto crec = attention_recall(q.view(), k.view(), c2, gk, {256, 7});
  double rec_diff = 0, g_mean = 0;
  for (int h = 0; h < H; ++h) rec_diff = std::max(rec_diff, std::fabs(grec[h] - crec[h])), g_mean += grec[h] / H;
  CHECK(rec_diff < 1e-4, "GPU recall differs from the CPU's by %.2e", rec_diff);
  const Selection cpu_sel = select_blocks(cpu::block_scores(cc), H, cs.kq, cs.kk, sel, prof);
  const auto cpu_dens = block_density(cc, cpu_sel);
  const auto cpu_rec = attention_recall(q.view(), k.view(), cc, cpu_sel, {256, 7});
  double cd = 0, cr = 0;
  for (int h = 0; h < H; ++h) cd += cpu_dens[h] / H, cr += cpu_rec[h] / H;
  std::printf("  GPU plan: density %.4f, recall %.4f | CPU plan: density %.4f, recall %.4f | recall diff %.2f points\n",
              mean_d, g_mean, cd, cr, 100 * (g_mean - cr));

  // Permutation and its inverse: bit copies.
  test::DeviceTensor pq(cs.dtype, {H, N, D}), back(cs.dtype, {H, N, D});
  plan.permute(dq.view(), false, pq.view());
  plan.unpermute(pq.view(), back.view());
  const HostTensor hp = pq.download(), hb = back.download();
  std::int64_t perm_bad = 0;
  for (int h = 0; h < H; ++h)
    for (std::int64_t r = 0; r < N; ++r)
      perm_bad += std::memcmp(hp.bytes() + ((h * N + r) * D) * 2, q.bytes() + ((h * N + gl.q_perm[h * N + r]) * D) * 2,
                              D * 2) != 0;
  CHECK(perm_bad == 0, "%lld permuted rows differ", (long long)perm_bad);
  CHECK(std::memcmp(hb.bytes(), q.bytes(), q.nbytes()) == 0, "unpermute(permute(q)) != q");

  check_attention(cs, q, k, plan, c2, gk);
}


// ---- assignment variants, directly (internal launcher) ----

struct AssignCase {
  const char* name;
  int heads;
  std::int64_t tokens;
  int clusters;
  DType dtype;
  bool bias;
  bool interleaved = false;  // x as [tokens, heads, 128] (row stride heads * 128)
  bool duplicates = false;   // centroid j >= 128 copies centroid j % 97 for every 3rd j
  bool in_tile = false;      // duplicates within a 128-column tile instead: j copies j - 8 where
                             // j % 16 >= 8, j copies j - 1 where j % 16 == 1
  bool negative = false;     // x >= 0 and centroids <= 0: every score is negative
};

// The centroid that j copies (j itself where it is no copy).
int copy_source(const AssignCase& c, int j) {
  if (!c.duplicates) return j;
  if (c.in_tile) return j % 16 >= 8 ? j - 8 : j % 16 == 1 ? j - 1 : j;
  return j >= 128 && j % 3 == 0 ? j % 97 : j;
}

void check_assign_variants() {
  using namespace svoo::cuda::detail;
  const int D = 128;
  const std::vector<AssignCase> cases = {
      {"1 row, 1 cluster", 1, 1, 1, DType::bf16, false},
      {"ragged f16 + bias", 2, 127, 7, DType::f16, true},
      {"one full tile", 3, 1000, 128, DType::bf16, false},
      {"partial 2nd tile, f16 + bias", 2, 4097, 129, DType::f16, true},
      {"2 tiles, 471 items", 3, 20000, 256, DType::bf16, false},
      {"1 tile, 470 items, bias", 2, 30000, 100, DType::bf16, true},
      {"partial last tile, 284 items", 4, 9000, 1000, DType::bf16, false},
      {"interleaved rows", 3, 5000, 384, DType::bf16, false, true},
      {"duplicated centroids + bias", 2, 6000, 1024, DType::bf16, true, false, true},
      {"duplicates within tiles", 2, 6000, 1024, DType::bf16, false, false, true, true},
      {"negative scores, duplicates in tiles", 2, 3000, 300, DType::bf16, false, false, true, true, true},
      {"negative scores + bias, f16", 2, 3000, 1000, DType::f16, true, false, false, false, true},
  };
  std::vector<int> variants;
  for (int v = 0; v <= 4; ++v)
    if (assign_variant_runs(v)) variants.push_back(v);
  std::printf("assignment variants directly (runnable here:");
  for (int v : variants) std::printf(" %d", v);
  std::printf(")\n");
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (const AssignCase& c : cases) {
    const int H = c.heads, K = c.clusters;
    const std::int64_t N = c.tokens;
    HostTensor hx(c.dtype, {H, N, D}), hm(c.dtype, {H, K, D});
    for (std::int64_t i = 0; i < hx.numel(); ++i) hx.set(i, c.negative ? std::fabs(dist(rng)) : dist(rng));
    for (int h = 0; h < H; ++h)
      for (int j = 0; j < K; ++j)
        for (int d = 0; d < D; ++d) {
          const int sj = copy_source(c, j);
          const std::int64_t src = (static_cast<std::int64_t>(h) * K + sj) * D + d;
          hm.set((static_cast<std::int64_t>(h) * K + j) * D + d,
                 sj != j ? hm.get(src) : c.negative ? -std::fabs(dist(rng)) : dist(rng));
        }
    std::vector<float> hb(static_cast<std::size_t>(H) * K);
    for (float& b : hb) b = c.bias ? (c.negative ? -4.0f * std::fabs(dist(rng)) : 4.0f * dist(rng)) : 0.0f;
    for (int h = 0; h < H; ++h)
      for (int j = 0; j < K; ++j) hb[h * K + j] = hb[h * K + copy_source(c, j)];
    // Device x: [H, N, D] or, interleaved, [N, H, D].
    HostTensor dx_host(c.dtype, {H, N, D});
    for (int h = 0; h < H; ++h)
      for (std::int64_t n = 0; n < N; ++n)
        for (int d = 0; d < D; ++d) {
          const std::int64_t at = c.interleaved ? (n * H + h) * D + d : (h * N + n) * D + d;
          dx_host.set(at, hx.get((h * N + n) * D + d));
        }
    test::DeviceTensor dx(dx_host), dm(hm);
    float* db = nullptr;
    std::int32_t* dl = nullptr;
    test::cuda_ok(cudaMalloc(&db, sizeof(float) * hb.size()), "malloc");
    test::cuda_ok(cudaMalloc(&dl, sizeof(std::int32_t) * H * N), "malloc");
    test::cuda_ok(cudaMemcpy(db, hb.data(), sizeof(float) * hb.size(), cudaMemcpyHostToDevice), "copy");
    RowsView xv{dx.data(), c.dtype == DType::bf16 ? Elem::bf16 : Elem::f16, H, N, D,
                c.interleaved ? D : N * D, c.interleaved ? H * D : D};
    // Reference: exact scores of the rounded inputs in double, best index (lowest on ties), and the
    // rounding bound of an fp32-accumulated product per score.
    std::vector<float> xs(hx.numel()), ms(hm.numel());  // the rounded values, read once
    for (std::int64_t i = 0; i < hx.numel(); ++i) xs[i] = hx.get(i);
    for (std::int64_t i = 0; i < hm.numel(); ++i) ms[i] = hm.get(i);
    std::vector<double> best(H * N), slack(H * N);
    std::vector<int> best_j(H * N);
    std::vector<std::vector<double>> score_of(H * N);
#pragma omp parallel for
    for (std::int64_t r = 0; r < H * N; ++r) {
      const std::int64_t h = r / N, n = r % N;
      std::vector<double>& sc = score_of[r];
      sc.resize(K);
      double b = -1e300, a_max = 0;
      int bj = 0;
      for (int j = 0; j < K; ++j) {
        double v = 0, a = 0;
        for (int d = 0; d < D; ++d) {
          const double p = static_cast<double>(xs[(h * N + n) * D + d]) * ms[(h * K + j) * D + d];
          v += p, a += std::fabs(p);
        }
        sc[j] = v + hb[h * K + j];
        a_max = std::max(a_max, a);
        if (sc[j] > b) b = sc[j], bj = j;
      }
      best[r] = b, best_j[r] = bj;
      slack[r] = 2 * (a_max * std::ldexp(1.0, -14) + 1e-6 * (1 + std::fabs(b)));
    }
    std::vector<std::int32_t> base;
    for (int v : variants) {
      test::cuda_ok(cudaMemset(dl, 0xff, sizeof(std::int32_t) * H * N), "memset");
      launch_assign_variant(v, xv, dm.data(), c.bias || c.duplicates ? db : nullptr, K, dl, nullptr);
      test::cuda_ok(cudaGetLastError(), "launch_assign_variant");
      test::cuda_ok(cudaDeviceSynchronize(), "launch_assign_variant (sync)");
      std::vector<std::int32_t> got(H * N);
      test::cuda_ok(cudaMemcpy(got.data(), dl, sizeof(std::int32_t) * H * N, cudaMemcpyDeviceToHost), "copy");
      std::int64_t wrong = 0, not_exact = 0, upper_copy = 0, differ = 0;
      for (std::int64_t r = 0; r < H * N; ++r) {
        const int l = got[r];
        if (l < 0 || l >= K || score_of[r][l] < best[r] - slack[r]) {
          ++wrong;
          continue;
        }
        not_exact += l != best_j[r];
        upper_copy += copy_source(c, l) != l && score_of[r][l] == score_of[r][copy_source(c, l)];
        if (!base.empty()) differ += l != base[r];
      }
      std::printf("  %-30s variant %d: %lld rows, %lld near-ties not exact, %lld differ from variant 0, %lld wrong\n",
                  c.name, v, (long long)(H * N), (long long)not_exact, (long long)differ, (long long)wrong);
      CHECK(wrong == 0, "%s, variant %d: %lld labels are not a near-argmax", c.name, v, (long long)wrong);
      CHECK(upper_copy == 0, "%s, variant %d: %lld rows labelled with the higher copy of a duplicated centroid", c.name,
            v, (long long)upper_copy);
      CHECK(differ <= std::max<std::int64_t>(2, H * N / 1000), "%s, variant %d: %lld labels differ from variant 0",
            c.name, v, (long long)differ);
      if (base.empty()) base = got;
    }
    cudaFree(db), cudaFree(dl);
  }
}

// The centroid products (small_gemm.cu), both paths, against double sums of the same fp32 inputs;
// the shapes take the tensor-core path's 16-byte loads (k and nb multiples of 4) and its 4-byte
// ones, full and partial tiles.
// Bound: the worst case of an fp32 dot product of length k, (k + 2) 2^-24 sum |a b| (plus 2^-21
// sum |a b| for the tf32x3 split's dropped lo * lo term), element by element.
void check_small_gemm(bool quick) {
  using namespace svoo::cuda::detail;
  struct G {
    int heads, ma, nb, k;
    bool trans_a, trans_b;
  };
  // nt: the block logits; tn: the Gram matrices C^T C; nn: the projections C S (planner shapes last).
  const std::vector<G> cases = {
      {1, 1, 1, 1, false, true},       {2, 17, 33, 5, false, false},      {3, 64, 64, 128, false, true},
      {2, 100, 70, 131, false, false}, {2, 130, 66, 37, false, true},     {2, 100, 68, 132, false, false},
      {3, 70, 100, 64, false, true},   {1, 1, 1, 1, true, false},         {2, 17, 33, 5, true, false},
      {2, 70, 66, 37, true, false},    {2, 100, 68, 132, true, false},    {3, 128, 128, 16, true, false},
      {40, 256, 1024, 128, false, true}, {40, 128, 128, 256, true, false}, {40, 128, 128, 1024, true, false},
      {40, 1024, 128, 128, false, false}, {40, 256, 128, 128, false, false}};
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::printf("centroid products (fp32 GEMMs), max error / sum|a b| for simt and tf32x3:\n");
  for (const G& c : cases) {
    if (quick && c.heads > 8) continue;  // the full-size shapes are slow under compute-sanitizer
    const char* kind = c.trans_b ? "nt" : c.trans_a ? "tn" : "nn";
    const std::size_t na = static_cast<std::size_t>(c.heads) * c.ma * c.k, nb = static_cast<std::size_t>(c.heads) * c.nb * c.k,
                      nc = static_cast<std::size_t>(c.heads) * c.ma * c.nb;
    std::vector<float> a(na), b(nb);
    for (float& x : a) x = dist(rng);
    for (float& x : b) x = dist(rng) + 0.5f;  // a mean, so that sums do not all cancel
    std::vector<double> ref(nc), mag(nc);
#pragma omp parallel for
    for (std::int64_t o = 0; o < static_cast<std::int64_t>(nc); ++o) {
      const std::int64_t h = o / (static_cast<std::int64_t>(c.ma) * c.nb), i = o / c.nb % c.ma, j = o % c.nb;
      double v = 0, m = 0;
      for (int kk = 0; kk < c.k; ++kk) {
        const double x = c.trans_a ? a[(h * c.k + kk) * c.ma + i] : a[(h * c.ma + i) * c.k + kk];
        const double y = c.trans_b ? b[(h * c.nb + j) * c.k + kk] : b[(h * c.k + kk) * c.nb + j];
        v += x * y, m += std::fabs(x * y);
      }
      ref[o] = v, mag[o] = m;
    }
    float *da = nullptr, *db = nullptr, *dc = nullptr;
    test::cuda_ok(cudaMalloc(&da, 4 * na), "malloc");
    test::cuda_ok(cudaMalloc(&db, 4 * nb), "malloc");
    test::cuda_ok(cudaMalloc(&dc, 4 * nc), "malloc");
    test::cuda_ok(cudaMemcpy(da, a.data(), 4 * na, cudaMemcpyHostToDevice), "copy");
    test::cuda_ok(cudaMemcpy(db, b.data(), 4 * nb, cudaMemcpyHostToDevice), "copy");
    double worst[2] = {0, 0};
    const GemmPath paths[2] = {GemmPath::simt, GemmPath::tf32x3};
    for (int pi = 0; pi < 2; ++pi) {
      test::cuda_ok(cudaMemset(dc, 0xff, 4 * nc), "memset");  // NaN poison: every output must be written
      if (c.trans_b) launch_gemm_nt(c.heads, c.ma, c.nb, c.k, 1.0f, da, db, 0.0f, dc, nullptr, paths[pi]);
      else if (c.trans_a) launch_gemm_tn(c.heads, c.ma, c.nb, c.k, da, db, dc, nullptr, paths[pi]);
      else launch_gemm_nn(c.heads, c.ma, c.nb, c.k, da, db, dc, nullptr, paths[pi]);
      test::cuda_ok(cudaGetLastError(), "launch_gemm");
      std::vector<float> got(nc);
      test::cuda_ok(cudaMemcpy(got.data(), dc, 4 * nc, cudaMemcpyDeviceToHost), "copy");
      std::int64_t bad = 0;
      for (std::size_t o = 0; o < nc; ++o) {
        const double err = std::fabs(got[o] - ref[o]);
        const double bound = ((c.k + 2) * std::ldexp(1.0, -24) + std::ldexp(1.0, -21)) * mag[o] + 1e-30;
        if (!(err <= bound)) ++bad;  // NaN counts as bad
        if (mag[o] > 0) worst[pi] = std::max(worst[pi], err / mag[o]);
      }
      CHECK(bad == 0, "gemm %s %d x %d x %d x %d, %s: %lld outputs outside the fp32 bound", kind,
            c.heads, c.ma, c.nb, c.k, pi ? "tf32x3" : "simt", (long long)bad);
    }
    std::printf("  %s %2d x %4d x %4d x %4d: simt %.2e, tf32x3 %.2e\n", kind, c.heads, c.ma, c.nb,
                c.k, worst[0], worst[1]);
    cudaFree(da), cudaFree(db), cudaFree(dc);
  }
}

// The stable sort of tokens by label, both paths (tiled counting sort, cub's radix sort) against
// a host stable sort: sizes, offsets and permutation bit-equal. Label patterns: uniform, one
// cluster only, runs of equal labels (like a video's neighbouring tokens), descending; sizes around
// the 2048-token tile and past the tiled path's 2048 clusters (the general path then runs for both).
void check_label_sort(bool quick) {
  using namespace svoo::cuda::detail;
  struct L {
    int heads;
    std::int64_t tokens;
    int clusters;
  };
  std::vector<L> cases = {{1, 1, 1}, {2, 2047, 5}, {3, 2048, 64}, {2, 2049, 2048}, {1, 6000, 2049}, {2, 4097, 1024}};
  if (!quick) cases.push_back({40, 75600, 1024}), cases.push_back({40, 75600, 256});
  std::mt19937 rng(5);
  std::printf("label sort (tiled and general paths vs a host stable sort):\n");
  for (const L& c : cases)
    for (int pattern = 0; pattern < 4; ++pattern) {
      const std::int64_t n = c.heads * c.tokens;
      std::vector<std::int32_t> labels(n);
      std::uniform_int_distribution<int> pick(0, c.clusters - 1);
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t t = i % c.tokens;
        labels[i] = pattern == 0   ? pick(rng)
                    : pattern == 1 ? c.clusters - 1
                    : pattern == 2 ? static_cast<int>((t / 37 + i / c.tokens) % c.clusters)
                                   : static_cast<int>((c.tokens - 1 - t) * c.clusters / c.tokens);
      }
      std::vector<std::int32_t> want_perm(n), want_sizes(static_cast<std::size_t>(c.heads) * c.clusters, 0),
          want_offsets(static_cast<std::size_t>(c.heads) * (c.clusters + 1));
      for (int h = 0; h < c.heads; ++h) {
        const std::int32_t* l = labels.data() + h * c.tokens;
        std::int32_t* pm = want_perm.data() + h * c.tokens;
        for (std::int64_t t = 0; t < c.tokens; ++t) pm[t] = static_cast<std::int32_t>(t);
        std::stable_sort(pm, pm + c.tokens, [&](std::int32_t a, std::int32_t b) { return l[a] < l[b]; });
        for (std::int64_t t = 0; t < c.tokens; ++t) ++want_sizes[h * c.clusters + l[t]];
        std::int32_t run = 0;
        for (int k = 0; k <= c.clusters; ++k) {
          want_offsets[h * (c.clusters + 1) + k] = run;
          if (k < c.clusters) run += want_sizes[h * c.clusters + k];
        }
      }
      test::DeviceBuffer<std::int32_t> dl(labels), perm(n), sizes(want_sizes.size()), offsets(want_offsets.size()),
          keys_in(n), keys_out(n), vals(n);
      const std::int64_t counts = tile_sort_count_items(c.heads, c.tokens, c.clusters);
      test::DeviceBuffer<std::int32_t> dcounts(std::max<std::int64_t>(counts, 1));
      const std::size_t tb = sort_temp_bytes(c.heads, c.tokens, c.clusters);
      test::DeviceBuffer<char> temp(std::max<std::size_t>(tb, 1));
      SortScratch ss;
      ss.keys_in = keys_in.data(), ss.keys_out = keys_out.data(), ss.vals_in = vals.data();
      ss.counts = counts > 0 ? dcounts.data() : nullptr;
      ss.temp = temp.data(), ss.temp_bytes = tb;
      for (SortPath path : {SortPath::tiled, SortPath::cub}) {
        cudaMemset(perm.data(), 0xff, 4 * n), cudaMemset(sizes.data(), 0xff, 4 * want_sizes.size());
        cudaMemset(offsets.data(), 0xff, 4 * want_offsets.size());
        launch_sort_labels(dl.data(), c.heads, c.tokens, c.clusters, ss, sizes.data(), offsets.data(), perm.data(),
                           nullptr, path);
        test::cuda_ok(cudaDeviceSynchronize(), "launch_sort_labels");
        CHECK(perm.download() == want_perm && sizes.download() == want_sizes && offsets.download() == want_offsets,
              "label sort (%s path%s), %d heads x %lld tokens, %d clusters, pattern %d: differs from a stable sort",
              path == SortPath::tiled ? "tiled" : "general", counts > 0 ? "" : ", not applicable: general",
              c.heads, (long long)c.tokens, c.clusters, pattern);
      }
    }
  std::printf("  %zu shapes x 4 label patterns x 2 paths compared\n", cases.size());
}

}  // namespace
}  // namespace svoo

int main(int argc, char** argv) {
  using namespace svoo;
  if (!cuda::available()) {
    std::printf("gpu_check: no CUDA device, skipped\n");
    return 77;
  }
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";  // for compute-sanitizer
  const char* variant = std::getenv("SVOO_ASSIGN_VARIANT");
  std::printf("gpu_check: planner assignment variant %s (SVOO_ASSIGN_VARIANT)\n", variant ? variant : "default (4 for co-clustering on Hopper, else 0)");
  check_small_gemm(quick);
  check_label_sort(quick);
  if (!quick) check_assign_variants();
  g_failures += check_alignment(quick);
  std::vector<Case> cases;
  cases.push_back({"small", 1, 1000, 16, 64, DType::bf16});
  cases.push_back({"ties", 1, 500, 4, 8, DType::bf16, false, ClusterMethod::coclustering, true});
  cases.push_back({"single-row clusters", 2, 700, 512, 64, DType::bf16});
  Case peaked{"peaked scores", 2, 2500, 16, 64, DType::bf16};
  peaked.q_std = 6.f;  // score std ~9: the attention's running maxima keep growing (its rescaling path)
  cases.push_back(peaked);
  if (!quick) {
    cases.push_back({"empty key clusters (Kk > N)", 2, 1000, 16, 1024, DType::bf16});
    cases.push_back({"Kk 2048 (block-wide selection sort)", 1, 6000, 16, 2048, DType::bf16});
    cases.push_back({"ragged f16", 3, 4097, 32, 128, DType::f16});
    cases.push_back({"synthetic", 12, 12480, 42, 166, DType::bf16, true});
    cases.push_back({"k-means", 2, 12345, 64, 256, DType::bf16, false, ClusterMethod::kmeans});
    cases.push_back({"medium", 4, 30000, 128, 512, DType::bf16});
    Case big{"wan14b-720p", 40, 75600, 256, 1024, DType::bf16};
    big.verify_heads = 2, big.verify_rows = 3000;
    cases.push_back(big);
  }
  // SVOO_CHECK_CASES=a,b: only the cases whose names start with one of these (e.g. a short run
  // under compute-sanitizer's racecheck, which is slow on the big attention cases).
  if (const char* only = std::getenv("SVOO_CHECK_CASES")) {
    std::vector<std::string> prefixes;
    for (std::string list = only; !list.empty();) {
      const auto comma = list.find(',');
      prefixes.push_back(list.substr(0, comma));
      list = comma == std::string::npos ? "" : list.substr(comma + 1);
    }
    std::erase_if(cases, [&](const Case& c) {
      return std::none_of(prefixes.begin(), prefixes.end(), [&](const std::string& p) { return c.name.rfind(p, 0) == 0; });
    });
    std::printf("gpu_check: %zu case(s) selected by SVOO_CHECK_CASES=%s\n", cases.size(), only);
    if (cases.empty()) {  // a misspelt filter must not pass as "0 failures"
      std::printf("gpu_check: no case name starts with any of SVOO_CHECK_CASES=%s\n", only);
      return 2;
    }
  }
  for (const Case& c : cases) {
    try {
      run_case(c);
    } catch (const std::exception& e) {
      ++g_failures;
      std::printf("  FAIL: %s\n", e.what());
    }
  }
  std::printf("gpu_check: %d failure(s)\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
