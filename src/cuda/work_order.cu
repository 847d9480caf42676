// The attention kernel's work list, largest items first within each head. Blocks take items in
// list order (the persistent Hopper kernel from its counter, the portable kernel's blocks as the
// hardware hands them out), so in (head, cluster) order a cluster with a long key list can come
// last and leave the other SMs idle at the end of the call. Largest first within each head leaves
// the short items for the tail and keeps the heads in order: sorting across heads was slower
// (run63), because the SMs then worked on many heads at once and their keys and values no longer
// stayed in L2.
//
// Measured (runs 115-116, H100, seven interleaved rounds): at Wan2.1-14B 720p +0.9 / +3.5 / +1.4 /
// +2.2 % at 10 / 15 / 20 / 30 % density (-3 % at 5 %), at 1.3B 720p -1.3 to +3 %, at 1.3B 480p
// -0.6 to +2.8 % (noise). On the H200 with the query alignment and the persistent kernel (run189,
// every block's span in a diagnostics build) the grid's tail at Wan2.1-1.3B 480p and 10 % was
// 6.8 % of the call in (head, cluster) order and 4.3 % ordered, and the kernel 1.3-2.9 % faster at
// 5-30 % (run190, three interleaved rounds); but cub's device sort and its launches added 59 us to
// the plan there, as much as the kernel gained. So a list of at most kBlockSortCapacity items (a
// layer of up to ~38,000 query tokens at 12 heads and Kq 256) is sorted by one block (cub's
// BlockRadixSort, one launch after the cost kernel's), larger ones by cub's device sort; every
// layer is ordered. At 480p that costs the plan 33 us and saves the kernel 2.0-3.7 % at 10-30 %
// (runs 191-192, six interleaved rounds).
// SVOO_ATTN_ORDER=head or cluster forces either order.
//
// An item's cost is its key tiles plus ~3 tile times for its start and finish (the work study's
// model), weighted 0.65 when it has at most 64 rows (one consumer). Both sorts are stable on
// (head, cost) keys, so equal costs keep list order and the order is deterministic (and the same
// whichever sort ran).
#include <cub/block/block_radix_sort.cuh>
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
// descending. Unused slots get 0 and sort last; every used slot's cost is at least 1. A warp a
// slot, its lanes summing the item's ranges (a thread a slot walked ~100 ranges at 10 % density
// in a chain of loads).
__global__ void item_cost_kernel(const std::int32_t* item_w, const std::int32_t* item_row,
                                 const std::int64_t* item_count, std::int64_t capacity, const std::int32_t* q_sizes,
                                 const std::int32_t* q_offsets, const std::int64_t* range_ptr,
                                 const std::int32_t* range_begin, const std::int32_t* range_end, int heads, int kq,
                                 int rows, std::uint64_t* key, std::int32_t* slot) {
  const std::int64_t s = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (s >= capacity) return;  // warp-uniform
  if (s >= *item_count) {
    if (lane == 0) slot[s] = static_cast<std::int32_t>(s), key[s] = 0;
    return;
  }
  const int w = item_w[s];
  long long keys = 0;
  for (std::int64_t r = range_ptr[w] + lane; r < range_ptr[w + 1]; r += 32) keys += range_end[r] - range_begin[r];
#pragma unroll
  for (int d = 16; d > 0; d /= 2) keys += __shfl_xor_sync(0xffffffffu, keys, d);
  if (lane != 0) return;
  slot[s] = static_cast<std::int32_t>(s);
  const int head = w / kq;
  const int first = q_offsets[head * (kq + 1) + w % kq];
  const int left = first + q_sizes[w] - item_row[s];
  const std::int64_t tiles = (keys + 127) / 128 + 3;
  std::int64_t cost = tiles * ((left < rows ? left : rows) > 64 ? 100 : 65) + 1;
  if (cost >= (std::int64_t{1} << kCostBits)) cost = (std::int64_t{1} << kCostBits) - 1;
  key[s] = static_cast<std::uint64_t>(heads - 1 - head) << kCostBits | static_cast<std::uint64_t>(cost);
}

// One block: the keys of a list of at most kBlockSortCapacity items, sorted descending with their
// slots, and the items gathered in that order. The keys are repacked into 32 bits as
// (head << cost_bits | cost), cost_bits those of the list's largest cost (15 at Wan2.1-1.3B 480p),
// so that the sort runs over ~20 bits (5 passes of 4) instead of the device sort's 24 + head bits;
// the order is the same.
constexpr int kBlockSortThreads = 1024, kBlockSortItems = 10;
constexpr std::int64_t kBlockSortCapacity = kBlockSortThreads * kBlockSortItems;

