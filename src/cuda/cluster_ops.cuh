// Internal: the clustering steps around the fused assignment (anchors, projections, centroid
// updates through a stable sort of the labels), as stream-ordered launchers that allocate nothing.
// Their scratch and cub's temporary storage are sized once by the planner (project_gram_floats,
// tile_sort_count_items, sort_temp_bytes, scan64_temp_bytes).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels.cuh"

namespace svoo::cuda::detail {

// The CPU's draw_anchors sequence, one block per head: q [heads, kq], k [heads, kk].
void launch_draw_anchors(int heads, std::int64_t q_tokens, std::int64_t k_tokens, int kq, int kk, std::uint64_t seed,
                         std::int32_t* q, std::int32_t* k, cudaStream_t stream);

// centroids[h, i, :] = float(x[h, anchors[h, i], :]) for i < clusters.
void launch_gather_centroids(const RowsView& x, const std::int32_t* anchors, int clusters, float* centroids,
                             cudaStream_t stream);

// The projected centroids of a co-clustering step (spec 2.1) for the side `own`, rounded to the
// element type: m[h, j] = (own[h, j] S) / |g_j| with S = other[h]^T other[h] (dim x dim) and
// |g_j| = |own[h, j] other[h]^T| = sqrt(<own[h, j] S, own[h, j]>), floored at 1e-12.
// Why: G = rownorm(C_own C_other^T) and M = G C_other, the two Kk x Kq x D products of the
// literal formula, collapse to M[j] = C_own[j] (C_other^T C_other) / |G[j]| in exact arithmetic
// (S is symmetric): two products of dim x dim x K and K_own x dim x dim, a third of the flops at
// Kq / Kk = 256 / 1024 and D = 128. gram: project_gram_floats fp32 scratch (S and, where the
// Gram product is split along other_k, its partial sums); p: [heads, own_k, dim] fp32 scratch.
std::int64_t project_gram_floats(int heads, int other_k, int dim);
void launch_project_rows(int heads, int own_k, int other_k, int dim, const float* own, const float* other,
                         float* gram, float* p, Elem elem, void* m, cudaStream_t stream);

// dst[i] = src[i] rounded to the element type (bf16 or f16).
void launch_round(const float* src, std::int64_t count, Elem elem, void* dst, cudaStream_t stream);

// bias[h, j] = -|c[h, j]|^2 / 2 (double sum), for Euclidean nearest-centroid assignment.
void launch_half_norm_bias(const float* c, std::int64_t rows, int dim, float* bias, cudaStream_t stream);

// Temporary bytes cub needs for the layout's 64-bit scan.
std::size_t scan64_temp_bytes(std::int64_t items);

// ---- the stable sort of tokens by label (label_sort.cu) ----

// Scratch of one side's sort. The tiled path needs counts (tile_sort_count_items entries; 0 where
// that path does not apply: more than 2048 clusters); the general path needs keys_in, keys_out
// and vals_in ([heads * tokens] each) and temp (sort_temp_bytes).
struct SortScratch {
  std::int32_t* keys_in = nullptr;
  std::int32_t* keys_out = nullptr;
  std::int32_t* vals_in = nullptr;
  std::int32_t* counts = nullptr;
  void* temp = nullptr;
  std::size_t temp_bytes = 0;
};
std::int64_t tile_sort_count_items(std::int64_t heads, std::int64_t tokens, int clusters);
// Whether launch_sort_labels(automatic) will use the general path's scratch for this side (more
// than 2048 clusters, or SVOO_LABEL_SORT=cub): the planner allocates it only then. Given neither
// scratch for the path it wants, launch_sort_labels takes the other.
bool sort_needs_general_scratch(std::int64_t heads, std::int64_t tokens, int clusters);
std::size_t sort_temp_bytes(std::int64_t heads, std::int64_t tokens, int clusters);

// From labels [heads, tokens]: sizes [heads, clusters], offsets [heads, clusters + 1] (per head,
// from 0) and perm [heads, tokens], the tokens of each head sorted stably by label (the layout's
// permutation). Deterministic, no atomics on global memory. automatic: the tiled counting sort
// where it applies and its scratch is given (unless SVOO_LABEL_SORT=cub), else the general path;
// both give bit-identical results.
enum class SortPath { automatic, tiled, cub };
void launch_sort_labels(const std::int32_t* labels, std::int64_t heads, std::int64_t tokens, int clusters,
                        const SortScratch& scratch, std::int32_t* sizes, std::int32_t* offsets, std::int32_t* perm,
                        cudaStream_t stream, SortPath path = SortPath::automatic);

// A side's centroid update: launch_sort_labels, then, when x is given, the centroids [heads,
// clusters, dim] as the means of their members (an empty cluster keeps its centroid), each summed
// by one block in a fixed order.
void launch_update_side(const RowsView* x, const std::int32_t* labels, std::int64_t heads, std::int64_t tokens,
                        int clusters, const SortScratch& scratch, std::int32_t* sizes, std::int32_t* offsets,
                        std::int32_t* perm, float* centroids, cudaStream_t stream);

// range_ptr [items + 1] = exclusive scan of counts [items + 1] (counts[items] must be 0).
void launch_scan64(const std::int64_t* counts, std::int64_t items, std::int64_t* range_ptr, void* temp,
                   std::size_t temp_bytes, cudaStream_t stream);

}  // namespace svoo::cuda::detail
