#include "device_views.hpp"

#include "svoo/error.hpp"

namespace svoo::cuda::detail {

RowsView device_rows(const TensorView& t, const std::string& who, const std::int64_t* expect) {
  require(t.data != nullptr, ErrorKind::invalid_argument, who + " has no data pointer");
  require(t.rank == 3, ErrorKind::shape, who + " must have shape [heads, tokens, head_dim], got " + t.describe());
  require(t.device == Device::cuda, ErrorKind::device, who + " must be on cuda, got " + t.describe());
  require(t.dtype == DType::bf16 || t.dtype == DType::f16, ErrorKind::dtype,
          who + " must be bf16 or f16 on the GPU, got " + t.describe());
  if (expect) {
    require(t.shape[0] == expect[0] && t.shape[1] == expect[1] && t.shape[2] == expect[2], ErrorKind::shape,
            who + " must have shape [" + std::to_string(expect[0]) + ", " + std::to_string(expect[1]) + ", " +
                std::to_string(expect[2]) + "] (the plan's), got " + t.describe());
  }
  require(t.shape[2] == 128, ErrorKind::unsupported, who + ": only head_dim 128 is built, got " + t.describe());
  require(t.strides[2] == 1, ErrorKind::stride, who + " must be contiguous in head_dim, got " + t.describe());
  require(t.strides[0] % 8 == 0 && t.strides[1] % 8 == 0 && reinterpret_cast<std::uintptr_t>(t.data) % 16 == 0,
          ErrorKind::stride, who + " rows must start on 16-byte boundaries (strides multiple of 8), got " + t.describe());
  // The kernels address a row as base + token x row pitch with a 32-bit pitch in bytes (one wide
  // multiply-add a copy).
  require(t.strides[0] >= 0 && t.strides[1] >= 0, ErrorKind::stride,
          who + " must not have negative strides, got " + t.describe());
  require(t.strides[1] * 2 < (std::int64_t{1} << 32), ErrorKind::stride,
          who + " rows must be less than 4 GiB apart (a row stride below 2^31 elements), got " + t.describe());
  RowsView r;
  r.data = t.data;
  r.elem = t.dtype == DType::bf16 ? Elem::bf16 : Elem::f16;
  r.heads = t.shape[0], r.tokens = t.shape[1], r.dim = t.shape[2];
  r.head_stride = t.strides[0], r.row_stride = t.strides[1];
  return r;
}

}  // namespace svoo::cuda::detail
