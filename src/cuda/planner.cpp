// The CUDA Planner: one workspace carved at construction, then stream-ordered launches only.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

#include "attention_kernel.cuh"
#include "cluster_ops.cuh"
#include "device_info.hpp"
#include "device_views.hpp"
#include "kernels.cuh"
#include "svoo/cuda.hpp"
#include "svoo/error.hpp"
#include "svoo/selection.hpp"

namespace svoo::cuda {
namespace {

using detail::Elem;
using detail::MutableRowsView;
using detail::RowsView;

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(ErrorKind::unsupported, std::string(what) + ": " + cudaGetErrorString(e));
}
void check_launch(const char* what) { check_cuda(cudaGetLastError(), what); }

cudaStream_t as_cuda(Stream s) { return reinterpret_cast<cudaStream_t>(s); }

// Carves aligned sub-buffers out of one allocation; a first pass with base == nullptr only sizes.
class Carver {
 public:
  explicit Carver(char* base) : base_(base) {}
  template <class T>
  T* take(std::size_t count) {
    offset_ = (offset_ + 255) / 256 * 256;
    T* p = base_ ? reinterpret_cast<T*>(base_ + offset_) : nullptr;
    offset_ += count * sizeof(T);
    return p;
  }
  std::size_t size() const { return offset_; }

 private:
  char* base_;
  std::size_t offset_ = 0;
};

// Validates a device view of the plan's shape for the kernels.
RowsView rows_of(const TensorView& t, const char* name, std::int64_t heads, std::int64_t tokens, std::int64_t dim,
                 const char* where) {
  const std::int64_t expect[3] = {heads, tokens, dim};
  return detail::device_rows(t, std::string(where) + ": " + name, expect);
}

template <class T>
void download(std::vector<T>& dst, const T* src, std::size_t count, cudaStream_t s) {
  dst.resize(count);
  if (count) check_cuda(cudaMemcpyAsync(dst.data(), src, count * sizeof(T), cudaMemcpyDeviceToHost, s), "download");
}

}  // namespace

struct Planner::Scratch {
  detail::SortScratch q_sort, k_sort;
  float* gram;       // the Gram matrix of the other side's centroids and its partial sums
  float* m;          // [heads, max(kq, kk), dim] projected centroids before their norm, fp32
  void* m_half;      // the same, rounded for the tensor cores
  float* bias;       // [heads, max(kq, kk)]
  std::int32_t *q_anchors, *k_anchors;
  double* profiled;  // [heads]
  std::int64_t* range_count;  // [heads * kq + 1]
  std::int64_t* tile_count;   // [heads * kq + 1]
  void* scan64_temp;
  std::size_t scan64_bytes;
  std::int64_t range_capacity;
  // The work list before it is ordered largest first within each head, and the sort's scratch
  // (only where `order`: the layer is large enough, see work_order.cu).
  bool order;
  std::int32_t *item_w_in, *item_row_in, *slot_in, *slot_out;
  std::uint64_t *key_in, *key_out;
  void* order_temp;
  std::size_t order_bytes;
  // Query-cluster alignment (only where shape.query_align > 1): each query row's first candidate
  // move ([heads, tokens]), the offered rows' whole lists ([heads, offered slots, kAlignE]), the
  // clusters' roles and the rounds' scratch (which holds the offered rows' list).
  std::int16_t *align_first_cand, *align_cand;
  float *align_first_cost, *align_cost;
  std::uint8_t* align_takes;
  std::int32_t* align_rem;
  std::int32_t *align_offer_base, *align_shed_base;  // [heads, kq + 1] each
  void* align_rounds;
};

