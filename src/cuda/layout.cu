// Layout ranges (spec 2.4) on the device, exactly as svoo::build_layout builds them: for row
// w = h*kq + i with a non-empty query cluster, walk the key clusters j in label order; a kept
// cluster of zero width is skipped, a kept cluster starting where the open range ends extends it,
// any other kept cluster opens a new range [koff[j], koff[j+1]).
//
// One thread per row walks the row serially with the CPU's own logic, and the count pass and the
// write pass run the very same device function (templated on whether it writes), so the two
// passes cannot disagree and both match the CPU by construction. At the largest shapes this is
// heads*kq*kk ~ 10M cheap steps per pass spread over heads*kq threads: not worth a cleverer
// warp-cooperative merge.
#include <cstdint>

#include "common.cuh"
#include "kernels.cuh"

namespace svoo::cuda::detail {
namespace {

constexpr int kRangeThreads = 128;

// Ranges of row w. Returns their number; when Write, stores them at begin/end[0 .. count).
template <bool Write>
__device__ std::int64_t row_ranges(const std::uint8_t* keep_row, const std::int32_t* koff, int kk,
                                   std::int32_t* begin, std::int32_t* end) {
  std::int64_t count = 0;
  std::int32_t open_end = 0;  // end of range count-1 (meaningful when count > 0)
  for (int j = 0; j < kk; ++j) {
    const std::int32_t lo = koff[j], hi = koff[j + 1];
    if (!keep_row[j] || hi == lo) continue;
    if (count > 0 && open_end == lo) {
      open_end = hi;
      if (Write) end[count - 1] = hi;
    } else {
      if (Write) {
        begin[count] = lo;
        end[count] = hi;
      }
      ++count;
      open_end = hi;
    }
  }
  return count;
}

__global__ void __launch_bounds__(kRangeThreads)
    count_ranges_kernel(const std::uint8_t* keep, const std::int32_t* q_sizes, const std::int32_t* k_offsets, int kq,
                        int kk, std::int64_t rows, std::int64_t* range_count) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t w = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; w < rows; w += stride) {
    const std::int64_t h = w / kq;
    std::int64_t count = 0;
    if (q_sizes[w] > 0)
      count = row_ranges<false>(keep + w * kk, k_offsets + h * (kk + 1), kk, nullptr, nullptr);
    range_count[w] = count;
  }
}

__global__ void __launch_bounds__(kRangeThreads)
    write_ranges_kernel(const std::uint8_t* keep, const std::int32_t* q_sizes, const std::int32_t* k_offsets, int kq,
                        int kk, std::int64_t rows, const std::int64_t* range_ptr, std::int32_t* range_begin,
                        std::int32_t* range_end) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t w = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; w < rows; w += stride) {
    if (q_sizes[w] <= 0) continue;  // no ranges (range_ptr[w + 1] == range_ptr[w])
    const std::int64_t h = w / kq, at = range_ptr[w];
    row_ranges<true>(keep + w * kk, k_offsets + h * (kk + 1), kk, range_begin + at, range_end + at);
  }
}

unsigned range_blocks(std::int64_t rows) {
  return grid_for_items((rows + kRangeThreads - 1) / kRangeThreads);
}

}  // namespace

void launch_count_ranges(const std::uint8_t* keep, const std::int32_t* q_sizes, const std::int32_t* k_offsets,
                         int heads, int kq, int kk, std::int64_t* range_count, cudaStream_t stream) {
  if (heads <= 0 || kq <= 0 || kk <= 0) return;
  const std::int64_t rows = static_cast<std::int64_t>(heads) * kq;
  count_ranges_kernel<<<range_blocks(rows), kRangeThreads, 0, stream>>>(keep, q_sizes, k_offsets, kq, kk, rows,
                                                                        range_count);
}

void launch_write_ranges(const std::uint8_t* keep, const std::int32_t* q_sizes, const std::int32_t* k_offsets,
                         int heads, int kq, int kk, const std::int64_t* range_ptr, std::int32_t* range_begin,
                         std::int32_t* range_end, cudaStream_t stream) {
  if (heads <= 0 || kq <= 0 || kk <= 0) return;
  const std::int64_t rows = static_cast<std::int64_t>(heads) * kq;
  write_ranges_kernel<<<range_blocks(rows), kRangeThreads, 0, stream>>>(keep, q_sizes, k_offsets, kq, kk, rows,
                                                                        range_ptr, range_begin, range_end);
}

}  // namespace svoo::cuda::detail
