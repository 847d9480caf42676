// Internal: the clustering steps around the fused assignment (anchors, centroid updates through a
// stable radix sort, projections), as stream-ordered launchers that allocate nothing. cub's
// temporary storage is sized once by the planner (sort_temp_bytes, scan64_temp_bytes).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels.cuh"

namespace svoo::cuda::detail {

// The CPU's draw_anchors sequence, one thread per head: q [heads, kq], k [heads, kk].
void launch_draw_anchors(int heads, std::int64_t q_tokens, std::int64_t k_tokens, int kq, int kk, std::uint64_t seed,
                         std::int32_t* q, std::int32_t* k, cudaStream_t stream);

// centroids[h, i, :] = float(x[h, anchors[h, i], :]) for i < clusters.
void launch_gather_centroids(const RowsView& x, const std::int32_t* anchors, int clusters, float* centroids,
                             cudaStream_t stream);

// Scales every row of g [rows, cols] to unit L2 norm (x / max(|x|, 1e-12), norm summed in double).
void launch_rownorm(float* g, std::int64_t rows, int cols, cudaStream_t stream);

// dst[i] = src[i] rounded to the element type (bf16 or f16).
void launch_round(const float* src, std::int64_t count, Elem elem, void* dst, cudaStream_t stream);

// bias[h, j] = -|c[h, j]|^2 / 2 (double sum), for Euclidean nearest-centroid assignment.
void launch_half_norm_bias(const float* c, std::int64_t rows, int dim, float* bias, cudaStream_t stream);

// Temporary bytes cub needs for the sort of a side with `items` = heads * tokens, and for the
// layout's 64-bit scan.
std::size_t sort_temp_bytes(std::int64_t items, int key_bits);
std::size_t scan64_temp_bytes(std::int64_t items);

// Scratch of one side's centroid update.
struct SortScratch {
  std::int32_t* keys_in;   // [heads * tokens]
  std::int32_t* keys_out;  // [heads * tokens]
  std::int32_t* vals_in;   // [heads * tokens]
  void* temp;              // cub temporary storage
  std::size_t temp_bytes;
};

// From labels [heads, tokens]: sizes [heads, clusters], offsets [heads, clusters + 1] (per head,
// from 0), perm [heads, tokens] (a stable sort of the tokens by label: the layout's permutation),
// and, when x is given, the centroids [heads, clusters, dim] as the means of their members (an
// empty cluster keeps its centroid). Deterministic: sums run in a fixed order, and the offsets come
// from the boundaries of the sorted keys, not from atomic counts.
void launch_update_side(const RowsView* x, const std::int32_t* labels, std::int64_t heads, std::int64_t tokens,
                        int clusters, const SortScratch& scratch, std::int32_t* sizes, std::int32_t* offsets,
                        std::int32_t* perm, float* centroids, cudaStream_t stream);

// range_ptr [items + 1] = exclusive scan of counts [items + 1] (counts[items] must be 0).
void launch_scan64(const std::int64_t* counts, std::int64_t items, std::int64_t* range_ptr, void* temp,
                   std::size_t temp_bytes, cudaStream_t stream);

}  // namespace svoo::cuda::detail
