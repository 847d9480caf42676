// Anchors, validation of clusterings, and small helpers of the online-stage data types.
#include "svoo/clustering.hpp"

#include <string>

#include "splitmix.hpp"
#include "svoo/error.hpp"

namespace svoo {

Anchors draw_anchors(std::int64_t heads, std::int64_t q_tokens, std::int64_t k_tokens, int kq, int kk,
                     std::uint64_t seed) {
  require(heads >= 1 && q_tokens >= 1 && k_tokens >= 1, ErrorKind::invalid_argument,
          "anchors need at least one head, query and key");
  require(kq >= 1 && kk >= 1, ErrorKind::invalid_argument,
          "cluster counts must be >= 1, got kq " + std::to_string(kq) + ", kk " + std::to_string(kk));
  Anchors a;
  a.heads = heads;
  a.kq = kq;
  a.kk = kk;
  a.q.resize(static_cast<std::size_t>(heads) * kq);
  a.k.resize(static_cast<std::size_t>(heads) * kk);
  for (std::int64_t h = 0; h < heads; ++h) {
    detail::SplitMix64 rng(detail::mix_seed(seed, static_cast<std::uint64_t>(h)));
    for (int i = 0; i < kq; ++i) a.q[h * kq + i] = static_cast<std::int32_t>(rng.below(q_tokens));
    for (int j = 0; j < kk; ++j) a.k[h * kk + j] = static_cast<std::int32_t>(rng.below(k_tokens));
  }
  return a;
}

void check_anchors(const Anchors& a, std::int64_t heads, std::int64_t q_tokens, std::int64_t k_tokens, int kq,
                   int kk) {
  require(a.heads == heads && a.kq == kq && a.kk == kk, ErrorKind::shape,
          "anchors are for " + std::to_string(a.heads) + " heads x (" + std::to_string(a.kq) + ", " +
              std::to_string(a.kk) + ") clusters, the call has " + std::to_string(heads) + " heads x (" +
              std::to_string(kq) + ", " + std::to_string(kk) + ")");
  require(a.q.size() == static_cast<std::size_t>(heads) * kq && a.k.size() == static_cast<std::size_t>(heads) * kk,
          ErrorKind::shape, "anchor arrays must hold heads*kq and heads*kk indices");
  for (std::size_t i = 0; i < a.q.size(); ++i)
    require(a.q[i] >= 0 && a.q[i] < q_tokens, ErrorKind::invalid_argument,
            "query anchor " + std::to_string(a.q[i]) + " (head " + std::to_string(i / kq) + ") is outside [0, " +
                std::to_string(q_tokens) + ")");
  for (std::size_t i = 0; i < a.k.size(); ++i)
    require(a.k[i] >= 0 && a.k[i] < k_tokens, ErrorKind::invalid_argument,
            "key anchor " + std::to_string(a.k[i]) + " (head " + std::to_string(i / kk) + ") is outside [0, " +
                std::to_string(k_tokens) + ")");
}

namespace {

void check_side(const std::vector<std::int32_t>& labels, const std::vector<std::int32_t>& sizes,
                const std::vector<float>& centroids, std::int64_t heads, std::int64_t tokens, int clusters,
                std::int64_t dim, const char* side) {
  const std::string s(side);
  require(labels.size() == static_cast<std::size_t>(heads * tokens), ErrorKind::shape,
          s + " labels must hold heads x tokens = " + std::to_string(heads * tokens) + " entries, got " +
              std::to_string(labels.size()));
  require(sizes.size() == static_cast<std::size_t>(heads * clusters), ErrorKind::shape,
          s + " sizes must hold heads x clusters entries");
  require(centroids.size() == static_cast<std::size_t>(heads * clusters * dim), ErrorKind::shape,
          s + " centroids must hold heads x clusters x dim values");
  std::vector<std::int32_t> count(static_cast<std::size_t>(clusters));
  for (std::int64_t h = 0; h < heads; ++h) {
    std::fill(count.begin(), count.end(), 0);
    for (std::int64_t n = 0; n < tokens; ++n) {
      const std::int32_t l = labels[h * tokens + n];
      require(l >= 0 && l < clusters, ErrorKind::invalid_argument,
              s + " label " + std::to_string(l) + " at head " + std::to_string(h) + ", token " + std::to_string(n) +
                  " is outside [0, " + std::to_string(clusters) + ")");
      ++count[l];
    }
    for (int c = 0; c < clusters; ++c)
      require(count[c] == sizes[h * clusters + c], ErrorKind::invalid_argument,
              s + " size of cluster " + std::to_string(c) + " at head " + std::to_string(h) +
                  " disagrees with its labels");
  }
}

}  // namespace

void check_clustering(const Clustering& c) {
  require(c.heads >= 1 && c.q_tokens >= 1 && c.k_tokens >= 1 && c.dim >= 1 && c.kq >= 1 && c.kk >= 1,
          ErrorKind::shape, "a clustering needs positive heads, tokens, dim and cluster counts");
  check_side(c.q_labels, c.q_sizes, c.q_centroids, c.heads, c.q_tokens, c.kq, c.dim, "query");
  check_side(c.k_labels, c.k_sizes, c.k_centroids, c.heads, c.k_tokens, c.kk, c.dim, "key");
}

std::int64_t BlockLayout::kept_pairs() const noexcept {
  std::int64_t total = 0;
  for (std::int64_t h = 0; h < heads; ++h)
    for (int i = 0; i < kq; ++i) {
      const std::int64_t rows = q_offsets[h * (kq + 1) + i + 1] - q_offsets[h * (kq + 1) + i];
      const std::int64_t w = h * kq + i;
      for (std::int64_t r = range_ptr[w]; r < range_ptr[w + 1]; ++r) total += rows * (range_end[r] - range_begin[r]);
    }
  return total;
}

std::vector<std::int32_t> invert_permutation(const std::vector<std::int32_t>& perm) {
  std::vector<std::int32_t> inv(perm.size(), -1);
  for (std::size_t r = 0; r < perm.size(); ++r) {
    const std::int32_t p = perm[r];
    require(p >= 0 && static_cast<std::size_t>(p) < perm.size() && inv[p] < 0, ErrorKind::invalid_argument,
            "not a permutation: index " + std::to_string(p) + " at position " + std::to_string(r));
    inv[p] = static_cast<std::int32_t>(r);
  }
  return inv;
}

}  // namespace svoo