bool available() noexcept {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

Stream create_stream() {
  cudaStream_t s = nullptr;
  check_cuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cuda::create_stream");
  return reinterpret_cast<Stream>(s);
}

Planner::Planner(const PlanShape& shape) : shape_(shape), s_(new Scratch{}) {
  // A constructor that throws runs no destructor: the scratch is released here until the end.
  std::unique_ptr<Scratch> owned(s_);
  require(shape.heads >= 1 && shape.q_tokens >= 1 && shape.k_tokens >= 1, ErrorKind::invalid_argument,
          "cuda::Planner needs at least one head, query and key");
  require(shape.dim == 128, ErrorKind::unsupported,
          "cuda::Planner is built for head_dim 128, got " + std::to_string(shape.dim));
  require(shape.kq >= 1 && shape.kk >= 1 && shape.kk <= 4096 && shape.kq <= 65536, ErrorKind::invalid_argument,
          "cuda::Planner needs 1 <= kq and 1 <= kk <= 4096, got kq " + std::to_string(shape.kq) + ", kk " +
              std::to_string(shape.kk));
  require(shape.query_align >= 0 && shape.query_align <= detail::kAlignMaxAlign &&
              (shape.query_align < 2 || (shape.kq <= detail::kAlignMaxClusters && shape.kq <= 32767)),
          ErrorKind::invalid_argument,
          "cuda::Planner: query_align must be in [0, 256], and aligning needs kq <= " +
              std::to_string(detail::kAlignMaxClusters) + ", got query_align " + std::to_string(shape.query_align) +
              ", kq " + std::to_string(shape.kq));
  const std::int64_t H = shape.heads, Nq = shape.q_tokens, Nk = shape.k_tokens, D = shape.dim;
  require(H * std::max(Nq, Nk) < (std::int64_t{1} << 31) && H * shape.kq * std::int64_t{shape.kk} < (std::int64_t{1} << 31),
          ErrorKind::invalid_argument, "cuda::Planner: heads x tokens and heads x kq x kk must stay below 2^31");
  const int kmax = std::max(shape.kq, shape.kk);
  // The general label sort's scratch (3 ints a token and side, and cub's temporary storage:
  // ~75 MB at 40 x 75,600) only where that path will run.
  const bool general_q = detail::sort_needs_general_scratch(H, Nq, shape.kq);
  const bool general_k = detail::sort_needs_general_scratch(H, Nk, shape.kk);
  const std::size_t sort_bytes = std::max(general_q ? detail::sort_temp_bytes(H, Nq, shape.kq) : 0,
                                          general_k ? detail::sort_temp_bytes(H, Nk, shape.kk) : 0);
  s_->range_capacity = H * shape.kq * ((shape.kk + 1) / 2);
  s_->scan64_bytes = detail::scan64_temp_bytes(H * shape.kq + 1);
  const std::int64_t item_capacity = H * ((Nq + detail::kAttnRowsMin - 1) / detail::kAttnRowsMin + shape.kq);
  s_->order = detail::order_items_largest_first();
  s_->order_bytes = s_->order ? detail::order_items_temp_bytes(item_capacity, static_cast<int>(H)) : 0;

  auto carve = [&](Carver& c) {
    DevicePlan& p = plan_;
    p.shape = shape;
    // The clustering state (saved / loaded for the reuse steps) is q_centroids .. k_perm; the
    // labels follow it, outside: load_clustering rebuilds them from the permutations.
    p.q_centroids = c.take<float>(H * shape.kq * D);
    p.k_centroids = c.take<float>(H * shape.kk * D);
    p.q_sizes = c.take<std::int32_t>(H * shape.kq);
    p.k_sizes = c.take<std::int32_t>(H * shape.kk);
    p.q_offsets = c.take<std::int32_t>(H * (shape.kq + 1));
    p.k_offsets = c.take<std::int32_t>(H * (shape.kk + 1));
    p.q_perm = c.take<std::int32_t>(H * Nq);
    p.k_perm = c.take<std::int32_t>(H * Nk);
    p.q_labels = c.take<std::int32_t>(H * Nq);
    p.k_labels = c.take<std::int32_t>(H * Nk);
    p.scores = c.take<float>(H * shape.kq * shape.kk);
    p.keep = c.take<std::uint8_t>(H * shape.kq * shape.kk);
    p.range_ptr = c.take<std::int64_t>(H * shape.kq + 1);
    p.range_begin = c.take<std::int32_t>(s_->range_capacity);
    p.range_end = c.take<std::int32_t>(s_->range_capacity);
    p.item_capacity = item_capacity;
    p.tile_ptr = c.take<std::int64_t>(H * shape.kq + 1);
    p.item_w = c.take<std::int32_t>(p.item_capacity);
    p.item_row = c.take<std::int32_t>(p.item_capacity);
    p.work_counter = c.take<std::int32_t>(1);
    Scratch& s = *s_;
    for (detail::SortScratch* ss : {&s.q_sort, &s.k_sort}) {
      const bool q_side = ss == &s.q_sort;
      const std::int64_t n = q_side ? Nq : Nk;
      const bool general = q_side ? general_q : general_k;
      ss->keys_in = general ? c.take<std::int32_t>(H * n) : nullptr;
      ss->keys_out = general ? c.take<std::int32_t>(H * n) : nullptr;
      ss->vals_in = general ? c.take<std::int32_t>(H * n) : nullptr;
      const std::int64_t counts = detail::tile_sort_count_items(H, n, q_side ? shape.kq : shape.kk);
      ss->counts = counts > 0 ? c.take<std::int32_t>(counts) : nullptr;
    }
    void* temp = sort_bytes > 0 ? c.take<char>(sort_bytes) : nullptr;
    s.q_sort.temp = general_q ? temp : nullptr;
    s.k_sort.temp = general_k ? temp : nullptr;
    s.q_sort.temp_bytes = s.k_sort.temp_bytes = sort_bytes;
    s.gram = c.take<float>(std::max(detail::project_gram_floats(static_cast<int>(H), shape.kq, static_cast<int>(D)),
                                    detail::project_gram_floats(static_cast<int>(H), shape.kk, static_cast<int>(D))));
    s.m = c.take<float>(H * kmax * D);
    s.m_half = c.take<std::uint16_t>(H * kmax * D);
    s.bias = c.take<float>(H * kmax);
    s.q_anchors = c.take<std::int32_t>(H * shape.kq);
    s.k_anchors = c.take<std::int32_t>(H * shape.kk);
    s.profiled = c.take<double>(H);
    s.range_count = c.take<std::int64_t>(H * shape.kq + 1);
    s.tile_count = c.take<std::int64_t>(H * shape.kq + 1);
    s.scan64_temp = c.take<char>(s.scan64_bytes);
    const std::int64_t order_items = s.order ? item_capacity : 0;
    for (std::int32_t** a : {&s.item_w_in, &s.item_row_in, &s.slot_in, &s.slot_out}) *a = c.take<std::int32_t>(order_items);
    s.key_in = c.take<std::uint64_t>(order_items);
    s.key_out = c.take<std::uint64_t>(order_items);
    s.order_temp = c.take<char>(s.order_bytes);
    const bool align = shape.query_align > 1;
    // First candidates of every query row; whole lists only for the offered rows (by list slot).
    const std::int64_t slots = align ? detail::alignment_offered_slots(Nq, shape.kq, shape.query_align) : 0;
    s.align_first_cand = c.take<std::int16_t>(align ? H * Nq : 0);
    s.align_first_cost = c.take<float>(align ? H * Nq : 0);
    s.align_cand = c.take<std::int16_t>(H * slots * detail::kAlignE);
    s.align_cost = c.take<float>(H * slots * detail::kAlignE);
    s.align_takes = c.take<std::uint8_t>(align ? H * shape.kq : 0);
    s.align_rem = c.take<std::int32_t>(align ? H * shape.kq : 0);
    s.align_offer_base = c.take<std::int32_t>(align ? H * (shape.kq + 1) : 0);
    s.align_shed_base = c.take<std::int32_t>(align ? H * (shape.kq + 1) : 0);
    s.align_rounds = c.take<char>(
        align ? detail::alignment_rounds_scratch_bytes(static_cast<int>(H), Nq, shape.kq, shape.query_align) : 0);
  };
  Carver sizing(nullptr);
  carve(sizing);
  bytes_ = sizing.size();
  detail::require_supported_device("cuda::Planner");  // after the argument checks: those need no device
  check_cuda(cudaMalloc(&workspace_, bytes_), "cuda::Planner: allocating the workspace");
  Carver real(static_cast<char*>(workspace_));
  carve(real);
  owned.release();
}

Planner::~Planner() {
  if (workspace_) cudaFree(workspace_);
  delete s_;
}

void Planner::cluster(const TensorView& q, const TensorView& k, const ClusterConfig& config, Stream stream,
                      const std::int32_t* q_anchors, const std::int32_t* k_anchors) {
  const PlanShape& sh = shape_;
  const RowsView qv = rows_of(q, "q", sh.heads, sh.q_tokens, sh.dim, "cuda::Planner::cluster");
  const RowsView kv = rows_of(k, "k", sh.heads, sh.k_tokens, sh.dim, "cuda::Planner::cluster");
  require(qv.elem == kv.elem, ErrorKind::dtype, "cuda::Planner::cluster: q and k must share one dtype");
  require(config.kq == sh.kq && config.kk == sh.kk, ErrorKind::invalid_argument,
          "cuda::Planner::cluster: the config's kq/kk (" + std::to_string(config.kq) + ", " + std::to_string(config.kk) +
              ") differ from the plan's (" + std::to_string(sh.kq) + ", " + std::to_string(sh.kk) + ")");
  require(config.iterations >= 1, ErrorKind::invalid_argument, "co-clustering needs at least one iteration");
  require(config.query_align < 2 || (config.query_align <= sh.query_align && config.align_candidates >= 1 &&
                                      config.align_candidates <= detail::kAlignE && config.align_passes >= 1 &&
                                      config.align_passes <= kMaxAlignPasses),
          ErrorKind::invalid_argument,
          "cuda::Planner::cluster: query alignment " + std::to_string(config.query_align) + " with " +
              std::to_string(config.align_candidates) + " candidates and " + std::to_string(config.align_passes) +
              " passes needs a plan shape with query_align >= it (this one reserves " + std::to_string(sh.query_align) +
              "), 1 to " + std::to_string(detail::kAlignE) + " candidates and 1 to " +
              std::to_string(kMaxAlignPasses) + " passes");
  require((q_anchors == nullptr) == (k_anchors == nullptr), ErrorKind::invalid_argument,
          "cuda::Planner::cluster: give both anchor arrays or neither");
  const cudaStream_t st = as_cuda(stream);
  const int H = static_cast<int>(sh.heads), kq = sh.kq, kk = sh.kk, D = static_cast<int>(sh.dim);
  if (!q_anchors) {
    detail::launch_draw_anchors(H, sh.q_tokens, sh.k_tokens, kq, kk, config.seed, s_->q_anchors, s_->k_anchors, st);
    q_anchors = s_->q_anchors;
    k_anchors = s_->k_anchors;
  }
  detail::launch_gather_centroids(qv, q_anchors, kq, plan_.q_centroids, st);
  detail::launch_gather_centroids(kv, k_anchors, kk, plan_.k_centroids, st);
  // One side's step: project (or bias), assign, update. `own` is the side being assigned.
  auto step = [&](const RowsView& x, int own_k, float* own_c, const float* other_c, int other_k,
                  std::int32_t* labels, std::int32_t* sizes, std::int32_t* offsets, std::int32_t* perm,
                  const detail::SortScratch& sort) {
    const float* bias = nullptr;
    if (config.method == ClusterMethod::coclustering) {
      detail::launch_project_rows(H, own_k, other_k, D, own_c, other_c, s_->gram, s_->m, x.elem, s_->m_half, st);
    } else {
      detail::launch_half_norm_bias(own_c, static_cast<std::int64_t>(H) * own_k, D, s_->bias, st);
      detail::launch_round(own_c, static_cast<std::int64_t>(H) * own_k * D, x.elem, s_->m_half, st);
      bias = s_->bias;
    }
    detail::launch_assign(x, s_->m_half, bias, own_k, labels, st);
    detail::launch_update_side(&x, labels, H, x.tokens, own_k, sort, sizes, offsets, perm, own_c, st);
  };
  for (int it = 0; it < config.iterations; ++it) {
    step(kv, kk, plan_.k_centroids, plan_.q_centroids, kq, plan_.k_labels, plan_.k_sizes, plan_.k_offsets,
         plan_.k_perm, s_->k_sort);
    step(qv, kq, plan_.q_centroids, plan_.k_centroids, kk, plan_.q_labels, plan_.q_sizes, plan_.q_offsets,
         plan_.q_perm, s_->q_sort);
  }
  if (config.query_align > 1) {
    // Alignment (svoo::align_clusters): the queries' scores against the final centroids, as the
    // next assignment would compute them, then the passes below.
    const float* bias = nullptr;
    if (config.method == ClusterMethod::coclustering) {
      detail::launch_project_rows(H, kq, kk, D, plan_.q_centroids, plan_.k_centroids, s_->gram, s_->m, qv.elem,
                                  s_->m_half, st);
    } else {
      detail::launch_half_norm_bias(plan_.q_centroids, static_cast<std::int64_t>(H) * kq, D, s_->bias, st);
      detail::launch_round(plan_.q_centroids, static_cast<std::int64_t>(H) * kq * D, qv.elem, s_->m_half, st);
      bias = s_->bias;
    }
    // Per pass (svoo::alignment_take_above), on the sizes the pass before left, against the same
    // scores: the roles, every shedding row's first candidate (what the offers rank), the offers,
    // then the whole candidate lists of the offered rows only (3-8 % of the rows; the lists of
    // every shedding row cost 6.5 ms at Wan2.1-14B 720p, run165), the rounds, and the query side's
    // sizes, offsets, permutation and centroids.
    for (int pass = 0; pass < config.align_passes; ++pass) {
      const int take_above = alignment_take_above(config.query_align, pass);
      detail::launch_alignment_roles(plan_.q_sizes, H, kq, config.query_align, take_above, s_->align_takes,
                                     s_->align_rem, s_->align_offer_base, s_->align_shed_base, st);
      detail::launch_align_candidates(qv, s_->m_half, bias, kq, s_->align_takes, s_->align_shed_base, plan_.q_offsets,
                                      plan_.q_perm, 1, s_->align_first_cand, s_->align_first_cost, 1, st);
      detail::launch_align_offers(s_->align_rem, s_->align_offer_base, plan_.q_offsets, plan_.q_perm, H, sh.q_tokens,
                                  kq, config.query_align, s_->align_first_cand, s_->align_first_cost, 1,
                                  s_->align_rounds, st);
      detail::launch_align_candidates_listed(
          qv, s_->m_half, bias, kq, s_->align_takes, plan_.q_labels, static_cast<const std::int32_t*>(s_->align_rounds),
          detail::alignment_offered_stride(sh.q_tokens, kq, config.query_align),
          detail::alignment_offered_slots(sh.q_tokens, kq, config.query_align), s_->align_offer_base,
          config.align_candidates, s_->align_cand, s_->align_cost, st);
      detail::launch_align_rounds(plan_.q_labels, plan_.q_sizes, s_->align_offer_base, H, sh.q_tokens, kq,
                                  config.query_align, take_above, config.align_candidates, s_->align_cand,
                                  s_->align_cost, s_->align_rounds, st);
      detail::launch_update_side(&qv, plan_.q_labels, H, qv.tokens, kq, s_->q_sort, plan_.q_sizes, plan_.q_offsets,
                                 plan_.q_perm, plan_.q_centroids, st);
    }
  }
  check_launch("cuda::Planner::cluster");
}

void Planner::select(const SelectionConfig& config, const double* profiled, Stream stream) {
  const cudaStream_t st = as_cuda(stream);
  const PlanShape& sh = shape_;
  detail::launch_gemm_nt(static_cast<int>(sh.heads), sh.kq, sh.kk, static_cast<int>(sh.dim),
                         1.0f / std::sqrt(static_cast<float>(sh.dim)), plan_.q_centroids, plan_.k_centroids, 0.0f,
                         plan_.scores, st);
  detail::launch_block_softmax(plan_.scores, plan_.k_sizes, static_cast<int>(sh.heads), sh.kq, sh.kk, st);
  select_from_scores(config, profiled, stream);
}

void Planner::select(const SelectionConfig& config, std::span<const double> profiled, Stream stream) {
  require(profiled.size() == static_cast<std::size_t>(shape_.heads), ErrorKind::shape,
          "cuda::Planner::select: one profiled density per head is needed: " + std::to_string(shape_.heads) +
              ", got " + std::to_string(profiled.size()));
  for (std::size_t h = 0; h < profiled.size(); ++h)
    require(std::isfinite(profiled[h]) && profiled[h] >= 0.0 && profiled[h] <= 1.0, ErrorKind::invalid_argument,
            "profiled density of head " + std::to_string(h) + " must be in [0, 1], got " + std::to_string(profiled[h]));
  check_cuda(cudaMemcpyAsync(s_->profiled, profiled.data(), profiled.size() * sizeof(double), cudaMemcpyHostToDevice,
                             as_cuda(stream)),
             "cuda::Planner::select: copying densities");
  select(config, s_->profiled, stream);
}

void Planner::select_from_scores(const SelectionConfig& config, const double* profiled, Stream stream) {
  check_selection_config(config);
  detail::SelectParams p;
  p.rule = config.rule == SelectionRule::paper ? 1 : 0;
  p.top_p = config.top_p, p.floor_lo = config.floor_lo, p.floor_hi = config.floor_hi, p.theta = config.theta;
  p.cap = config.cap ? *config.cap : -1.0;
  detail::launch_select(plan_.scores, profiled, p, static_cast<int>(shape_.heads), shape_.kq, shape_.kk, plan_.keep,
                        as_cuda(stream));
  build_ranges(stream);
  check_launch("cuda::Planner::select");
}

void Planner::build_ranges(Stream stream) {
  const cudaStream_t st = as_cuda(stream);
  const int H = static_cast<int>(shape_.heads);
  const std::int64_t rows = static_cast<std::int64_t>(H) * shape_.kq;
  cudaMemsetAsync(s_->range_count, 0, sizeof(std::int64_t) * (rows + 1), st);
  detail::launch_count_ranges(plan_.keep, plan_.q_sizes, plan_.k_offsets, H, shape_.kq, shape_.kk, s_->range_count, st);
  detail::launch_scan64(s_->range_count, rows, plan_.range_ptr, s_->scan64_temp, s_->scan64_bytes, st);
  detail::launch_write_ranges(plan_.keep, plan_.q_sizes, plan_.k_offsets, H, shape_.kq, shape_.kk, plan_.range_ptr,
                              plan_.range_begin, plan_.range_end, st);
  // The attention kernel's work list (depends only on the query clusters, cheap to rebuild).
  cudaMemsetAsync(s_->tile_count, 0, sizeof(std::int64_t) * (rows + 1), st);
  detail::launch_count_tiles(plan_.q_sizes, H, shape_.kq, s_->tile_count, st);
  detail::launch_scan64(s_->tile_count, rows, plan_.tile_ptr, s_->scan64_temp, s_->scan64_bytes, st);
  const bool order = s_->order;
  detail::launch_write_tiles(plan_.q_sizes, plan_.q_offsets, H, shape_.kq, plan_.tile_ptr,
                             order ? s_->item_w_in : plan_.item_w, order ? s_->item_row_in : plan_.item_row, st);
  if (order) {
    detail::ItemOrderArgs o;
    o.w_in = s_->item_w_in, o.row_in = s_->item_row_in, o.item_count = plan_.tile_ptr + rows;
    o.capacity = plan_.item_capacity;
    o.q_sizes = plan_.q_sizes, o.q_offsets = plan_.q_offsets;
    o.range_ptr = plan_.range_ptr, o.range_begin = plan_.range_begin, o.range_end = plan_.range_end;
    o.heads = H, o.kq = shape_.kq;
    o.key_in = s_->key_in, o.key_out = s_->key_out, o.slot_in = s_->slot_in, o.slot_out = s_->slot_out;
    o.temp = s_->order_temp, o.temp_bytes = s_->order_bytes;
    o.item_w = plan_.item_w, o.item_row = plan_.item_row;
    detail::launch_order_items(o, st);
  }
}

namespace {

detail::AttentionArgs attention_args(const TensorView& q, const TensorView& k, const TensorView& v,
                                     const TensorView& out, const PlanShape& sh, const char* where) {
  detail::AttentionArgs a;
  a.q = rows_of(q, "q", sh.heads, sh.q_tokens, sh.dim, where);
  a.k = rows_of(k, "k", sh.heads, sh.k_tokens, sh.dim, where);
  a.v = rows_of(v, "v", sh.heads, sh.k_tokens, sh.dim, where);
  const RowsView o = rows_of(out, "out", sh.heads, sh.q_tokens, sh.dim, where);
  require(a.k.elem == a.q.elem && a.v.elem == a.q.elem && o.elem == a.q.elem, ErrorKind::dtype,
          std::string(where) + ": q, k, v and out must share one dtype");
  a.out = MutableRowsView{out.data, o.elem, o.heads, o.tokens, o.dim, o.head_stride, o.row_stride};
  return a;
}

}  // namespace

void sparse_attention(const TensorView& q, const TensorView& k, const TensorView& v, const Planner& plan,
                      const TensorView& out, float* lse, Stream stream) {
  const PlanShape& sh = plan.shape();
  require(sh.kk <= 2048, ErrorKind::unsupported,
          "cuda::sparse_attention supports kk <= 2048 (at most 1024 key ranges per query cluster), got " +
              std::to_string(sh.kk));
  detail::AttentionArgs a = attention_args(q, k, v, out, sh, "cuda::sparse_attention");
  const DevicePlan p = plan.device();
  a.lse = lse;
  a.q_perm = p.q_perm, a.k_perm = p.k_perm, a.q_offsets = p.q_offsets;
  a.range_ptr = p.range_ptr, a.range_begin = p.range_begin, a.range_end = p.range_end;
  a.item_w = p.item_w, a.item_row = p.item_row, a.item_count = p.tile_ptr + sh.heads * sh.kq;
  a.item_capacity = p.item_capacity;
  a.work_counter = p.work_counter;
  a.kq = sh.kq;
  detail::launch_attention(a, as_cuda(stream));
  check_launch("cuda::sparse_attention");
}

void dense_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out, float* lse,
                     Stream stream) {
  require(q.rank == 3 && k.rank == 3, ErrorKind::shape, "cuda::dense_attention: q and k must be [heads, tokens, dim]");
  const PlanShape sh{q.shape[0], q.shape[1], k.shape[1], q.shape[2], 1, 1};
  require(sh.dim == 128, ErrorKind::unsupported, "cuda::dense_attention is built for head_dim 128");
  detail::AttentionArgs a = attention_args(q, k, v, out, sh, "cuda::dense_attention");
  a.lse = lse;
  detail::require_supported_device("cuda::dense_attention");
  detail::launch_attention(a, as_cuda(stream));
  check_launch("cuda::dense_attention");
}

