// Internal: moves one head of a [heads, tokens, dim] view to and from a contiguous fp32 buffer.
// All CPU algorithms work in fp32 on such buffers (fp32 accumulation, whatever the input dtype).
#pragma once

#include <cstdint>
#include <vector>

#include "svoo/tensor.hpp"

namespace svoo::cpu {

// Copies rows [0, tokens) of head `head` into dst (tokens x dim, row-major). Throws
// ErrorKind::non_finite naming `name`, the head and the token on NaN or infinity.
void gather_head(const TensorView& t, std::int64_t head, float* dst, const char* name);

// Same, returning a new buffer.
std::vector<float> gather_head(const TensorView& t, std::int64_t head, const char* name);

// Copies one row of dim floats, rounded to the view's dtype, to row `token` of head `head`.
void store_row(const TensorView& t, std::int64_t head, std::int64_t token, const float* src);

}  // namespace svoo::cpu