__global__ void __launch_bounds__(kBlockSortThreads) block_order_kernel(const std::uint64_t* key_in,
                                                                        const std::int64_t* item_count,
                                                                        std::int64_t capacity, int head_bits,
                                                                        const std::int32_t* w_in,
                                                                        const std::int32_t* row_in,
                                                                        std::int32_t* item_w, std::int32_t* item_row) {
  using Sort = cub::BlockRadixSort<std::uint32_t, kBlockSortThreads, kBlockSortItems, std::int32_t>;
  __shared__ typename Sort::TempStorage temp;
  __shared__ unsigned max_cost;
  if (threadIdx.x == 0) max_cost = 1;
  __syncthreads();
  constexpr std::uint64_t kCostMask = (std::uint64_t{1} << kCostBits) - 1;
  std::uint64_t k64[kBlockSortItems];
  unsigned mine = 1;
#pragma unroll
  for (int i = 0; i < kBlockSortItems; ++i) {  // blocked: thread t holds slots t * kBlockSortItems + i
    const int s = static_cast<int>(threadIdx.x) * kBlockSortItems + i;
    k64[i] = s < capacity ? key_in[s] : 0;  // unused slots: 0, sorted last
    mine = max(mine, static_cast<unsigned>(k64[i] & kCostMask));
  }
  atomicMax(&max_cost, mine);
  __syncthreads();
  const int cost_bits = 32 - __clz(max_cost);
  std::uint32_t key[kBlockSortItems];
  std::int32_t slot[kBlockSortItems];
#pragma unroll
  for (int i = 0; i < kBlockSortItems; ++i) {
    slot[i] = static_cast<int>(threadIdx.x) * kBlockSortItems + i;
    key[i] = static_cast<std::uint32_t>(k64[i] >> kCostBits) << cost_bits | static_cast<std::uint32_t>(k64[i] & kCostMask);
  }
  Sort(temp).SortDescending(key, slot, 0, cost_bits + head_bits);
  const std::int64_t n = *item_count;
#pragma unroll
  for (int i = 0; i < kBlockSortItems; ++i) {
    const int r = static_cast<int>(threadIdx.x) * kBlockSortItems + i;
    if (r < n) {
      item_w[r] = w_in[slot[i]];
      item_row[r] = row_in[slot[i]];
    }
  }
}

bool block_sorted(std::int64_t capacity, int heads) { return capacity <= kBlockSortCapacity && order_end_bit(heads) <= 32; }

__global__ void gather_items_kernel(const std::int32_t* order, const std::int64_t* item_count,
                                    const std::int32_t* w_in, const std::int32_t* row_in, std::int32_t* item_w,
                                    std::int32_t* item_row) {
  const std::int64_t s = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (s >= *item_count) return;
  item_w[s] = w_in[order[s]];
  item_row[s] = row_in[order[s]];
}

}  // namespace

bool order_items_largest_first() {
  static const bool on = [] {  // SVOO_ATTN_ORDER=cluster: none (=head, the default, every layer)
    const char* e = std::getenv("SVOO_ATTN_ORDER");
    return !(e && std::strcmp(e, "cluster") == 0);
  }();
  return on;
}

std::size_t order_items_temp_bytes(std::int64_t capacity, int heads) {
  if (block_sorted(capacity, heads)) return 0;
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
  const unsigned warp_blocks = static_cast<unsigned>((a.capacity * 32 + 255) / 256);  // a warp a slot
  item_cost_kernel<<<warp_blocks, 256, 0, stream>>>(a.w_in, a.row_in, a.item_count, a.capacity, a.q_sizes, a.q_offsets,
                                                    a.range_ptr, a.range_begin, a.range_end, a.heads, a.kq,
                                                    attention_rows(), a.key_in, a.slot_in);
  if (block_sorted(a.capacity, a.heads)) {
    const int head_bits = order_end_bit(a.heads) - kCostBits;
    block_order_kernel<<<1, kBlockSortThreads, 0, stream>>>(a.key_in, a.item_count, a.capacity, head_bits, a.w_in,
                                                            a.row_in, a.item_w, a.item_row);
    return;
  }
  std::size_t bytes = a.temp_bytes;
  cub::DeviceRadixSort::SortPairsDescending(a.temp, bytes, a.key_in, a.key_out, a.slot_in, a.slot_out,
                                            static_cast<int>(a.capacity), 0, order_end_bit(a.heads), stream);
  gather_items_kernel<<<blocks, 256, 0, stream>>>(a.slot_out, a.item_count, a.w_in, a.row_in, a.item_w, a.item_row);
}

}  // namespace svoo::cuda::detail