void Planner::permute(const TensorView& src, bool keys, const TensorView& dst, Stream stream) const {
  const std::int64_t n = keys ? shape_.k_tokens : shape_.q_tokens;
  const RowsView s = rows_of(src, "src", shape_.heads, n, shape_.dim, "cuda::Planner::permute");
  const RowsView d = rows_of(dst, "dst", shape_.heads, n, shape_.dim, "cuda::Planner::permute");
  require(s.elem == d.elem, ErrorKind::dtype, "cuda::Planner::permute: src and dst must share one dtype");
  MutableRowsView md{dst.data, d.elem, d.heads, d.tokens, d.dim, d.head_stride, d.row_stride};
  detail::launch_permute_rows(s, keys ? plan_.k_perm : plan_.q_perm, false, md, as_cuda(stream));
  check_launch("cuda::Planner::permute");
}

void Planner::unpermute(const TensorView& src, const TensorView& dst, Stream stream) const {
  const RowsView s = rows_of(src, "src", shape_.heads, shape_.q_tokens, shape_.dim, "cuda::Planner::unpermute");
  const RowsView d = rows_of(dst, "dst", shape_.heads, shape_.q_tokens, shape_.dim, "cuda::Planner::unpermute");
  require(s.elem == d.elem, ErrorKind::dtype, "cuda::Planner::unpermute: src and dst must share one dtype");
  MutableRowsView md{dst.data, d.elem, d.heads, d.tokens, d.dim, d.head_stride, d.row_stride};
  detail::launch_permute_rows(s, plan_.q_perm, true, md, as_cuda(stream));
  check_launch("cuda::Planner::unpermute");
}

