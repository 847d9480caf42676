// Block-pair scores, the two selection rules and the block layout (spec 2.2 - 2.4). Pure policy:
// the same code defines the answer for every backend.
#include "svoo/selection.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "svoo/error.hpp"

namespace svoo {
namespace {

// floor(x * n) that is not fooled by 0.15 * 1000 = 149.99999999999997.
int floor_count(double fraction, int n) {
  return static_cast<int>(std::floor(fraction * n + 1e-9));
}

}  // namespace

void check_selection_config(const SelectionConfig& c) {
  require(c.top_p >= 0.0 && c.top_p <= 1.0, ErrorKind::invalid_argument,
          "top_p must be in [0, 1], got " + std::to_string(c.top_p));
  require(c.floor_lo >= 0.0 && c.floor_lo <= c.floor_hi && c.floor_hi <= 1.0, ErrorKind::invalid_argument,
          "floor clip must satisfy 0 <= lo <= hi <= 1, got [" + std::to_string(c.floor_lo) + ", " +
              std::to_string(c.floor_hi) + "]");
  require(!c.cap || (*c.cap >= 0.0 && *c.cap <= 1.0), ErrorKind::invalid_argument,
          "cap must be in [0, 1], got " + std::to_string(c.cap.value_or(0)));
  require(c.theta >= 0.0 && c.theta <= 1.0, ErrorKind::invalid_argument,
          "theta must be in [0, 1], got " + std::to_string(c.theta));
}


void block_scores_from_logits(float* a, const std::int32_t* k_sizes, int kq, int kk) {
  for (int i = 0; i < kq; ++i) {
    float* row = a + static_cast<std::size_t>(i) * kk;
    float m = -std::numeric_limits<float>::infinity();
    for (int j = 0; j < kk; ++j)
      if (k_sizes[j] > 0) m = std::max(m, row[j]);
    // softmax over a + log(sk): weights sk * exp(a - m); empty clusters weigh nothing.
    double total = 0.0;
    for (int j = 0; j < kk; ++j) {
      row[j] = k_sizes[j] > 0 ? static_cast<float>(k_sizes[j]) * std::exp(row[j] - m) : 0.0f;
      total += row[j];
    }
    const float inv = total > 0 ? static_cast<float>(1.0 / total) : 0.0f;
    for (int j = 0; j < kk; ++j) row[j] *= inv;
  }
}

std::vector<float> block_scores_head(const float* cq, const float* ck, const std::int32_t* k_sizes, int kq, int kk,
                                     std::int64_t dim) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  std::vector<float> p(static_cast<std::size_t>(kq) * kk);
  for (int i = 0; i < kq; ++i)
    for (int j = 0; j < kk; ++j) {
      float dot = 0.0f;
      for (std::int64_t d = 0; d < dim; ++d) dot += cq[i * dim + d] * ck[j * dim + d];
      p[static_cast<std::size_t>(i) * kk + j] = scale * dot;
    }
  block_scores_from_logits(p.data(), k_sizes, kq, kk);
  return p;
}

void select_row(const float* scores, int kk, const SelectionConfig& config, double profiled, std::uint8_t* keep) {
  std::vector<int> order(static_cast<std::size_t>(kk));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return scores[a] > scores[b]; });

  // top-p: keep order[r] if r == 0 or the mass before it is <= p (keeps the element crossing p).
  int n_topp = 1;
  double cum = scores[order[0]];
  for (int r = 1; r < kk; ++r) {
    if (cum > config.top_p) break;
    ++n_topp;
    cum += scores[order[r]];
  }

  int n = n_topp;
  if (config.rule == SelectionRule::released) {
    const double r_h = std::clamp(profiled, config.floor_lo, config.floor_hi);
    const int n_floor = floor_count(r_h, kk);
    n = std::max(n_topp, n_floor);
    if (config.cap) n = std::min(n, std::max(std::max(1, floor_count(*config.cap, kk)), n_floor));
  } else {
    const double r = static_cast<double>(n_topp) / kk;
    const double rho = profiled > config.theta ? std::min(r, profiled) : std::max(r, profiled);
    n = std::max(1, floor_count(rho, kk));
  }
  n = std::clamp(n, 1, kk);
  std::fill(keep, keep + kk, std::uint8_t{0});
  for (int r = 0; r < n; ++r) keep[order[r]] = 1;
}

