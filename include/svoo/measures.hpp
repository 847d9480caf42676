// Measures of spec section 3 (and the tau-density of section 1), computed on the CPU in fp32.
#pragma once

#include <cstdint>
#include <vector>

#include "svoo/clustering.hpp"
#include "svoo/tensor.hpp"

namespace svoo {

// Which query rows a row-wise measure visits: all of them (rows == 0 or rows >= tokens), or
// `rows` drawn uniformly without replacement with `seed` (the same rows for every head).
struct RowSample {
  std::int64_t rows = 0;
  std::uint64_t seed = 0;
};
std::vector<std::int64_t> sample_rows(std::int64_t tokens, const RowSample& sample);

// tau-density of every head (spec 1): the mean over the sampled rows of the fewest keys whose
// softmax probabilities (scale 1/sqrt(dim)) reach tau of the row's mass, divided by k_tokens.
// tau in (0, 1].
std::vector<double> tau_density(const TensorView& q, const TensorView& k, double tau, const RowSample& sample);

// The count c_i of one probability row (not necessarily normalised): fewest entries whose largest
// values sum to >= tau * total. Exposed for tests and for the GPU reference.
std::int64_t tau_count(const float* probs, std::int64_t n, double tau);

// Block density per head: sum over kept (i, j) of sq[i] * sk[j] / (Nq * Nk).
std::vector<double> block_density(const Clustering& clustering, const Selection& selection);

// Attention recall per head (spec 3): the mean over sampled rows of the dense softmax mass that
// falls on the keys the row's query cluster keeps.
std::vector<double> attention_recall(const TensorView& q, const TensorView& k, const Clustering& clustering,
                                     const Selection& selection, const RowSample& sample);

struct OutputError {
  double relative_l2 = 0;  // ||a - b|| / ||b||
  double cosine = 0;       // <a, b> / (|a| |b|)
};
// Per head, `approx` against `reference` (both [heads, tokens, dim]).
std::vector<OutputError> output_error(const TensorView& approx, const TensorView& reference);
// Over the whole tensors.
OutputError output_error_total(const TensorView& approx, const TensorView& reference);

}  // namespace svoo