Clustering Planner::download_clustering(Stream stream) const {
  const cudaStream_t st = as_cuda(stream);
  const PlanShape& sh = shape_;
  Clustering c;
  c.heads = sh.heads, c.q_tokens = sh.q_tokens, c.k_tokens = sh.k_tokens, c.dim = sh.dim, c.kq = sh.kq, c.kk = sh.kk;
  download(c.q_labels, plan_.q_labels, sh.heads * sh.q_tokens, st);
  download(c.k_labels, plan_.k_labels, sh.heads * sh.k_tokens, st);
  download(c.q_centroids, plan_.q_centroids, sh.heads * sh.kq * sh.dim, st);
  download(c.k_centroids, plan_.k_centroids, sh.heads * sh.kk * sh.dim, st);
  download(c.q_sizes, plan_.q_sizes, sh.heads * sh.kq, st);
  download(c.k_sizes, plan_.k_sizes, sh.heads * sh.kk, st);
  check_cuda(cudaStreamSynchronize(st), "cuda::Planner::download_clustering");
  return c;
}

std::vector<float> Planner::download_scores(Stream stream) const {
  std::vector<float> s;
  download(s, plan_.scores, shape_.heads * shape_.kq * shape_.kk, as_cuda(stream));
  check_cuda(cudaStreamSynchronize(as_cuda(stream)), "cuda::Planner::download_scores");
  return s;
}

