// The attention kernel's work list, largest items first within each head. Blocks take items in
// list order (the persistent Hopper kernel from its counter, the portable kernel's blocks as the
// hardware hands them out), so in (head, cluster) order a cluster with a long key list can come
// last and leave the other SMs idle at the end of the call (the CPU work study prices that tail
// at 0.5 % of a Wan2.1-14B 720p layer, 2-3 % of a 1.3B one). Largest first within each head
// leaves the short items for the tail and keeps the heads in order: sorting across heads was
// slower (run63), because the SMs then worked on many heads at once and their keys and values no
// longer stayed in L2.
//
// Measured (runs 115-116, H100, seven interleaved rounds): at Wan2.1-14B 720p +0.9 / +3.5 / +1.4 /
// +2.2 % at 10 / 15 / 20 / 30 % density (-3 % at 5 %), at 1.3B 720p -1.3 to +3 %, at 1.3B 480p
// -0.6 to +2.8 % (noise); the sort adds ~0.05-0.065 ms to the plan (mostly launches). So by default
// only layers of at least kOrderMinTokens query tokens are ordered; SVOO_ATTN_ORDER=head or
// cluster forces either order.
//
// An item's cost is its key tiles plus ~3 tile times for its start and finish (the work study's
// model), weighted 0.65 when it has at most 64 rows (one consumer). A stable radix sort of
// (head, cost) keeps equal costs in list order, so the order is deterministic.
#include <cub/device/device_radix_sort.cuh>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "attention_kernel.cuh"

namespace svoo::cuda::detail {
namespace {

constexpr int kCostBits = 24;  // costs < 2^24: (75,600 / 128 + 3) x 100 ~ 6e4 here

int order_end_bit(int heads) {  // the key's bits: the cost's and enough for heads - 1
  int bits = 0;
  while (bits < 31 && (1 << bits) < heads) ++bits;
  return kCostBits + bits;
}

// key = (heads - 1 - head) << kCostBits | cost, sorted descending: heads ascending, costs
// descending. Unused slots get 0 and sort last; every used slot's cost is at least 1.
__global__ void item_cost_kernel(const std::int32_t* item_w, const std::int32_t* item_row,
                                 const std::int64_t* item_count, std::int64_t capacity, const std::int32_t* q_sizes,
                                 const std::int32_t* q_offsets, const std::int64_t* range_ptr,
                                 const std::int32_t* range_begin, const std::int32_t* range_end, int heads, int kq,
                                 int rows, std::uint64_t* key, std::int32_t* slot) {
  const std::int64_t s = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (s >= capacity) return;
  slot[s] = static_cast<std::int32_t>(s);
  if (s >= *item_count) {
    key[s] = 0;
    return;
  }
  const int w = item_w[s];
  std::int64_t keys = 0;
  for (std::int64_t r = range_ptr[w]; r < range_ptr[w + 1]; ++r) keys += range_end[r] - range_begin[r];
  const int head = w / kq;
  const int first = q_offsets[head * (kq + 1) + w % kq];
  const int left = first + q_sizes[w] - item_row[s];
  const std::int64_t tiles = (keys + 127) / 128 + 3;
  std::int64_t cost = tiles * ((left < rows ? left : rows) > 64 ? 100 : 65) + 1;
  if (cost >= (std::int64_t{1} << kCostBits)) cost = (std::int64_t{1} << kCostBits) - 1;
  key[s] = static_cast<std::uint64_t>(heads - 1 - head) << kCostBits | static_cast<std::uint64_t>(cost);
}

__global__ void gather_items_kernel(const std::int32_t* order, const std::int64_t* item_count,
                                    const std::int32_t* w_in, const std::int32_t* row_in, std::int32_t* item_w,
                                    std::int32_t* item_row) {
  const std::int64_t s = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (s >= *item_count) return;
  item_w[s] = w_in[order[s]];
  item_row[s] = row_in[order[s]];
}

}  // namespace

bool order_items_largest_first(std::int64_t q_tokens) {
  static const int forced = [] {  // 1: always, 0: never, -1: by the layer's size
    const char* e = std::getenv("SVOO_ATTN_ORDER");
    return e && std::strcmp(e, "head") == 0 ? 1 : e && std::strcmp(e, "cluster") == 0 ? 0 : -1;
  }();
  return forced >= 0 ? forced == 1 : q_tokens >= kOrderMinTokens;
}

std::size_t order_items_temp_bytes(std::int64_t capacity, int heads) {
  std::size_t bytes = 0;
  cub::DeviceRadixSort::SortPairsDescending(nullptr, bytes, static_cast<const std::uint64_t*>(nullptr),
                                            static_cast<std::uint64_t*>(nullptr),
                                            static_cast<const std::int32_t*>(nullptr),
                                            static_cast<std::int32_t*>(nullptr), static_cast<int>(capacity), 0,
                                            order_end_bit(heads));
  return bytes;
}

void launch_order_items(const ItemOrderArgs& a, cudaStream_t stream) {
  if (a.capacity == 0) return;
  const unsigned blocks = static_cast<unsigned>((a.capacity + 255) / 256);
  item_cost_kernel<<<blocks, 256, 0, stream>>>(a.w_in, a.row_in, a.item_count, a.capacity, a.q_sizes, a.q_offsets,
                                               a.range_ptr, a.range_begin, a.range_end, a.heads, a.kq,
                                               attention_rows(), a.key_in, a.slot_in);
  std::size_t bytes = a.temp_bytes;
  cub::DeviceRadixSort::SortPairsDescending(a.temp, bytes, a.key_in, a.key_out, a.slot_in, a.slot_out,
                                            static_cast<int>(a.capacity), 0, order_end_bit(a.heads), stream);
  gather_items_kernel<<<blocks, 256, 0, stream>>>(a.slot_out, a.item_count, a.w_in, a.row_in, a.item_w, a.item_row);
}

}  // namespace svoo::cuda::detail
