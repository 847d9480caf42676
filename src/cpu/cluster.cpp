// Spec 2.1 on the CPU: bidirectional QK co-clustering and the independent k-means baseline.
//
// Co-clustering assigns a key n to argmax_j <f/|f|, G[j]> with f = K[n] Cq^T and G = rownorm(Ck Cq^T).
// |f| is positive and the same for every j, so it cannot change the argmax, and
// <K[n] Cq^T, G[j]> = <K[n], (G Cq)[j]>. Each step is therefore one "nearest projected centroid"
// product K x (G Cq)^T (N x D x Kk) after a tiny Kk x Kq x D product, instead of two chained
// products through a Kq-wide profile. The tests check this against the literal formula (labels
// may differ only at near-ties, where rounding decides).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gemm.hpp"
#include "head_buffer.hpp"
#include "svoo/attention_shape.hpp"
#include "svoo/cpu.hpp"
#include "svoo/error.hpp"
#include "svoo/selection.hpp"

namespace svoo::cpu {
namespace {

constexpr std::int64_t kChunk = 1024;  // rows per product in the assignment step

// labels[n] = argmax_j (X[n] . M[j] + bias[j]) (ties: lowest j), over row chunks in parallel.
void assign(const float* x, std::int64_t n, std::int64_t dim, const float* m, const float* bias, int clusters,
            std::int32_t* labels) {
  const std::int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel
  {
    std::vector<float> s(static_cast<std::size_t>(kChunk) * clusters);
#pragma omp for schedule(dynamic)
    for (std::int64_t c = 0; c < chunks; ++c) {
      const std::int64_t r0 = c * kChunk, rows = std::min(kChunk, n - r0);
      gemm_nt(rows, clusters, dim, 1.0f, x + r0 * dim, dim, m, dim, 0.0f, s.data(), clusters);
      for (std::int64_t r = 0; r < rows; ++r) {
        const float* row = s.data() + r * clusters;
        int best = 0;
        float best_v = row[0] + (bias ? bias[0] : 0.0f);
        for (int j = 1; j < clusters; ++j) {
          const float v = row[j] + (bias ? bias[j] : 0.0f);
          if (v > best_v) {
            best_v = v;
            best = j;
          }
        }
        labels[r0 + r] = best;
      }
    }
  }
}

// v rounded to a 16-bit element type (as the tensor cores read it); f32 unchanged.
float round_to(DType elem, float v) {
  if (elem == DType::bf16) return bf16_to_float(float_to_bf16(v));
  if (elem == DType::f16) return f16_to_float(float_to_f16(v));
  return v;
}

// The alignment's candidate moves (see align_clusters): for each row of a shedding cluster, its e
// best taking clusters by the assignment's score x[n] . m[j] + bias[j] (ties: lowest j first) and
// their costs, its own cluster's score less theirs; -1 pads. Other rows get -1 throughout.
void alignment_candidates(const float* x, std::int64_t n, std::int64_t dim, const float* m, const float* bias,
                          int clusters, const std::int32_t* labels, const std::uint8_t* takes, const int* rem, int e,
                          std::int32_t* candidates, float* costs) {
  const std::int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel
  {
    std::vector<float> s(static_cast<std::size_t>(kChunk) * clusters), best(static_cast<std::size_t>(e));
#pragma omp for schedule(dynamic)
    for (std::int64_t c = 0; c < chunks; ++c) {
      const std::int64_t r0 = c * kChunk, rows = std::min(kChunk, n - r0);
      gemm_nt(rows, clusters, dim, 1.0f, x + r0 * dim, dim, m, dim, 0.0f, s.data(), clusters);
      for (std::int64_t i = 0; i < rows; ++i) {
        std::int32_t* cand = candidates + (r0 + i) * e;
        float* cost = costs + (r0 + i) * e;
        std::fill(cand, cand + e, -1);
        std::fill(cost, cost + e, 0.0f);
        const int own = labels[r0 + i];
        if (rem[own] == 0) continue;
        const float* row = s.data() + i * clusters;
        auto score = [&](int j) { return row[j] + (bias ? bias[j] : 0.0f); };
        for (int j = 0; j < clusters; ++j) {
          if (!takes[j]) continue;
          const float v = score(j);
          if (cand[e - 1] >= 0 && !(v > best[e - 1])) continue;
          int t = e - 1;  // insertion: strictly greater moves up, so earlier j win ties
          while (t > 0 && (cand[t - 1] < 0 || v > best[t - 1])) {
            cand[t] = cand[t - 1], best[t] = best[t - 1];
            --t;
          }
          cand[t] = j, best[t] = v;
        }
        for (int t = 0; t < e && cand[t] >= 0; ++t) cost[t] = score(own) - best[t];
      }
    }
  }
}

// Centroid = mean of member rows (fp32 sums in double for stability); empty clusters keep theirs.
void update_centroids(const float* x, std::int64_t n, std::int64_t dim, const std::int32_t* labels, int clusters,
                      float* centroids, std::int32_t* sizes) {
  std::vector<double> sum(static_cast<std::size_t>(clusters) * dim, 0.0);
  std::fill(sizes, sizes + clusters, 0);
  for (std::int64_t i = 0; i < n; ++i) {
    const int l = labels[i];
    ++sizes[l];
    double* s = sum.data() + static_cast<std::size_t>(l) * dim;
    const float* r = x + i * dim;
    for (std::int64_t d = 0; d < dim; ++d) s[d] += r[d];
  }
  for (int c = 0; c < clusters; ++c) {
    if (sizes[c] == 0) continue;
    const double inv = 1.0 / sizes[c];
    for (std::int64_t d = 0; d < dim; ++d) centroids[c * dim + d] = static_cast<float>(sum[c * dim + d] * inv);
  }
}

// M = rownorm(A B^T) B: the "projected centroids" of the side whose centroids are A (rows of A
// compared through the other side's centroids B).
void projected_centroids(const float* a, int na, const float* b, int nb, std::int64_t dim, float* m) {
  std::vector<float> g(static_cast<std::size_t>(na) * nb);
  gemm_nt(na, nb, dim, 1.0f, a, dim, b, dim, 0.0f, g.data(), nb);
  for (int i = 0; i < na; ++i) {
    double ss = 0.0;
    for (int j = 0; j < nb; ++j) ss += static_cast<double>(g[i * nb + j]) * g[i * nb + j];
    const float inv = static_cast<float>(1.0 / std::max(std::sqrt(ss), 1e-12));
    for (int j = 0; j < nb; ++j) g[i * nb + j] *= inv;
  }
  gemm_nn(na, dim, nb, 1.0f, g.data(), nb, b, dim, 0.0f, m, dim);
}

// bias[j] = -|C[j]|^2 / 2, so that argmax (x.c + bias) is the nearest centroid in Euclidean distance.
void half_norm_bias(const float* c, int clusters, std::int64_t dim, float* bias) {
  for (int j = 0; j < clusters; ++j) {
    double ss = 0.0;
    for (std::int64_t d = 0; d < dim; ++d) ss += static_cast<double>(c[j * dim + d]) * c[j * dim + d];
    bias[j] = static_cast<float>(-0.5 * ss);
  }
}

void cluster_head(const float* q, std::int64_t nq, const float* k, std::int64_t nk, std::int64_t dim,
                  const std::int32_t* anchor_q, const std::int32_t* anchor_k, const ClusterConfig& cfg,
                  std::int32_t* lq, std::int32_t* lk, float* cq, float* ck, std::int32_t* sq, std::int32_t* sk) {
  const int kq = cfg.kq, kk = cfg.kk;
  for (int i = 0; i < kq; ++i) std::copy_n(q + static_cast<std::int64_t>(anchor_q[i]) * dim, dim, cq + i * dim);
  for (int j = 0; j < kk; ++j) std::copy_n(k + static_cast<std::int64_t>(anchor_k[j]) * dim, dim, ck + j * dim);
  std::vector<float> mk(static_cast<std::size_t>(kk) * dim), mq(static_cast<std::size_t>(kq) * dim);
  std::vector<float> bk(static_cast<std::size_t>(kk)), bq(static_cast<std::size_t>(kq));
  for (int it = 0; it < cfg.iterations; ++it) {
    if (cfg.method == ClusterMethod::coclustering) {
      // A: keys in query-centroid space, then B: queries in the NEW key-centroid space.
      projected_centroids(ck, kk, cq, kq, dim, mk.data());
      assign(k, nk, dim, mk.data(), nullptr, kk, lk);
      update_centroids(k, nk, dim, lk, kk, ck, sk);
      projected_centroids(cq, kq, ck, kk, dim, mq.data());
      assign(q, nq, dim, mq.data(), nullptr, kq, lq);
      update_centroids(q, nq, dim, lq, kq, cq, sq);
    } else {
      half_norm_bias(ck, kk, dim, bk.data());
      assign(k, nk, dim, ck, bk.data(), kk, lk);
      update_centroids(k, nk, dim, lk, kk, ck, sk);
      half_norm_bias(cq, kq, dim, bq.data());
      assign(q, nq, dim, cq, bq.data(), kq, lq);
      update_centroids(q, nq, dim, lq, kq, cq, sq);
    }
  }
}

// The alignment post-pass of one head: scores of the queries against the final centroids (the
// score the next query assignment would use, with m rounded to the queries' element type as the
// tensor cores see it), then per pass each shedding row's candidate moves, the moves, the query
// centroids and sizes.
void align_head(const float* q, DType elem, std::int64_t nq, std::int64_t dim, const float* ck, int kk,
                ClusterMethod method, int align, int e, int passes, std::int32_t* lq, float* cq, std::int32_t* sq,
                int kq) {
  if (align < 2) return;
  std::vector<float> m(static_cast<std::size_t>(kq) * dim), bias;
  if (method == ClusterMethod::coclustering) {
    projected_centroids(cq, kq, ck, kk, dim, m.data());
  } else {
    std::copy_n(cq, m.size(), m.begin());
    bias.resize(static_cast<std::size_t>(kq));
    half_norm_bias(cq, kq, dim, bias.data());
  }
  for (float& v : m) v = round_to(elem, v);
  // Every pass scores against the same centroids (those the alignment started from); its roles and
  // candidates come from the sizes the pass before left.
  std::vector<std::int32_t> cand(static_cast<std::size_t>(nq) * e);
  std::vector<float> cost(cand.size());
  for (int pass = 0; pass < passes; ++pass) {
    const int take_above = alignment_take_above(align, pass);
    const std::vector<std::int32_t> size(sq, sq + kq);
    const std::vector<std::uint8_t> takes = alignment_takers(size, align, take_above);
    std::vector<int> rem(static_cast<std::size_t>(kq));
    for (int j = 0; j < kq; ++j) rem[j] = size[j] % align <= take_above ? size[j] % align : 0;
    alignment_candidates(q, nq, dim, m.data(), bias.empty() ? nullptr : bias.data(), kq, lq, takes.data(), rem.data(),
                         e, cand.data(), cost.data());
    align_clusters(std::span<std::int32_t>(lq, static_cast<std::size_t>(nq)), kq, align, e, cand, cost, take_above);
    update_centroids(q, nq, dim, lq, kq, cq, sq);
  }
}

}  // namespace

Clustering cluster(const TensorView& q, const TensorView& k, const ClusterConfig& config, const Anchors* anchors) {
  const AttentionShape s = check_qkv(q, k, nullptr, Device::cpu, "cpu::cluster");
  require(config.kq >= 1 && config.kk >= 1, ErrorKind::invalid_argument,
          "cluster counts must be >= 1, got kq " + std::to_string(config.kq) + ", kk " + std::to_string(config.kk));
  require(config.query_align >= 0 && config.query_align <= 256 && config.align_candidates >= 1 &&
              config.align_candidates <= 64 && config.align_passes >= 1 &&
              config.align_passes <= kMaxAlignPasses,
          ErrorKind::invalid_argument,
          "query alignment needs align in [0, 256], 1 to 64 candidates a row and 1 to " +
              std::to_string(kMaxAlignPasses) + " passes, got " +
              std::to_string(config.query_align) + ", " + std::to_string(config.align_candidates) + " and " +
              std::to_string(config.align_passes));
  require(config.iterations >= 1, ErrorKind::invalid_argument,
          "co-clustering needs at least one iteration to assign labels, got " + std::to_string(config.iterations));
  Anchors drawn;
  if (anchors) {
    check_anchors(*anchors, s.heads, s.q_tokens, s.k_tokens, config.kq, config.kk);
  } else {
    drawn = draw_anchors(s.heads, s.q_tokens, s.k_tokens, config.kq, config.kk, config.seed);
    anchors = &drawn;
  }
  Clustering c;
  c.heads = s.heads;
  c.q_tokens = s.q_tokens;
  c.k_tokens = s.k_tokens;
  c.dim = s.dim;
  c.kq = config.kq;
  c.kk = config.kk;
  c.q_labels.resize(static_cast<std::size_t>(s.heads * s.q_tokens));
  c.k_labels.resize(static_cast<std::size_t>(s.heads * s.k_tokens));
  c.q_centroids.resize(static_cast<std::size_t>(s.heads) * config.kq * s.dim);
  c.k_centroids.resize(static_cast<std::size_t>(s.heads) * config.kk * s.dim);
  c.q_sizes.resize(static_cast<std::size_t>(s.heads) * config.kq);
  c.k_sizes.resize(static_cast<std::size_t>(s.heads) * config.kk);
  std::vector<float> qh(static_cast<std::size_t>(s.q_tokens * s.dim)), kh(static_cast<std::size_t>(s.k_tokens * s.dim));
  for (std::int64_t h = 0; h < s.heads; ++h) {
    gather_head(q, h, qh.data(), "q");
    gather_head(k, h, kh.data(), "k");
    cluster_head(qh.data(), s.q_tokens, kh.data(), s.k_tokens, s.dim, anchors->q.data() + h * config.kq,
                 anchors->k.data() + h * config.kk, config, c.q_labels.data() + h * s.q_tokens,
                 c.k_labels.data() + h * s.k_tokens, c.q_centroids.data() + h * config.kq * s.dim,
                 c.k_centroids.data() + h * config.kk * s.dim, c.q_sizes.data() + h * config.kq,
                 c.k_sizes.data() + h * config.kk);
    if (config.query_align > 1)
      align_head(qh.data(), q.dtype, s.q_tokens, s.dim, c.k_centroids.data() + h * config.kk * s.dim, config.kk, config.method,
                 config.query_align, config.align_candidates, config.align_passes, c.q_labels.data() + h * s.q_tokens,
                 c.q_centroids.data() + h * config.kq * s.dim, c.q_sizes.data() + h * config.kq, config.kq);
  }
  return c;
}

void align_queries(const TensorView& q, Clustering& c, int align, int candidates, ClusterMethod method, int passes) {
  check_clustering(c);
  check_qkv(q, q, nullptr, Device::cpu, "cpu::align_queries");  // rank, floating dtype, host memory, strides
  require(q.shape[0] == c.heads && q.shape[1] == c.q_tokens && q.shape[2] == c.dim, ErrorKind::shape,
          "cpu::align_queries: q must be [heads, q_tokens, dim] = [" + std::to_string(c.heads) + ", " +
              std::to_string(c.q_tokens) + ", " + std::to_string(c.dim) + "] of the clustering, got " + q.describe());
  require(align >= 0 && align <= 256 && candidates >= 1 && candidates <= 64 && passes >= 1 &&
              passes <= kMaxAlignPasses,
          ErrorKind::invalid_argument,
          "cpu::align_queries: align must be in [0, 256] with 1 to 64 candidates a row and 1 to " +
              std::to_string(kMaxAlignPasses) + " passes, got " +
              std::to_string(align) + ", " + std::to_string(candidates) + " and " + std::to_string(passes));
  std::vector<float> qh(static_cast<std::size_t>(c.q_tokens * c.dim));
  for (std::int64_t h = 0; h < c.heads; ++h) {
    gather_head(q, h, qh.data(), "q");
    align_head(qh.data(), q.dtype, c.q_tokens, c.dim, c.k_centroids.data() + h * c.kk * c.dim, c.kk, method, align, candidates,
               passes, c.q_labels.data() + h * c.q_tokens, c.q_centroids.data() + h * c.kq * c.dim,
               c.q_sizes.data() + h * c.kq, c.kq);
  }
}

std::vector<float> block_scores(const Clustering& c) {
  check_clustering(c);
  std::vector<float> p(static_cast<std::size_t>(c.heads) * c.kq * c.kk);
#pragma omp parallel for schedule(dynamic)
  for (std::int64_t h = 0; h < c.heads; ++h) {
    float* ph = p.data() + h * c.kq * c.kk;
    gemm_nt(c.kq, c.kk, c.dim, 1.0f / std::sqrt(static_cast<float>(c.dim)), c.q_centroids.data() + h * c.kq * c.dim,
            c.dim, c.k_centroids.data() + h * c.kk * c.dim, c.dim, 0.0f, ph, c.kk);
    block_scores_from_logits(ph, c.k_sizes.data() + h * c.kk, c.kq, c.kk);
  }
  return p;
}

}  // namespace svoo::cpu
