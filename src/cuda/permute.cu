// Row permutation of [heads, tokens, dim] bf16 / f16 tensors (spec 2.4): gather into cluster
// order (dst[h, r] = src[h, perm[h, r]]) or scatter back to token order (dst[h, perm[h, r]] =
// src[h, r]). A pure copy of raw 2-byte elements, so the element type only fixes the size.
//
// One warp per row, several rows per block, a block-stride loop over heads*tokens rows. When both
// views' base pointers and strides keep every row 16-byte aligned and a row is a whole number of
// 16-byte words (dim % 8 == 0, e.g. dim = 128: 256 bytes = one uint4 per lane, fully coalesced),
// the copy uses 16-byte loads and stores; otherwise it copies element by element. The choice is
// made in the launcher from the actual pointers and strides. src and dst must not overlap; a perm
// entry outside [0, tokens) is skipped (its destination row is left untouched).
#include <cstdint>

#include "common.cuh"
#include "kernels.cuh"

namespace svoo::cuda::detail {
namespace {

constexpr int kPermuteThreads = 256;
constexpr int kRowsPerBlock = kPermuteThreads / 32;

// Strides in bytes; words = row length in units of Word.
template <class Word>
__global__ void __launch_bounds__(kPermuteThreads)
    permute_kernel(const unsigned char* src, std::int64_t src_head, std::int64_t src_row, unsigned char* dst,
                   std::int64_t dst_head, std::int64_t dst_row, const std::int32_t* perm, bool inverse,
                   std::int64_t tokens, std::int64_t rows, std::int64_t words) {
  const int lane = threadIdx.x & 31;
  const std::int64_t warp = threadIdx.x >> 5;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kRowsPerBlock;
  for (std::int64_t row = blockIdx.x * static_cast<std::int64_t>(kRowsPerBlock) + warp; row < rows; row += stride) {
    const std::int64_t h = row / tokens, r = row - h * tokens;
    const std::int64_t p = perm[row];  // perm[h, r]
    if (p < 0 || p >= tokens) continue;
    const std::int64_t from = inverse ? r : p, to = inverse ? p : r;
    const Word* s = reinterpret_cast<const Word*>(src + h * src_head + from * src_row);
    Word* d = reinterpret_cast<Word*>(dst + h * dst_head + to * dst_row);
    for (std::int64_t i = lane; i < words; i += 32) d[i] = s[i];
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }
bool multiple16(std::int64_t bytes) { return bytes % 16 == 0; }

}  // namespace

void launch_permute_rows(const RowsView& src, const std::int32_t* perm, bool inverse, const MutableRowsView& dst,
                         cudaStream_t stream) {
  if (src.heads <= 0 || src.tokens <= 0 || src.dim <= 0) return;
  // The contract: same extents on both sides (checked by the caller); never copy out of bounds.
  if (dst.heads != src.heads || dst.tokens != src.tokens || dst.dim != src.dim) return;
  constexpr std::int64_t kElemBytes = 2;  // bf16 and f16
  const std::int64_t rows = src.heads * src.tokens;
  const std::int64_t src_head = src.head_stride * kElemBytes, src_row = src.row_stride * kElemBytes;
  const std::int64_t dst_head = dst.head_stride * kElemBytes, dst_row = dst.row_stride * kElemBytes;
  const std::int64_t row_bytes = src.dim * kElemBytes;
  // A stride only matters when there is more than one head / token.
  const bool vec = aligned16(src.data) && aligned16(dst.data) && multiple16(row_bytes) &&
                   (src.heads == 1 || (multiple16(src_head) && multiple16(dst_head))) &&
                   (src.tokens == 1 || (multiple16(src_row) && multiple16(dst_row)));
  const unsigned blocks = grid_for_items((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  const auto* s = static_cast<const unsigned char*>(src.data);
  auto* d = static_cast<unsigned char*>(dst.data);
  if (vec)
    permute_kernel<uint4><<<blocks, kPermuteThreads, 0, stream>>>(s, src_head, src_row, d, dst_head, dst_row, perm,
                                                                  inverse, src.tokens, rows, row_bytes / 16);
  else
    permute_kernel<unsigned short><<<blocks, kPermuteThreads, 0, stream>>>(
        s, src_head, src_row, d, dst_head, dst_row, perm, inverse, src.tokens, rows, src.dim);
}

}  // namespace svoo::cuda::detail