Selection select_blocks(std::span<const float> scores, std::int64_t heads, int kq, int kk,
                        const SelectionConfig& config, std::span<const double> profiled) {
  check_selection_config(config);
  require(heads >= 1 && kq >= 1 && kk >= 1, ErrorKind::invalid_argument, "select_blocks needs heads, kq, kk >= 1");
  require(scores.size() == static_cast<std::size_t>(heads) * kq * kk, ErrorKind::shape,
          "scores must hold heads x kq x kk = " + std::to_string(heads * kq * kk) + " values, got " +
              std::to_string(scores.size()));
  require(profiled.size() == static_cast<std::size_t>(heads), ErrorKind::shape,
          "one profiled density per head is needed: " + std::to_string(heads) + ", got " +
              std::to_string(profiled.size()));
  for (std::size_t h = 0; h < profiled.size(); ++h)
    require(std::isfinite(profiled[h]) && profiled[h] >= 0.0 && profiled[h] <= 1.0, ErrorKind::invalid_argument,
            "profiled density of head " + std::to_string(h) + " must be in [0, 1], got " +
                std::to_string(profiled[h]));
  Selection s;
  s.heads = heads;
  s.kq = kq;
  s.kk = kk;
  s.keep.assign(static_cast<std::size_t>(heads) * kq * kk, 0);
  for (std::int64_t h = 0; h < heads; ++h)
    for (int i = 0; i < kq; ++i) {
      const std::size_t row = (static_cast<std::size_t>(h) * kq + i) * kk;
      select_row(scores.data() + row, kk, config, profiled[h], s.keep.data() + row);
    }
  return s;
}

Selection keep_all(std::int64_t heads, int kq, int kk) {
  Selection s;
  s.heads = heads;
  s.kq = kq;
  s.kk = kk;
  s.keep.assign(static_cast<std::size_t>(heads) * kq * kk, 1);
  return s;
}

namespace {

// Stable counting sort of one head's labels: perm[r] = token, offsets[c] = first row of cluster c.
void permute_side(const std::int32_t* labels, std::int64_t tokens, int clusters, std::int32_t* perm,
                  std::int32_t* offsets) {
  std::fill(offsets, offsets + clusters + 1, 0);
  for (std::int64_t n = 0; n < tokens; ++n) ++offsets[labels[n] + 1];
  for (int c = 0; c < clusters; ++c) offsets[c + 1] += offsets[c];
  std::vector<std::int32_t> cursor(offsets, offsets + clusters);
  for (std::int64_t n = 0; n < tokens; ++n) perm[cursor[labels[n]]++] = static_cast<std::int32_t>(n);
}

}  // namespace

BlockLayout build_layout(const Clustering& c, const Selection& s) {
  check_clustering(c);
  require(s.heads == c.heads && s.kq == c.kq && s.kk == c.kk &&
              s.keep.size() == static_cast<std::size_t>(c.heads) * c.kq * c.kk,
          ErrorKind::shape, "the selection does not match the clustering's heads and cluster counts");
  BlockLayout L;
  L.heads = c.heads;
  L.q_tokens = c.q_tokens;
  L.k_tokens = c.k_tokens;
  L.kq = c.kq;
  L.kk = c.kk;
  L.q_perm.resize(c.q_labels.size());
  L.k_perm.resize(c.k_labels.size());
  L.q_offsets.resize(static_cast<std::size_t>(c.heads) * (c.kq + 1));
  L.k_offsets.resize(static_cast<std::size_t>(c.heads) * (c.kk + 1));
  L.range_ptr.assign(static_cast<std::size_t>(c.heads) * c.kq + 1, 0);
  for (std::int64_t h = 0; h < c.heads; ++h) {
    permute_side(c.q_labels.data() + h * c.q_tokens, c.q_tokens, c.kq, L.q_perm.data() + h * c.q_tokens,
                 L.q_offsets.data() + h * (c.kq + 1));
    permute_side(c.k_labels.data() + h * c.k_tokens, c.k_tokens, c.kk, L.k_perm.data() + h * c.k_tokens,
                 L.k_offsets.data() + h * (c.kk + 1));
    const std::int32_t* koff = L.k_offsets.data() + h * (c.kk + 1);
    const std::int32_t* qoff = L.q_offsets.data() + h * (c.kq + 1);
    for (int i = 0; i < c.kq; ++i) {
      const std::int64_t w = h * c.kq + i;
      if (qoff[i + 1] > qoff[i]) {  // an empty query cluster needs no work
        // Walk key clusters in label order; kept neighbours (empty ones between them have zero
        // width) merge into one range.
        for (int j = 0; j < c.kk; ++j) {
          if (!s.kept(h, i, j) || koff[j + 1] == koff[j]) continue;
          if (static_cast<std::int64_t>(L.range_begin.size()) > L.range_ptr[w] && L.range_end.back() == koff[j]) {
            L.range_end.back() = koff[j + 1];
          } else {
            L.range_begin.push_back(koff[j]);
            L.range_end.push_back(koff[j + 1]);
          }
        }
      }
      L.range_ptr[w + 1] = static_cast<std::int64_t>(L.range_begin.size());
    }
  }
  return L;
}

}  // namespace svoo
