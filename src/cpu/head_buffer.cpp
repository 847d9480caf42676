#include "head_buffer.hpp"

#include <cmath>
#include <cstring>
#include <string>

#include "svoo/error.hpp"

namespace svoo::cpu {

void gather_head(const TensorView& t, std::int64_t head, float* dst, const char* name) {
  const std::int64_t tokens = t.shape[1], dim = t.shape[2];
  for (std::int64_t n = 0; n < tokens; ++n) {
    const std::int64_t base = head * t.strides[0] + n * t.strides[1];
    float* row = dst + n * dim;
    if (t.dtype == DType::f32) {
      std::memcpy(row, static_cast<const float*>(t.data) + base, sizeof(float) * dim);
    } else {
      for (std::int64_t d = 0; d < dim; ++d) row[d] = load_as_float(t.data, t.dtype, base + d);
    }
    float sum = 0.0f;
    for (std::int64_t d = 0; d < dim; ++d) sum += row[d] * 0.0f;  // NaN or inf poisons the sum
    if (!std::isfinite(sum) || std::isnan(sum)) {
      fail(ErrorKind::non_finite, std::string(name) + " has a NaN or infinite value at head " + std::to_string(head) +
                                      ", token " + std::to_string(n));
    }
  }
}

std::vector<float> gather_head(const TensorView& t, std::int64_t head, const char* name) {
  std::vector<float> buf(static_cast<std::size_t>(t.shape[1] * t.shape[2]));
  gather_head(t, head, buf.data(), name);
  return buf;
}

void store_row(const TensorView& t, std::int64_t head, std::int64_t token, const float* src) {
  const std::int64_t base = head * t.strides[0] + token * t.strides[1];
  const std::int64_t dim = t.shape[2];
  if (t.dtype == DType::f32) {
    std::memcpy(static_cast<float*>(t.data) + base, src, sizeof(float) * dim);
  } else {
    for (std::int64_t d = 0; d < dim; ++d) store_from_float(t.data, t.dtype, base + d, src[d]);
  }
}

}  // namespace svoo::cpu
