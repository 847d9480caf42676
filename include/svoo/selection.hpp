// Block-pair scores and the selection rules (spec 2.2, 2.3): pure policy on small matrices,
// shared by every backend.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "svoo/clustering.hpp"

namespace svoo {

// P for one head: P[i, j] = softmax_j(s * <Cq[i], Ck[j]> + log sk[j]); an empty key cluster gets 0.
// Returns [kq, kk]. Used by the CPU backend; exposed for tests.
std::vector<float> block_scores_head(const float* q_centroids, const float* k_centroids, const std::int32_t* k_sizes,
                                     int kq, int kk, std::int64_t dim);

// In place: logits a[kq, kk] = s * <Cq[i], Ck[j]>  ->  P[i, j] as above.
void block_scores_from_logits(float* a, const std::int32_t* k_sizes, int kq, int kk);

// Throws Error(invalid_argument) for a top_p, floor clip, cap or theta out of range.
void check_selection_config(const SelectionConfig& config);

// How many key clusters one score row keeps, in P-descending order (ties: lower index first):
// the released rule (top-p, floor, cap) or the paper rule. `profiled` is the head's profile
// density d (or the fallback), before clipping. Writes the kept indices' flags into keep[kk].
void select_row(const float* scores, int kk, const SelectionConfig& config, double profiled, std::uint8_t* keep);

// Applies select_row to every (head, query cluster). scores: [heads, kq, kk];
// profiled: one density per head.
Selection select_blocks(std::span<const float> scores, std::int64_t heads, int kq, int kk,
                        const SelectionConfig& config, std::span<const double> profiled);

// A selection that keeps every block (dense attention through the sparse path).
Selection keep_all(std::int64_t heads, int kq, int kk);

// Builds the permutations (stable sort of labels) and the merged kept key ranges.
BlockLayout build_layout(const Clustering& clustering, const Selection& selection);

}  // namespace svoo