Selection Planner::download_selection(Stream stream) const {
  Selection s;
  s.heads = shape_.heads, s.kq = shape_.kq, s.kk = shape_.kk;
  download(s.keep, plan_.keep, shape_.heads * shape_.kq * shape_.kk, as_cuda(stream));
  check_cuda(cudaStreamSynchronize(as_cuda(stream)), "cuda::Planner::download_selection");
  return s;
}

BlockLayout Planner::download_layout(Stream stream) const {
  const cudaStream_t st = as_cuda(stream);
  const PlanShape& sh = shape_;
  BlockLayout L;
  L.heads = sh.heads, L.q_tokens = sh.q_tokens, L.k_tokens = sh.k_tokens, L.kq = sh.kq, L.kk = sh.kk;
  download(L.q_perm, plan_.q_perm, sh.heads * sh.q_tokens, st);
  download(L.k_perm, plan_.k_perm, sh.heads * sh.k_tokens, st);
  download(L.q_offsets, plan_.q_offsets, sh.heads * (sh.kq + 1), st);
  download(L.k_offsets, plan_.k_offsets, sh.heads * (sh.kk + 1), st);
  download(L.range_ptr, plan_.range_ptr, sh.heads * sh.kq + 1, st);
  check_cuda(cudaStreamSynchronize(st), "cuda::Planner::download_layout");
  const std::int64_t total = L.range_ptr.back();
  require(total >= 0 && total <= s_->range_capacity, ErrorKind::unsupported,
          "cuda::Planner: range count " + std::to_string(total) + " exceeds the workspace");
  download(L.range_begin, plan_.range_begin, total, st);
  download(L.range_end, plan_.range_end, total, st);
  check_cuda(cudaStreamSynchronize(st), "cuda::Planner::download_layout");
  return L;
}

