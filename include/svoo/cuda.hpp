// The CUDA backend's planning half: co-clustering (or k-means), block scores, selection, the block
// layout and the permutations, on the device, batched over heads. Framework-free (device
// pointers in TensorViews, a CUDA stream); no CUDA header is needed to include this one.
//
// plan / run: the Planner allocates one workspace when it is built, sized for its PlanShape.
// After that, cluster(), select() and permute() only launch kernels on the given stream: they
// allocate nothing and never wait for the device, so they can be captured in a CUDA graph
// (select() with a device pointer of per-head densities; the overload taking host values copies
// them first and is not capturable). Results stay on the device (device()); the download_*
// functions copy them to the host for tests and tools, and do synchronise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "svoo/clustering.hpp"
#include "svoo/measures.hpp"
#include "svoo/tensor.hpp"

struct CUstream_st;

namespace svoo::cuda {

using Stream = CUstream_st*;

// True when this build has the CUDA backend and a CUDA device is visible.
bool available() noexcept;

// A new non-blocking stream on the current device, for callers that want one stream without their
// framework's pool (torch's first pool stream creates the whole pool: 70 MiB of device memory on
// an H200, run204). It lives until the process ends.
Stream create_stream();

struct PlanShape {
  std::int64_t heads = 0, q_tokens = 0, k_tokens = 0;
  std::int64_t dim = 128;  // the only head dim built
  int kq = 256, kk = 1024;
  // Query-cluster alignment (ClusterConfig::query_align): the largest alignment this plan reserves
  // scratch for (0: none; then cluster() refuses to align). Costs 6 bytes a query token and 72
  // bytes an offered-row slot (min(tokens, kq * query_align / 2)) a head: ~65 MB at 40 x 75,600.
  int query_align = 0;
};

// Device arrays of a plan (all device pointers, owned by the Planner).
struct DevicePlan {
  PlanShape shape;
  std::int32_t *q_labels, *k_labels;    // [heads, tokens]
  float *q_centroids, *k_centroids;     // [heads, clusters, dim]
  std::int32_t *q_sizes, *k_sizes;      // [heads, clusters]
  std::int32_t *q_offsets, *k_offsets;  // [heads, clusters + 1]
  std::int32_t *q_perm, *k_perm;        // [heads, tokens]: permuted row -> token
  float* scores;                        // [heads, kq, kk]
  std::uint8_t* keep;                   // [heads, kq, kk]
  std::int64_t* range_ptr;              // [heads * kq + 1]
  std::int32_t *range_begin, *range_end;
  // Work list of the attention kernel: one item per 64-row tile of a query cluster.
  std::int64_t* tile_ptr;               // [heads * kq + 1]; tile_ptr[heads * kq] = item count
  std::int32_t *item_w, *item_row;      // [item_capacity]: (head * kq + cluster, first permuted row)
  std::int64_t item_capacity;
  std::int32_t* work_counter;           // [1]: the Hopper attention's next work item (reset by each call)
};

class Planner {
 public:
  explicit Planner(const PlanShape& shape);  // on the current device
  ~Planner();
  Planner(const Planner&) = delete;
  Planner& operator=(const Planner&) = delete;

  const PlanShape& shape() const noexcept { return shape_; }
  std::size_t workspace_bytes() const noexcept { return bytes_; }
  DevicePlan device() const noexcept { return plan_; }

  // Clusters q and k (bf16 or f16 device views [heads, tokens, 128], rows 16-byte aligned) with
  // config.method, config.iterations; anchors are device int32 [heads, kq] and [heads, kk], or
  // null to draw the CPU's anchors for config.seed. config.kq/kk must match the shape.
  void cluster(const TensorView& q, const TensorView& k, const ClusterConfig& config, Stream stream = nullptr,
               const std::int32_t* q_anchors = nullptr, const std::int32_t* k_anchors = nullptr);
  // Block scores from the current centroids, selection with per-head profiled densities (device
  // fp64 [heads]), and the layout's key ranges.
  void select(const SelectionConfig& config, const double* profiled, Stream stream = nullptr);
  void select(const SelectionConfig& config, std::span<const double> profiled, Stream stream = nullptr);
  // Selection and ranges from the scores already in the workspace (see upload_scores).
  void select_from_scores(const SelectionConfig& config, const double* profiled, Stream stream = nullptr);

