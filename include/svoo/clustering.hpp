// Data of the online stage (spec 2): clusterings, block selections and the block layout the
// sparse attention consumes. Host-side, fp32/int32, all heads of one attention call.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace svoo {

enum class ClusterMethod {
  coclustering,  // bidirectional QK co-clustering (spec 2.1), the method
  kmeans,        // independent Euclidean k-means on Q and on K, the baseline
};
const char* cluster_method_name(ClusterMethod method) noexcept;

inline constexpr int kMaxAlignPasses = 8;  // ClusterConfig::align_passes at most

struct ClusterConfig {
  int kq = 256;        // query clusters per head
  int kk = 1024;       // key clusters per head
  int iterations = 2;  // T
  std::uint64_t seed = 0;
  ClusterMethod method = ClusterMethod::coclustering;
  // Query-cluster alignment, an option beyond the spec (0 = off, the spec's clustering): after the
  // last iteration, move a few query rows, each to one of its `align_candidates` best clusters
  // that have room, so that clusters hold multiples of `query_align` rows (see align_clusters).
  // The sparse kernel computes 128-row items of 64-row chunks, so a cluster's last partial item
  // is partly empty work; 128 is the kernel's item.
  int query_align = 0;
  int align_candidates = 8;
  // Passes of alignment (1 to kMaxAlignPasses), each on the sizes the one before left, with a
  // lower bar for taking rows (alignment_take_above: 64, 56, 48, 40, 32 at align 128): the first
  // leaves clusters that could not shed their remainder, and the later ones let the fuller of
  // those take from the rest. At Wan2.1-1.3B 480p (svoo_work_study, Kq 256) five passes leave
  // 4.8 % of the 128-row items' rows empty instead of 17.7 %, for 10.7 % of the rows moved
  // instead of 7.6 % and nearly the same attention recall (0.6836 against 0.6845 at 10 % block
  // density).
  int align_passes = 5;
};

// Initial centroids, as row indices into each head's own Q and K.
struct Anchors {
  std::int64_t heads = 0;
  int kq = 0, kk = 0;
  std::vector<std::int32_t> q;  // [heads, kq], each in [0, q_tokens)
  std::vector<std::int32_t> k;  // [heads, kk], each in [0, k_tokens)
};

// Anchors drawn uniformly with replacement, deterministic for (seed, head) on every platform.
Anchors draw_anchors(std::int64_t heads, std::int64_t q_tokens, std::int64_t k_tokens, int kq, int kk,
                     std::uint64_t seed);
// Throws Error(invalid_argument / shape) unless the anchors fit the call.
void check_anchors(const Anchors& anchors, std::int64_t heads, std::int64_t q_tokens, std::int64_t k_tokens,
                   int kq, int kk);

struct Clustering {
  std::int64_t heads = 0, q_tokens = 0, k_tokens = 0, dim = 0;
  int kq = 0, kk = 0;
  std::vector<std::int32_t> q_labels;  // [heads, q_tokens]
  std::vector<std::int32_t> k_labels;  // [heads, k_tokens]
  std::vector<float> q_centroids;      // [heads, kq, dim]
  std::vector<float> k_centroids;      // [heads, kk, dim]
  std::vector<std::int32_t> q_sizes;   // [heads, kq]
  std::vector<std::int32_t> k_sizes;   // [heads, kk]
};
// Throws Error(shape / invalid_argument) if the arrays do not fit the extents, a label is out of
// range, or sizes disagree with the labels.
void check_clustering(const Clustering& clustering);

enum class SelectionRule {
  released,  // top-p + per-head floor + optional cap (spec 2.3, the default)
  paper,     // keep ratio rho = min(R, d) if d > theta else max(R, d)
};
const char* selection_rule_name(SelectionRule rule) noexcept;

struct SelectionConfig {
  SelectionRule rule = SelectionRule::released;
  double top_p = 0.90;
  double floor_lo = 0.15;  // clip range of the per-head floor r_h
  double floor_hi = 0.20;
  std::optional<double> cap;  // c_h: keep at most max(1, floor(c_h * Kk)), never below the floor
  double theta = 0.10;        // paper rule threshold
};

// Which key clusters every (head, query cluster) keeps.
struct Selection {
  std::int64_t heads = 0;
  int kq = 0, kk = 0;
  std::vector<std::uint8_t> keep;  // [heads, kq, kk], 1 = kept
  bool kept(std::int64_t h, int i, int j) const noexcept {
    return keep[(static_cast<std::size_t>(h) * kq + i) * kk + j] != 0;
  }
};

// The layout at cluster granularity: permutations that make clusters contiguous and, per
// (head, query cluster), the kept key ranges in permuted key rows (adjacent kept clusters merged).
struct BlockLayout {
  std::int64_t heads = 0, q_tokens = 0, k_tokens = 0;
  int kq = 0, kk = 0;
  std::vector<std::int32_t> q_perm;     // [heads, q_tokens]: permuted row -> original token
  std::vector<std::int32_t> k_perm;     // [heads, k_tokens]
  std::vector<std::int32_t> q_offsets;  // [heads, kq + 1]: cluster c = rows [off[c], off[c+1])
  std::vector<std::int32_t> k_offsets;  // [heads, kk + 1]
  std::vector<std::int64_t> range_ptr;  // [heads * kq + 1]: CSR over (head, query cluster)
  std::vector<std::int32_t> range_begin, range_end;  // permuted key rows, half-open, non-empty
  std::int64_t kept_pairs() const noexcept;           // query rows x key rows over all heads
};

// Query-cluster alignment of one head (the option ClusterConfig::query_align), given each row's
// candidate moves. A cluster holding rem = size mod `align` rows with 0 < rem <= take_above sheds
// rem rows ("shedding"); one with rem > take_above takes up to align - rem rows ("taking"); see
// alignment_takers. take_above is the pass's bar (alignment_take_above: align / 2 in the first).
// `candidates` and `costs` [n, e]: for a row of a shedding cluster, its e best taking clusters
// by the assignment's score (best first, ties lowest index; -1 pads a short list) and what
// moving there costs (its own cluster's score less that one's); other rows' entries are ignored. Each shedding cluster offers the rem rows whose first taking candidate costs least (ties:
// lowest row); in rounds (at most e + 2) every offered row tries its next candidate that still
// has room, and every taking cluster accepts the cheapest offers (cost, then row) up to its room.
// A cluster that cannot place all its offered rows, or whose costs include NaN, keeps them all (a
// partial shed would only enlarge its empty chunk) and frees the room they held. align <= 256.
// Deterministic; the CUDA planner runs the same rounds. Returns the number of rows moved; sizes
// and centroids are the caller's to update.
std::int64_t align_clusters(std::span<std::int32_t> labels, int clusters, int align, int e,
                            std::span<const std::int32_t> candidates, std::span<const float> costs, int take_above);

// Per cluster, 1 where a cluster of that size takes rows (size mod align > take_above).
std::vector<std::uint8_t> alignment_takers(std::span<const std::int32_t> sizes, int align, int take_above);

// The bar of pass `pass` (0-based) of ClusterConfig::align_passes: align / 2 - pass * (align / 16)
// (64, 56, 48, 40, 32, 24, 16, 8 at align 128), at least 1.
int alignment_take_above(int align, int pass);

// Rows an alignment leaves empty: sum over clusters of ceil(size / align) * align - size.
std::int64_t empty_chunk_rows(std::span<const std::int32_t> sizes, int align);

// Inverse of a permutation given as perm[r] = original index: inv[perm[r]] = r.
std::vector<std::int32_t> invert_permutation(const std::vector<std::int32_t>& perm);

}  // namespace svoo
