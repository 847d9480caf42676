// Internal: TMA tensor maps (CUtensorMap) of [heads, tokens, dim] row views, for the Hopper
// kernels' bulk tensor copies. Encoded on the host through the driver's entry point (the runtime
// links no libcuda), 128-byte swizzle: a box of 64 columns x `box_rows` rows lands in shared memory
// in the layout the wgmma descriptors read (wgmma.cuh).
#pragma once

#include <cuda.h>

#include "kernels.cuh"

namespace svoo::cuda::detail {

// Encodes map for view (bf16 or f16, dim 128, every stride a multiple of 16 bytes, 16-byte
// aligned data); false where the view does not qualify or the driver lacks the entry point (the
// caller then copies without TMA).
bool encode_rows_map(CUtensorMap& map, const RowsView& view, int box_rows);

}  // namespace svoo::cuda::detail