  // dst = rows of src in cluster order (keys == false: the query permutation, else the key one).
  void permute(const TensorView& src, bool keys, const TensorView& dst, Stream stream = nullptr) const;
  // dst[token] = src[permuted row], for outputs computed in query-cluster order.
  void unpermute(const TensorView& src, const TensorView& dst, Stream stream = nullptr) const;

  // Host copies (synchronise the stream).
  Clustering download_clustering(Stream stream = nullptr) const;
  std::vector<float> download_scores(Stream stream = nullptr) const;
  Selection download_selection(Stream stream = nullptr) const;
  BlockLayout download_layout(Stream stream = nullptr) const;
  // A clustering made elsewhere (the CPU, a cache): labels, centroids, sizes; perms and offsets are
  // rebuilt on the device.
  void upload_clustering(const Clustering& clustering, Stream stream = nullptr);
  void upload_scores(std::span<const float> scores, Stream stream = nullptr);

  // ---- Device-side plan state for callers that keep several plans of one shape (svoo.torch,
  // svoo.diffusers). Everything here is stream-ordered, allocates nothing and never waits for the
  // device, so it can be captured in a CUDA graph. Caller buffers are device memory.

  // Bytes of the clustering state: centroids, sizes, offsets and permutations (the labels follow
  // from the permutations and are rebuilt on load).
  std::size_t clustering_bytes() const noexcept;
  // Copies the clustering state to / from a caller buffer of clustering_bytes() (16-byte aligned):
  // one asynchronous copy (and, on load, one kernel that rebuilds the labels). The buffer is device
  // memory or page-locked host memory (a host cache of many slots costs the device nothing; the
  // copy then crosses the bus: 11 MB a Wan2.1-1.3B 480p slot); pageable host memory is refused,
  // since a copy from it would wait for the device. A loaded clustering serves select(),
  // sparse_attention, copy_plan and recall exactly as if cluster() had just produced it (the reuse
  // steps of spec 2.5 keep one such buffer per slot).
  void save_clustering(void* dst, Stream stream = nullptr) const;
  void load_clustering(const void* src, Stream stream = nullptr);
  // Copies the current labels ([heads, tokens] int32) and keep ([heads, kq, kk] uint8) into caller
  // buffers; a null pointer skips that array.
  void copy_plan(std::int32_t* q_labels, std::int32_t* k_labels, std::uint8_t* keep, Stream stream = nullptr) const;
  // A plan from caller labels and keep (the same layouts): sizes, offsets and permutations are
  // rebuilt from the labels (the stable sort cluster() uses, so cluster()'s own labels give its own
  // permutations back), then the key ranges and the attention work list from keep (non-zero =
  // kept). Labels outside [0, k) are clamped into range, not reported: a check would need a host
  // synchronisation. Centroids and scores are left as they were.
  void load_plan(const std::int32_t* q_labels, const std::int32_t* k_labels, const std::uint8_t* keep,
                 Stream stream = nullptr);

  // Attention recall per head (spec 3) of the current selection on the sampled query rows.
  std::vector<double> recall(const TensorView& q, const TensorView& k, std::span<const std::int64_t> rows,
                             Stream stream = nullptr);

