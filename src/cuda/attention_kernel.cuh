// Internal: the variable-block sparse attention kernel (spec 2.4) and its work list.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels.cuh"

namespace svoo::cuda::detail {

inline constexpr int kAttnRowsMin = 64;       // smallest tile: sizes the work list
inline constexpr int kAttnRowsDefault = 128;  // query rows per work item (one query cluster's tile); 64 via SVOO_ATTN_ROWS
// Rows per work item in this process: 64 or 128 (SVOO_ATTN_ROWS overrides the default).
int attention_rows();

// Work items: one per (head, query cluster, 64-row tile), written as (w = h*kq + i, first row).
// Pass 1 counts tiles per cluster into tile_count [heads*kq + 1] (last entry 0); the caller scans
// it into tile_ptr; pass 2 writes items at tile_ptr[w]. Capacity: heads*(ceil(q_tokens/64) + kq).
void launch_count_tiles(const std::int32_t* q_sizes, int heads, int kq, std::int64_t* tile_count, cudaStream_t stream);
void launch_write_tiles(const std::int32_t* q_sizes, const std::int32_t* q_offsets, int heads, int kq,
                        const std::int64_t* tile_ptr, std::int32_t* item_w, std::int32_t* item_row,
                        cudaStream_t stream);

// Largest items first within each head (work_order.cu): the items written to (w_in, row_in) in
// (head, cluster) order are sorted by (head ascending, cost descending) into (item_w, item_row).
// Done for every layer (small lists by one block, large ones by cub's device sort: work_order.cu);
// SVOO_ATTN_ORDER=cluster orders none (write_tiles then writes the final arrays directly),
// SVOO_ATTN_ORDER=head every one.
bool order_items_largest_first();
std::size_t order_items_temp_bytes(std::int64_t capacity, int heads);
struct ItemOrderArgs {
  const std::int32_t *w_in, *row_in;  // [capacity]: the list in (head, cluster) order
  const std::int64_t* item_count;      // device
  std::int64_t capacity = 0;
  const std::int32_t *q_sizes, *q_offsets;
  const std::int64_t* range_ptr;
  const std::int32_t *range_begin, *range_end;
  int heads = 0, kq = 0;
  std::uint64_t *key_in, *key_out;  // [capacity] scratch
  std::int32_t *slot_in, *slot_out;  // [capacity] scratch
  void* temp;
  std::size_t temp_bytes = 0;
  std::int32_t *item_w, *item_row;  // [capacity]: the ordered list
};
void launch_order_items(const ItemOrderArgs& args, cudaStream_t stream);

struct AttentionArgs {
  RowsView q, k, v;          // original token order, [heads, tokens, 128]
  MutableRowsView out;       // original token order
  float* lse = nullptr;      // [heads, q_tokens] natural log-sum-exp, optional
  // Sparse mode (ranges != nullptr): the planner's layout.
  const std::int32_t* q_perm = nullptr;   // [heads, q_tokens]
  const std::int32_t* k_perm = nullptr;   // [heads, k_tokens]
  const std::int32_t* q_offsets = nullptr;  // [heads, kq + 1]
  const std::int64_t* range_ptr = nullptr;  // [heads*kq + 1]
  const std::int32_t* range_begin = nullptr;
  const std::int32_t* range_end = nullptr;
  const std::int32_t* item_w = nullptr;     // work items
  const std::int32_t* item_row = nullptr;
  const std::int64_t* item_count = nullptr;  // device: number of items (tile_ptr[heads*kq])
  std::int64_t item_capacity = 0;            // grid size (Hopper: at most one block an SM)
  int* work_counter = nullptr;               // device: the Hopper kernel's next item (zeroed each call)
  int kq = 0;
};

#if defined(__CUDACC__)
// A block's work item in both attention kernels: at most kBM query rows of one query cluster
// (sparse mode) or of one head's tokens (dense mode), and the item's key ranges [rb, rb + nr).
struct AttentionItem {
  int h;
  std::int64_t row0;  // first permuted query row (sparse) or token (dense)
  int rows;
  std::int64_t rb, nr;
};
// The item at work-list index idx; false past the list's end (dense mode: past heads x tiles).
template <int kBM>
__device__ __forceinline__ bool attention_item_at(const AttentionArgs& a, std::int64_t idx, AttentionItem& it) {
  if (a.range_ptr != nullptr) {
    if (idx >= *a.item_count) return false;
    const int w = a.item_w[idx];
    it.h = w / a.kq;
    const int i = w % a.kq;
    it.row0 = a.item_row[idx];
    const std::int64_t end = a.q_offsets[static_cast<std::int64_t>(it.h) * (a.kq + 1) + i + 1];
    it.rows = static_cast<int>(end - it.row0 < kBM ? end - it.row0 : kBM);
    it.rb = a.range_ptr[w];
    it.nr = a.range_ptr[w + 1] - it.rb;
  } else {
    const std::int64_t tiles = (a.q.tokens + kBM - 1) / kBM;
    if (idx >= a.q.heads * tiles) return false;
    it.h = static_cast<int>(idx / tiles);
    it.row0 = (idx % tiles) * kBM;
    it.rows = static_cast<int>(a.q.tokens - it.row0 < kBM ? a.q.tokens - it.row0 : kBM);
    it.rb = 0;
    it.nr = 1;
  }
  return true;
}
// Thread tid's share of an item's key ranges, kPer in a row (ranges tid * kPer ..): their starts
// into r_begin and their lengths into len (0 past the item's ranges; dense mode: one range, all
// keys). Returns the sum of the lengths; the caller scans them into the virtual key sequence.
template <int kPer>
__device__ __forceinline__ int load_range_lengths(const AttentionArgs& a, const AttentionItem& it, bool sparse, int tid,
                                                  std::int32_t* r_begin, int (&len)[kPer]) {
  int sum = 0;
#pragma unroll
  for (int e = 0; e < kPer; ++e) {
    const int j = tid * kPer + e;
    len[e] = 0;
    if (j < it.nr) {
      const int b = sparse ? a.range_begin[it.rb + j] : 0;
      const int en = sparse ? a.range_end[it.rb + j] : static_cast<int>(a.k.tokens);
      r_begin[j] = b;
      len[e] = en - b;
    }
    sum += len[e];
  }
  return sum;
}
// Block blockIdx.x's item (the one-block-an-item grid: the list's capacity, or heads x tiles).
template <int kBM>
__device__ __forceinline__ bool attention_item(const AttentionArgs& a, AttentionItem& it) {
  return attention_item_at<kBM>(a, static_cast<std::int64_t>(blockIdx.x), it);
}
#endif

// Dense mode when args.range_ptr is null: every query attends to every key. Runs the Hopper kernel
// where attention_hopper_enabled(), else the mma.sync one.
void launch_attention(const AttentionArgs& args, cudaStream_t stream);

// attention_hopper.cu: wgmma, warp-specialised (sm_90a). Enabled on compute capability 9.0 when
// this build has sm_90a code, the work items have 128 rows and SVOO_ATTN_KERNEL is not "sm80".
bool attention_hopper_enabled();
void launch_attention_hopper(const AttentionArgs& args, cudaStream_t stream);

}  // namespace svoo::cuda::detail
