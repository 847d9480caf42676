// Internal: host launchers of the CUDA backend's kernels. Every launcher is stream-ordered,
// allocates nothing and never synchronises with the host, so a whole plan can be captured in a
// CUDA graph. Arrays are contiguous, indexed per head as documented; "device" means every pointer
// argument is device memory. Launch errors are reported by the caller (cudaGetLastError).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace svoo::cuda::detail {

enum class Elem { bf16, f16 };  // element type of q, k, v on the device

// A [heads, tokens, dim] device view: element (h, n, d) at data + h*head_stride + n*row_stride + d.
struct RowsView {
  const void* data = nullptr;
  Elem elem = Elem::bf16;
  std::int64_t heads = 0, tokens = 0, dim = 0;
  std::int64_t head_stride = 0, row_stride = 0;  // in elements
};
struct MutableRowsView {
  void* data = nullptr;
  Elem elem = Elem::bf16;
  std::int64_t heads = 0, tokens = 0, dim = 0;
  std::int64_t head_stride = 0, row_stride = 0;
};

// ---- clustering (assign.cu, centroids.cu, small_gemm.cu, anchors.cu) ----

// labels[h, n] = argmax_j (x[h, n] . m[h, j] + (bias ? bias[h, j] : 0)), ties to the lowest j.
// m: [heads, clusters, dim] in x's element type (the projected centroids, rounded); bias fp32.
// dim must be 128. Tensor cores (mma.sync), fp32 accumulation, argmax fused (no scores stored).
void launch_assign(const RowsView& x, const void* m, const float* bias, int clusters, std::int32_t* labels,
                   cudaStream_t stream);
// launch_assign with an explicit tile variant instead of SVOO_ASSIGN_VARIANT's (tests, benchmarks):
// 0 (default) .. 2 mma.sync tiles, 3 wgmma, 4 pipelined persistent wgmma. A variant that cannot run
// here (3 and 4 need sm_90a code and a 9.0 device: assign_variant_runs) runs variant 0.
void launch_assign_variant(int variant, const RowsView& x, const void* m, const float* bias, int clusters,
                           std::int32_t* labels, cudaStream_t stream);
bool assign_variant_runs(int variant);

// ---- query-cluster alignment (assign.cu, cluster_align.cu; svoo::align_clusters) ----

constexpr int kAlignE = 8;                // candidate moves a row (ClusterConfig::align_candidates <= 8)
constexpr int kAlignMaxClusters = 4096;   // query clusters a head (shared-memory tables)
constexpr int kAlignMaxAlign = 256;       // ClusterConfig::query_align at most (as on the CPU)
// Per (head, cluster) from the sizes: takes[h, j] = 1 where size mod align > take_above (the
// pass's bar, svoo::alignment_take_above), rem[h, j] = size mod align where that is <= take_above
// (rows it sheds), else 0; offer_base [heads, clusters + 1] the exclusive scan of rem in each head
// (where each cluster's offered rows go), shed_base the exclusive scan of the shedding clusters'
// sizes (where their rows start among the head's shedding rows); the totals last.
void launch_alignment_roles(const std::int32_t* sizes, int heads, int clusters, int align, int take_above,
                            std::uint8_t* takes, std::int32_t* rem, std::int32_t* offer_base, std::int32_t* shed_base,
                            cudaStream_t stream);
// For each row of a shedding cluster (shed_base, offsets and perm: its compact index, the
// clustering's offsets and permutation): its e (<= kAlignE) best taking clusters by the score of
// launch_assign (x, m, bias as there), ties to the lowest j, and the costs (own score less theirs);
// -1 pads; entry q of token n at (h * tokens + n) * entry_stride + q (entry_stride kAlignE, or 1
// with e = 1: the first-candidate arrays [heads, tokens] that launch_align_offers reads). Other
// rows' entries (and entries e and up) untouched.
void launch_align_candidates(const RowsView& x, const void* m, const float* bias, int clusters,
                             const std::uint8_t* takes, const std::int32_t* shed_base, const std::int32_t* offsets,
                             const std::int32_t* perm, int e, std::int16_t* cand, float* cost, int entry_stride,
                             cudaStream_t stream);
// The same lists for the tokens of list + h * list_stride (slots entries a head, of which the first
// counts[h * (clusters + 1) + clusters] are read; -1 skipped), own clusters from labels [heads,
// tokens], written by list slot: entry q of slot d at (h * slots + d) * kAlignE + q, what
// launch_align_rounds reads (list = the rounds' scratch, list_stride = alignment_offered_stride,
// slots = alignment_offered_slots, counts = offer_base). Their first entries equal
// launch_align_candidates' bit for bit (the same products and folds).
void launch_align_candidates_listed(const RowsView& x, const void* m, const float* bias, int clusters,
                                    const std::uint8_t* takes, const std::int32_t* labels, const std::int32_t* list,
                                    std::int64_t list_stride, std::int64_t slots, const std::int32_t* counts, int e,
                                    std::int16_t* cand, float* cost, cudaStream_t stream);