void Planner::upload_clustering(const Clustering& c, Stream stream) {
  check_clustering(c);
  const PlanShape& sh = shape_;
  require(c.heads == sh.heads && c.q_tokens == sh.q_tokens && c.k_tokens == sh.k_tokens && c.dim == sh.dim &&
              c.kq == sh.kq && c.kk == sh.kk,
          ErrorKind::shape, "cuda::Planner::upload_clustering: the clustering does not match the plan's shape");
  const cudaStream_t st = as_cuda(stream);
  auto up = [&](auto* dst, const auto& src) {
    check_cuda(cudaMemcpyAsync(dst, src.data(), src.size() * sizeof(src[0]), cudaMemcpyHostToDevice, st),
               "cuda::Planner::upload_clustering");
  };
  up(plan_.q_labels, c.q_labels);
  up(plan_.k_labels, c.k_labels);
  up(plan_.q_centroids, c.q_centroids);
  up(plan_.k_centroids, c.k_centroids);
  detail::launch_update_side(nullptr, plan_.q_labels, sh.heads, sh.q_tokens, sh.kq, s_->q_sort, plan_.q_sizes,
                             plan_.q_offsets, plan_.q_perm, nullptr, st);
  detail::launch_update_side(nullptr, plan_.k_labels, sh.heads, sh.k_tokens, sh.kk, s_->k_sort, plan_.k_sizes,
                             plan_.k_offsets, plan_.k_perm, nullptr, st);
  check_cuda(cudaStreamSynchronize(st), "cuda::Planner::upload_clustering");
}

