// Layout ranges (spec 2.4) on the device, exactly as svoo::build_layout builds them: for row
// w = h*kq + i with a non-empty query cluster, walk the key clusters j in label order; a kept
// cluster of zero width is skipped, a kept cluster starting where the open range ends extends it,
// any other kept cluster opens a new range [koff[j], koff[j+1]).
//
// Because clusters are contiguous in label order (koff[j+1] = koff[j] + size j), "starts where the
// open range ends" means "every cluster since the last kept non-empty one is empty". So a kept
// non-empty cluster opens a range exactly when the previous non-empty cluster (kept or not) is not
// kept or does not exist, and a range ends at a kept non-empty cluster whose next non-empty
// cluster is not kept or does not exist. That makes the walk parallel: one warp per row takes the
// clusters 32 at a time, one per lane (coalesced loads), and decides starts and ends with ballots;
// only the kept flag and end of the last non-empty cluster so far carry from chunk to chunk. The
// count pass and the write pass run the same device function (templated on whether it writes), so
// they cannot disagree. (One thread per row, or a lane per contiguous segment, read 32 sectors per
// load and took 0.38 ms at 40 x 256 x 1024 on an H100.)
#include <cstdint>

#include "common.cuh"
#include "kernels.cuh"

namespace svoo::cuda::detail {
namespace {

constexpr int kRangeThreads = 128;
constexpr int kRangeWarps = kRangeThreads / 32;

// Ranges of row w, for the whole warp. Returns their number (to every lane); when Write, stores
// them at begin/end[0 .. count).
template <bool Write>
__device__ std::int64_t row_ranges(const std::uint8_t* keep_row, const std::int32_t* koff, int kk,
                                   std::int32_t* begin, std::int32_t* end) {
  const int lane = threadIdx.x & 31;
  const unsigned lt = (1u << lane) - 1u, le = lt | (1u << lane);  // lanes below / up to this one
  int count = 0;              // ranges started so far
  bool carry_kept = false;    // the last non-empty cluster so far is kept (its range is open)
  std::int32_t open_end = 0;  // and that range's end so far
  for (int base = 0; base < kk; base += 32) {
    const int j = base + lane;
    std::int32_t lo = 0, hi = 0;
    bool kept = false;
    if (j < kk) {
      lo = koff[j], hi = koff[j + 1];
      kept = hi > lo && keep_row[j] != 0;
    }
    const unsigned ne = __ballot_sync(kFullMask, hi > lo), k = __ballot_sync(kFullMask, kept);
    const unsigned below = ne & lt, above = ne & ~le;
    const bool prev_kept = below != 0 ? ((k >> (31 - __clz(below))) & 1u) != 0 : carry_kept;
    const unsigned starts = __ballot_sync(kFullMask, kept && !prev_kept);
    if (Write) {
      // The open range closes before this chunk when the chunk's first non-empty cluster is not kept.
      if (lane == 0 && ne != 0 && carry_kept && ((k >> (__ffs(ne) - 1)) & 1u) == 0) end[count - 1] = open_end;
      if (kept && !prev_kept) begin[count + __popc(starts & lt)] = lo;
      if (kept && above != 0 && ((k >> (__ffs(above) - 1)) & 1u) == 0) end[count + __popc(starts & le) - 1] = hi;
    }
    count += __popc(starts);
    if (ne != 0) {
      const int last = 31 - __clz(ne);
      carry_kept = ((k >> last) & 1u) != 0;
      const std::int32_t last_hi = __shfl_sync(kFullMask, hi, last);
      if (carry_kept) open_end = last_hi;
    }
  }
  if (Write && lane == 0 && carry_kept) end[count - 1] = open_end;
  return count;
}

// One warp per row w; warps stride over the rows.
template <bool Write>
__global__ void __launch_bounds__(kRangeThreads)
    ranges_kernel(const std::uint8_t* keep, const std::int32_t* q_sizes, const std::int32_t* k_offsets, int kq, int kk,
                  std::int64_t rows, std::int64_t* range_count, const std::int64_t* range_ptr,
                  std::int32_t* range_begin, std::int32_t* range_end) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kRangeWarps;
  for (std::int64_t w = static_cast<std::int64_t>(blockIdx.x) * kRangeWarps + (threadIdx.x >> 5); w < rows;
       w += stride) {
    const std::int64_t h = w / kq;
    if (q_sizes[w] <= 0) {  // no ranges (range_ptr[w + 1] == range_ptr[w])
      if (!Write && (threadIdx.x & 31) == 0) range_count[w] = 0;
      continue;
    }
    const std::int64_t at = Write ? range_ptr[w] : 0;
    const std::int64_t count = row_ranges<Write>(keep + w * kk, k_offsets + h * (kk + 1), kk,
                                                 Write ? range_begin + at : nullptr, Write ? range_end + at : nullptr);
    if (!Write && (threadIdx.x & 31) == 0) range_count[w] = count;
  }
}

unsigned range_blocks(std::int64_t rows) { return grid_for_items((rows + kRangeWarps - 1) / kRangeWarps); }

}  // namespace

void launch_count_ranges(const std::uint8_t* keep, const std::int32_t* q_sizes, const std::int32_t* k_offsets,
                         int heads, int kq, int kk, std::int64_t* range_count, cudaStream_t stream) {
  if (heads <= 0 || kq <= 0 || kk <= 0) return;
  const std::int64_t rows = static_cast<std::int64_t>(heads) * kq;
  ranges_kernel<false><<<range_blocks(rows), kRangeThreads, 0, stream>>>(keep, q_sizes, k_offsets, kq, kk, rows,
                                                                         range_count, nullptr, nullptr, nullptr);
}

void launch_write_ranges(const std::uint8_t* keep, const std::int32_t* q_sizes, const std::int32_t* k_offsets,
                         int heads, int kq, int kk, const std::int64_t* range_ptr, std::int32_t* range_begin,
                         std::int32_t* range_end, cudaStream_t stream) {
  if (heads <= 0 || kq <= 0 || kk <= 0) return;
  const std::int64_t rows = static_cast<std::int64_t>(heads) * kq;
  ranges_kernel<true><<<range_blocks(rows), kRangeThreads, 0, stream>>>(keep, q_sizes, k_offsets, kq, kk, rows,
                                                                        nullptr, range_ptr, range_begin, range_end);
}

}  // namespace svoo::cuda::detail
