// Validation shared by every attention entry point: Q [heads, q_tokens, dim], K and V
// [heads, k_tokens, dim], floating dtypes, the last dimension contiguous.
#pragma once

#include <cstdint>

#include "svoo/tensor.hpp"

namespace svoo {

struct AttentionShape {
  std::int64_t heads = 0;
  std::int64_t q_tokens = 0;
  std::int64_t k_tokens = 0;
  std::int64_t dim = 0;
};

// Checks q, k (and v unless null) for rank, matching extents, equal floating dtypes, the device,
// a unit stride on the last dimension and positive outer strides. `where` names the caller in
// messages ("cpu::sparse_attention").
AttentionShape check_qkv(const TensorView& q, const TensorView& k, const TensorView* v, Device device,
                         const char* where);

// Checks an output [heads, tokens, dim] view: floating dtype, device, unit last stride and rows that
// do not overlap one another.
void check_output(const TensorView& out, const AttentionShape& shape, Device device, const char* where);

}  // namespace svoo