 private:
  void build_ranges(Stream stream);
  PlanShape shape_;
  std::size_t bytes_ = 0;
  void* workspace_ = nullptr;
  DevicePlan plan_{};
  struct Scratch;
  Scratch* s_ = nullptr;
};

// run: variable-block sparse attention over the planner's current layout (spec 2.4). q, k, v and
// out are bf16/f16 device views [heads, tokens, 128] in the original token order (rows 16-byte
// aligned): queries are read and outputs written through the permutations, so nothing is
// permuted in memory. lse (optional, device fp32 [heads, q_tokens]) gets the natural log-sum-exp;
// a query whose cluster keeps no key gets a zero row and -inf. Needs kk <= 2048. Stream-ordered,
// no allocation, no host synchronisation. On Hopper it resets a work counter in the plan's
// workspace first (a memset node in a captured graph): two calls with the same plan must not run
// at the same time.
void sparse_attention(const TensorView& q, const TensorView& k, const TensorView& v, const Planner& plan,
                      const TensorView& out, float* lse = nullptr, Stream stream = nullptr);

// Dense attention through the same kernel (warm-up steps, dense layers).
void dense_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                     float* lse = nullptr, Stream stream = nullptr);


// ---- tau-density (spec 1) on the device (density_wgmma.cu, density.cu) ----
//
// No N x N matrix, no sort. On compute capability 9.0: a threshold search in three tensor-core
// passes over each row's scores (the mass below coarse, then finer thresholds in registers, then
// the scores of one one-octave window in 64 sub-bins; density_search.hpp). Elsewhere: two
// passes (a per-row octave histogram, then the crossing octave split into 128 sub-bins). Per row
// the result is a bracket [lo, hi] that contains the exact count c_i of the GPU's fp32
// probabilities and an estimate inside it; its width is a sub-bin's relative width (about 1 %) of
// the keys that share the crossing sub-bin, plus a few. Rows where a pass's rounded sums misplaced
// the crossing are counted as fallbacks (their bracket is wider). Where q or k holds a NaN or an
// infinity (in the rows measured), or rows[] names a token outside [0, q_tokens), every head's
// density and bound are NaN; the convenience overload below throws instead.
// The scores are fp32 sums of bf16/f16 products, so they differ from the CPU's BLAS sums in the
// last bits: compare with svoo::tau_density allowing the bound plus a few keys per row.

// Device outputs; all device pointers, only density is required.
struct DensityOutputs {
  double* density = nullptr;        // [heads]: mean over rows of the estimate / k_tokens
  double* bound = nullptr;          // [heads]: mean over rows of (hi - lo) / k_tokens
  std::int32_t* fallbacks = nullptr;  // [heads]: rows with a fallback bracket
  std::int32_t* counts = nullptr;   // [heads, nrows]: per-row estimate
  std::int32_t* count_lo = nullptr;  // [heads, nrows]
  std::int32_t* count_hi = nullptr;  // [heads, nrows]
};

// Workspace bytes for `heads` x `nrows` rows (nrows: the sampled rows, or q_tokens for all).
std::size_t tau_density_workspace_bytes(std::int64_t heads, std::int64_t nrows);

// q [heads, q_tokens, 128], k [heads, k_tokens, 128]: bf16 or f16 device views, one dtype, rows
// 16-byte aligned. rows: device int64 [nrows] query tokens (the same for every head), or null for
// every token (then nrows must be q_tokens). tau in (0, 1]; tau == 1 is the count of entries with
// p > 0. Stream-ordered, no allocation, no host synchronisation (capturable); the workspace must
// hold tau_density_workspace_bytes(heads, nrows) bytes, 256-byte aligned.
void tau_density(const TensorView& q, const TensorView& k, double tau, const std::int64_t* rows, std::int64_t nrows,
                 void* workspace, std::size_t workspace_bytes, const DensityOutputs& out, Stream stream = nullptr);

// Host results of a whole measurement.
struct DensityResult {
  std::vector<double> density, bound;      // [heads]
  std::vector<std::int32_t> fallbacks;     // [heads]
  std::vector<std::int64_t> rows;          // the query tokens measured
  std::vector<std::int32_t> counts, count_lo, count_hi;  // [heads, rows]
};
// Convenience: q and k on the device or on the host (bf16/f16; host tensors are copied to the
// device), rows as svoo::sample_rows draws them (the CPU's rows for the same sample). Allocates,
// synchronises, frees.
DensityResult tau_density(const TensorView& q, const TensorView& k, double tau, const RowSample& sample,
                          Stream stream = nullptr);

}  // namespace svoo::cuda