void Planner::upload_scores(std::span<const float> scores, Stream stream) {
  require(scores.size() == static_cast<std::size_t>(shape_.heads * shape_.kq * shape_.kk), ErrorKind::shape,
          "cuda::Planner::upload_scores: heads x kq x kk scores are needed");
  check_cuda(cudaMemcpyAsync(plan_.scores, scores.data(), scores.size() * sizeof(float), cudaMemcpyHostToDevice,
                             as_cuda(stream)),
             "cuda::Planner::upload_scores");
  check_cuda(cudaStreamSynchronize(as_cuda(stream)), "cuda::Planner::upload_scores");
}

namespace detail {
void launch_clamp_labels(const std::int32_t* src, std::int32_t* dst, std::int64_t n, int clusters, cudaStream_t stream);
void launch_labels_from_layout(const std::int32_t* perm, const std::int32_t* offsets, std::int64_t heads,
                               std::int64_t tokens, int clusters, std::int32_t* labels, cudaStream_t stream);
}

// The clustering state: centroids, sizes, offsets and permutations (q_centroids up to, not
// including, q_labels). The labels are not in it: they follow from the permutations and offsets,
// and leaving them out makes a reuse slot a third smaller at 75,600 tokens.
std::size_t Planner::clustering_bytes() const noexcept {
  return static_cast<std::size_t>(reinterpret_cast<const char*>(plan_.q_labels) -
                                  reinterpret_cast<const char*>(plan_.q_centroids));
}

namespace {
// A caller's clustering buffer is device memory or page-locked host memory: a copy from or to
// pageable memory would wait for the device (and cannot be captured in a CUDA graph).
void require_copyable_buffer(const void* p, const char* where) {
  require(p != nullptr, ErrorKind::invalid_argument, std::string(where) + ": no buffer");
  cudaPointerAttributes attr{};
  const cudaError_t e = cudaPointerGetAttributes(&attr, p);
  if (e != cudaSuccess) cudaGetLastError();  // clear it: the error below says what is wrong
  require(e == cudaSuccess && attr.type != cudaMemoryTypeUnregistered, ErrorKind::device,
          std::string(where) +
              ": the buffer is neither device memory nor page-locked host memory (pageable host memory "
              "cannot be copied asynchronously); pass one of those (torch: pin_memory=True)");
}
}  // namespace

