// The CPU backend: the whole online stage in fp32 on the host, multithreaded (OpenMP) and built on
// BLAS products. It is the reference the CUDA backend is tested against, and the backend that runs
// where no GPU is present. Inputs are views of any floating dtype; q [heads, q_tokens, dim],
// k and v [heads, k_tokens, dim].
#pragma once

#include <cstdint>
#include <span>

#include "svoo/clustering.hpp"
#include "svoo/tensor.hpp"

namespace svoo::cpu {

// Spec 2.1 co-clustering or the k-means baseline (config.method), from `anchors` when given, else
// from anchors drawn with config.seed. Deterministic for given inputs and anchors.
Clustering cluster(const TensorView& q, const TensorView& k, const ClusterConfig& config,
                   const Anchors* anchors = nullptr);

// P = block-pair scores of every head, [heads, kq, kk] (spec 2.2).
std::vector<float> block_scores(const Clustering& clustering);

// The query-cluster alignment post-pass (ClusterConfig::query_align, which cluster() applies
// itself) on a clustering made elsewhere, e.g. by the CUDA planner: scores of q against the
// clustering's final centroids by `method`'s assignment score, align_clusters on each head, then
// the query centroids and sizes recomputed, `passes` times (ClusterConfig::align_passes). align 0
// or 1: nothing changes.
void align_queries(const TensorView& q, Clustering& clustering, int align, int candidates,
                   ClusterMethod method = ClusterMethod::coclustering, int passes = ClusterConfig{}.align_passes);

// plan: clustering (fresh, or a cached one to reuse) -> scores -> selection -> layout.
struct Plan {
  Clustering clustering;
  Selection selection;
  BlockLayout layout;
};
// `profiled`: the per-head profile density (before clipping), one per head.
Plan plan(const TensorView& q, const TensorView& k, const ClusterConfig& cluster_config,
          const SelectionConfig& selection_config, std::span<const double> profiled,
          const Clustering* reuse = nullptr, const Anchors* anchors = nullptr);

// run: for every query row, exact softmax attention (scale 1/sqrt(dim)) over the keys of the kept
// ranges of its query cluster, written in the original token order. `lse` (optional, [heads,
// q_tokens] fp32) receives the natural log-sum-exp of the scaled scores; a row whose cluster keeps
// no keys gets a zero output and -inf. fp32 accumulation; `out` may be any floating dtype.
void sparse_attention(const TensorView& q, const TensorView& k, const TensorView& v, const BlockLayout& layout,
                      const TensorView& out, float* lse = nullptr);

// Dense attention over every key, same conventions.
void dense_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                     float* lse = nullptr);

}  // namespace svoo::cpu
