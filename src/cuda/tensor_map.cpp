#include "tensor_map.hpp"

#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstdint>

namespace svoo::cuda::detail {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      p = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

}  // namespace

bool encode_rows_map(CUtensorMap& map, const RowsView& v, int box_rows) {
  constexpr std::int64_t kElem = 2;
  if (v.dim != 128 || v.heads <= 0 || v.tokens <= 0 || box_rows < 1 || box_rows > 256) return false;
  if (reinterpret_cast<std::uintptr_t>(v.data) % 16 != 0) return false;
  const std::int64_t row_bytes = v.row_stride * kElem;
  const std::int64_t head_bytes = v.heads == 1 ? v.tokens * row_bytes : v.head_stride * kElem;
  if (row_bytes <= 0 || head_bytes <= 0 || row_bytes % 16 != 0 || head_bytes % 16 != 0) return false;
  if (row_bytes >= (std::int64_t{1} << 40) || head_bytes >= (std::int64_t{1} << 40)) return false;
  if (v.tokens >= (std::int64_t{1} << 31) || v.heads >= (std::int64_t{1} << 31)) return false;
  const auto encode = encoder();
  if (encode == nullptr) return false;
  const cuuint64_t dims[3] = {128, static_cast<cuuint64_t>(v.tokens), static_cast<cuuint64_t>(v.heads)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(row_bytes), static_cast<cuuint64_t>(head_bytes)};
  const cuuint32_t box[3] = {64, static_cast<cuuint32_t>(box_rows), 1};
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  const CUtensorMapDataType type =
      v.elem == Elem::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  return encode(&map, type, 3, const_cast<void*>(v.data), dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace svoo::cuda::detail
