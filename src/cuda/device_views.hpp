// Internal: the one validation of a device [heads, tokens, 128] bf16/f16 TensorView before a
// kernel reads it (16-byte rows for cp.async), shared by the planner, the attention entry points
// and tau_density.
#pragma once

#include <cstdint>
#include <string>

#include "kernels.cuh"
#include "svoo/tensor.hpp"

namespace svoo::cuda::detail {

// `who` names the argument in errors ("cuda::sparse_attention: q"). With `expect` ([heads,
// tokens, dim]) the shape must match it exactly ("the plan's").
RowsView device_rows(const TensorView& t, const std::string& who, const std::int64_t* expect = nullptr);

}  // namespace svoo::cuda::detail
