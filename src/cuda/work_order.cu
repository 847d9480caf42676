// The attention kernel's work list, largest items first. The kernel is launched with one block an
// item and the hardware hands blocks to SMs in index order, so the order of the list is the order
// work starts: with the list in (head, cluster) order a long item can start in the last wave and
// leave SMs idle at the end; largest first leaves the short items for the tail.
//
// An item's cost is its key tiles plus a start-and-finish overhead (about 3 tile times, the CPU
// work study's model), weighted 0.65 when it has at most 64 rows (one consumer). A stable radix
// sort of (cost, slot) keeps equal costs in list order, so the order is deterministic.
#include <cub/device/device_radix_sort.cuh>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "attention_kernel.cuh"

namespace svoo::cuda::detail {
namespace {

constexpr int kOrderBits = 24;  // costs < 2^24: (75,600 / 128 + 3) x 100 ~ 6e4 at most here

__global__ void item_cost_kernel(const std::int32_t* item_w, const std::int32_t* item_row,
                                 const std::int64_t* item_count, std::int64_t capacity, const std::int32_t* q_sizes,
                                 const std::int32_t* q_offsets, const std::int64_t* range_ptr,
                                 const std::int32_t* range_begin, const std::int32_t* range_end, int kq, int rows,
                                 std::uint32_t* cost, std::int32_t* slot) {
  const std::int64_t s = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (s >= capacity) return;
  slot[s] = static_cast<std::int32_t>(s);
  if (s >= *item_count) {
    cost[s] = 0;  // unused slots sort last
    return;
  }
  const int w = item_w[s];
  std::int64_t keys = 0;
  for (std::int64_t r = range_ptr[w]; r < range_ptr[w + 1]; ++r) keys += range_end[r] - range_begin[r];
  const int first = q_offsets[(w / kq) * (kq + 1) + w % kq];
  const int left = first + q_sizes[w] - item_row[s];
  const std::int64_t tiles = (keys + 127) / 128 + 3;
  const std::int64_t c = tiles * ((left < rows ? left : rows) > 64 ? 100 : 65) + 1;
  cost[s] = static_cast<std::uint32_t>(c < (1 << kOrderBits) ? c : (1 << kOrderBits) - 1);
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

bool order_items_largest_first() {
  static const bool on = [] {
    const char* e = std::getenv("SVOO_ATTN_ORDER");
    return !(e && std::strcmp(e, "cluster") == 0);
  }();
  return on;
}

std::size_t order_items_temp_bytes(std::int64_t capacity) {
  std::size_t bytes = 0;
  cub::DeviceRadixSort::SortPairsDescending(nullptr, bytes, static_cast<const std::uint32_t*>(nullptr),
                                            static_cast<std::uint32_t*>(nullptr),
                                            static_cast<const std::int32_t*>(nullptr),
                                            static_cast<std::int32_t*>(nullptr), static_cast<int>(capacity), 0,
                                            kOrderBits);
  return bytes;
}

void launch_order_items(const ItemOrderArgs& a, cudaStream_t stream) {
  if (a.capacity == 0) return;
  const unsigned blocks = static_cast<unsigned>((a.capacity + 255) / 256);
  item_cost_kernel<<<blocks, 256, 0, stream>>>(a.w_in, a.row_in, a.item_count, a.capacity, a.q_sizes, a.q_offsets,
                                               a.range_ptr, a.range_begin, a.range_end, a.kq, attention_rows(),
                                               a.cost_in, a.slot_in);
  std::size_t bytes = a.temp_bytes;
  cub::DeviceRadixSort::SortPairsDescending(a.temp, bytes, a.cost_in, a.cost_out, a.slot_in, a.slot_out,
                                            static_cast<int>(a.capacity), 0, kOrderBits, stream);
  gather_items_kernel<<<blocks, 256, 0, stream>>>(a.slot_out, a.item_count, a.w_in, a.row_in, a.item_w, a.item_row);
}

}  // namespace svoo::cuda::detail