// svoo::align_clusters in two launches. Offers: each shedding cluster's rem rows whose first
// candidate (first_cand/first_cost of token n at (h * tokens + n) * first_stride) costs least, in
// (cost, row) order (a block each), into the head's list in scratch at offer_base[j] (all -1 where
// a cluster cannot offer them); head h's list starts at (int32*)scratch + h *
// alignment_offered_stride(...), alignment_offered_slots(...) entries. Rounds: a block a head over
// those lists and the first e entries of their rows' candidate lists, by list slot [heads, slots,
// kAlignE] (launch_align_candidates_listed); labels [heads, tokens] rewritten in place.
// sizes/offsets/perm are the clustering's (rows of cluster j at perm[offsets[j] .. offsets[j +
// 1])); rem and offer_base from launch_alignment_roles. scratch: alignment_rounds_scratch_bytes.
std::size_t alignment_rounds_scratch_bytes(int heads, std::int64_t tokens, int clusters, int align);
std::int64_t alignment_offered_stride(std::int64_t tokens, int clusters, int align);
inline std::int64_t alignment_offered_slots(std::int64_t tokens, int clusters, int align) {
  return alignment_offered_stride(tokens, clusters, align) / 6;
}
void launch_align_offers(const std::int32_t* rem, const std::int32_t* offer_base, const std::int32_t* offsets,
                         const std::int32_t* perm, int heads, std::int64_t tokens, int clusters, int align,
                         const std::int16_t* first_cand, const float* first_cost, int first_stride, void* scratch,
                         cudaStream_t stream);
void launch_align_rounds(std::int32_t* labels, const std::int32_t* sizes, const std::int32_t* offer_base, int heads,
                         std::int64_t tokens, int clusters, int align, int take_above, int e,
                         const std::int16_t* cand, const float* cost, void* scratch, cudaStream_t stream);

// c[h] = alpha * a[h] * b[h]^T (+ beta c[h]) for per-head row-major fp32 matrices:
// a [heads, ma, k], b [heads, nb, k], c [heads, ma, nb]. fp32 accuracy on either path:
// tf32x3 (tensor cores, the default) or simt; automatic = the default unless SVOO_GEMM=simt.
enum class GemmPath { automatic, tf32x3, simt };
void launch_gemm_nt(int heads, int ma, int nb, int k, float alpha, const float* a, const float* b, float beta, float* c,
                    cudaStream_t stream, GemmPath path = GemmPath::automatic);
// c[h] = a[h] * b[h] for a [heads, ma, k], b [heads, k, nb], c [heads, ma, nb].
void launch_gemm_nn(int heads, int ma, int nb, int k, const float* a, const float* b, float* c, cudaStream_t stream,
                    GemmPath path = GemmPath::automatic);
// c[h] = a[h]^T * b[h] for a [heads, k, ma], b [heads, k, nb], c [heads, ma, nb] (a Gram matrix
// when a == b).
void launch_gemm_tn(int heads, int ma, int nb, int k, const float* a, const float* b, float* c, cudaStream_t stream,
                    GemmPath path = GemmPath::automatic);

// ---- scores, selection, layout (select.cu, layout.cu) ----

// In place: a [heads, kq, kk] holds the logits s*<Cq[i], Ck[j]>; becomes P (spec 2.2): the
// softmax over j of a + log k_sizes[h, j], an empty key cluster getting 0. One row per block.
void launch_block_softmax(float* a, const std::int32_t* k_sizes, int heads, int kq, int kk, cudaStream_t stream);

struct SelectParams {
  int rule = 0;  // 0 released, 1 paper
  double top_p = 0.9, floor_lo = 0.15, floor_hi = 0.2, theta = 0.1;
  double cap = -1;  // < 0: no cap
};
// keep[h, i, j] = 1 for the key clusters row (h, i) keeps (spec 2.3), exactly as
// svoo::select_row does on the CPU: order by P descending (ties: lower j first), top-p with the
// crossing element, floor floor(clip(profiled[h], lo, hi) * kk + 1e-9), optional cap, or the
// paper rule. profiled: [heads] fp64 on the device. kk <= 4096.
void launch_select(const float* scores, const double* profiled, const SelectParams& params, int heads, int kq, int kk,
                   std::uint8_t* keep, cudaStream_t stream);

// Layout ranges (spec 2.4), as svoo::build_layout: for row w = h*kq + i whose query cluster is
// non-empty, the kept non-empty key clusters in label order, adjacent ones (empty clusters between
// them have zero width) merged into half-open ranges of permuted key rows.
// Pass 1 writes range_count[w]; the caller scans it into range_ptr[0..heads*kq] (exclusive, with
// the total at the end); pass 2 writes range_begin/range_end at range_ptr[w].
void launch_count_ranges(const std::uint8_t* keep, const std::int32_t* q_sizes, const std::int32_t* k_offsets,
                         int heads, int kq, int kk, std::int64_t* range_count, cudaStream_t stream);
void launch_write_ranges(const std::uint8_t* keep, const std::int32_t* q_sizes, const std::int32_t* k_offsets,
                         int heads, int kq, int kk, const std::int64_t* range_ptr, std::int32_t* range_begin,
                         std::int32_t* range_end, cudaStream_t stream);

// ---- permutation (permute.cu) ----

// dst[h, r] = src[h, perm[h, r]] (gather into cluster order) when inverse is false;
// dst[h, perm[h, r]] = src[h, r] (scatter back to token order) when true. perm: [heads, tokens].
// src and dst have the same element type, heads, tokens and dim; 16-byte accesses when aligned.
void launch_permute_rows(const RowsView& src, const std::int32_t* perm, bool inverse, const MutableRowsView& dst,
                         cudaStream_t stream);

// ---- measures (recall.cu) ----

// recall[h] = mean over the nrows sampled query rows `rows` (token indices, [nrows], the same for
// every head) of the dense softmax mass (scale 1/sqrt(dim)) on the keys that the row's query
// cluster keeps: key n counts iff keep[h, q_labels[h, row], k_labels[h, n]]. fp32 logits, fp64
// sums. recall: [heads] fp64.
void launch_recall(const RowsView& q, const RowsView& k, const std::int32_t* q_labels, const std::int32_t* k_labels,
                   const std::uint8_t* keep, int kq, int kk, const std::int64_t* rows, int nrows, double* recall,
                   cudaStream_t stream);

}  // namespace svoo::cuda::detail