void Planner::save_clustering(void* dst, Stream stream) const {
  require_copyable_buffer(dst, "cuda::Planner::save_clustering");
  check_cuda(cudaMemcpyAsync(dst, plan_.q_centroids, clustering_bytes(), cudaMemcpyDefault, as_cuda(stream)),
             "cuda::Planner::save_clustering");
}

void Planner::load_clustering(const void* src, Stream stream) {
  require_copyable_buffer(src, "cuda::Planner::load_clustering");
  const cudaStream_t st = as_cuda(stream);
  check_cuda(cudaMemcpyAsync(plan_.q_centroids, src, clustering_bytes(), cudaMemcpyDefault, st),
             "cuda::Planner::load_clustering");
  const PlanShape& sh = shape_;
  detail::launch_labels_from_layout(plan_.q_perm, plan_.q_offsets, sh.heads, sh.q_tokens, sh.kq, plan_.q_labels, st);
  detail::launch_labels_from_layout(plan_.k_perm, plan_.k_offsets, sh.heads, sh.k_tokens, sh.kk, plan_.k_labels, st);
  check_cuda(cudaGetLastError(), "cuda::Planner::load_clustering");
}

void Planner::copy_plan(std::int32_t* q_labels, std::int32_t* k_labels, std::uint8_t* keep, Stream stream) const {
  const cudaStream_t st = as_cuda(stream);
  const PlanShape& sh = shape_;
  auto copy = [&](void* dst, const void* src, std::size_t bytes) {
    if (dst) check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, st), "cuda::Planner::copy_plan");
  };
  copy(q_labels, plan_.q_labels, sizeof(std::int32_t) * sh.heads * sh.q_tokens);
  copy(k_labels, plan_.k_labels, sizeof(std::int32_t) * sh.heads * sh.k_tokens);
  copy(keep, plan_.keep, static_cast<std::size_t>(sh.heads) * sh.kq * sh.kk);
}

void Planner::load_plan(const std::int32_t* q_labels, const std::int32_t* k_labels, const std::uint8_t* keep,
                        Stream stream) {
  require(q_labels && k_labels && keep, ErrorKind::invalid_argument, "cuda::Planner::load_plan: null buffer");
  const cudaStream_t st = as_cuda(stream);
  const PlanShape& sh = shape_;
  detail::launch_clamp_labels(q_labels, plan_.q_labels, sh.heads * sh.q_tokens, sh.kq, st);
  detail::launch_clamp_labels(k_labels, plan_.k_labels, sh.heads * sh.k_tokens, sh.kk, st);
  detail::launch_update_side(nullptr, plan_.q_labels, sh.heads, sh.q_tokens, sh.kq, s_->q_sort, plan_.q_sizes,
                             plan_.q_offsets, plan_.q_perm, nullptr, st);
  detail::launch_update_side(nullptr, plan_.k_labels, sh.heads, sh.k_tokens, sh.kk, s_->k_sort, plan_.k_sizes,
                             plan_.k_offsets, plan_.k_perm, nullptr, st);
  check_cuda(cudaMemcpyAsync(plan_.keep, keep, static_cast<std::size_t>(sh.heads) * sh.kq * sh.kk,
                             cudaMemcpyDeviceToDevice, st),
             "cuda::Planner::load_plan");
  build_ranges(stream);
  check_launch("cuda::Planner::load_plan");
}

std::vector<double> Planner::recall(const TensorView& q, const TensorView& k, std::span<const std::int64_t> rows,
                                    Stream stream) {
  const RowsView qv = rows_of(q, "q", shape_.heads, shape_.q_tokens, shape_.dim, "cuda::Planner::recall");
  const RowsView kv = rows_of(k, "k", shape_.heads, shape_.k_tokens, shape_.dim, "cuda::Planner::recall");
  for (auto r : rows)
    require(r >= 0 && r < shape_.q_tokens, ErrorKind::invalid_argument,
            "cuda::Planner::recall: row " + std::to_string(r) + " is outside the queries");
  require(!rows.empty(), ErrorKind::invalid_argument, "cuda::Planner::recall: no rows");
  const cudaStream_t st = as_cuda(stream);
  std::int64_t* drows = nullptr;
  double* dout = nullptr;
  check_cuda(cudaMalloc(&drows, rows.size() * sizeof(std::int64_t)), "cuda::Planner::recall");
  check_cuda(cudaMalloc(&dout, shape_.heads * sizeof(double)), "cuda::Planner::recall");
  cudaMemcpyAsync(drows, rows.data(), rows.size() * sizeof(std::int64_t), cudaMemcpyHostToDevice, st);
  detail::launch_recall(qv, kv, plan_.q_labels, plan_.k_labels, plan_.keep, shape_.kq, shape_.kk, drows,
                        static_cast<int>(rows.size()), dout, st);
  std::vector<double> out;
  download(out, dout, shape_.heads, st);
  const cudaError_t e = cudaStreamSynchronize(st);
  cudaFree(drows);
  cudaFree(dout);
  check_cuda(e, "cuda::Planner::recall");
  return out;
}

}  // namespace svoo::cuda
