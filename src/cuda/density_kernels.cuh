// Internal: the launcher of the device tau-density (density.cu) and its arguments.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.cuh"

namespace svoo::cuda::detail {

// Per-row arrays are [heads, nrows] (the same sampled rows for every head), device memory.
struct DensityArgs {
  RowsView q, k;                        // [heads, tokens, 128], bf16 or f16, 16-byte rows
  const std::int64_t* rows = nullptr;   // [nrows] query tokens, or null: every token (nrows = q tokens)
  std::int64_t nrows = 0;
  double tau = 0.95;                    // in (0, 1]
  float scale_log2 = 0.f;               // log2(e) / sqrt(dim)
  float fixed_scale = 0.f;              // density::fixed_scale(k tokens)
  float* row_ref = nullptr;             // pass 1 -> 2: each row's reference (see density_math.hpp)
  float* row_peak = nullptr;            // pass 1 -> 2: each row's max (tau == 1 counts p > 0 against it)
  std::int32_t *bstar = nullptr, *fb_lo = nullptr, *fb_hi = nullptr;  // pass 1 -> 2
  // pass 1 -> 2: the exact mass above the crossing bin, the total, their error bound, the count above
  double *row_above = nullptr, *row_total = nullptr, *row_error = nullptr;
  std::int32_t* row_count_above = nullptr;
  int drop = 0;                         // density::exact_drop(k tokens)
  std::int32_t *counts = nullptr, *count_lo = nullptr, *count_hi = nullptr;  // results per row
  std::uint8_t* fallback = nullptr;     // 1 where level 1 misplaced the crossing (see density_math.hpp)
  // The Hopper search (density_search.hpp): row_ref holds the reference c, row_peak the row max,
  // row_above / row_total B (the mass below the fine window) and T; the window of the next pass in
  // octaves [win_lo, win_hi).
  float *win_lo = nullptr, *win_hi = nullptr;
  float span = 0.f;                     // log2(k tokens / (1 - tau)); 0 for tau = 1
  // The default search (density_search.hpp, interp_window): pass 1 places pass 3's window by
  // interpolation (and keeps the masses below its coarse window's ends, row_b_hi / row_b_lo), and
  // pass 3 marks in `fallback` the rows of a later round: 1, pass 3 again on the window
  // reinterp_window places (round 2); 2, passes 2 and 3 on the coarse window (round 3). round: pass
  // 3's round (1, 2; 0 the last, whose fallback flags are the results'). interp == false
  // (SVOO_DENSITY_SEARCH=three): passes 1, 2 and 3 on every row.
  bool interp = false;
  int round = 0;
  float interp_width = 0.5f;            // the windows' least width in octaves (SVOO_DENSITY_WIDTH)
  double *row_b_hi = nullptr, *row_b_lo = nullptr;
  // A later round's work: per item (kRows = 128 entries) the rows of one head (-1: none), the head
  // of each item, and the item count (device memory: the list is built on the device). Null: every
  // row of every head, in order.
  const std::int32_t* list = nullptr;
  const std::int32_t* list_head = nullptr;
  const std::int32_t* list_items = nullptr;
  // Workspace of the list's construction: per head its rows and its first item.
  std::int32_t *head_count = nullptr, *head_item0 = nullptr;
  std::int32_t *list_out = nullptr, *list_head_out = nullptr, *list_items_out = nullptr;
  std::int32_t* nonfinite = nullptr;    // set where q (rows measured) or k holds a NaN or an infinity
};

// The Hopper passes (density_wgmma.cu; hopper_device() says where they run). passes < 3 stops
// early (benchmark breakdown only: the results are then invalid).
void launch_density_wgmma_passes(const DensityArgs& args, int passes, cudaStream_t stream);

// The passes (Hopper's where available, else density.cu's two) and the per-head mean: density[h]
// (fp64), optionally bound[h] = mean width of the per-row brackets / k tokens and fallbacks[h]
// (rows). Stream-ordered, no allocation. SVOO_DENSITY_PATH=mma selects density.cu's passes.
void launch_tau_density(const DensityArgs& args, double* density, double* bound, std::int32_t* fallbacks,
                        cudaStream_t stream);

}  // namespace svoo::cuda::detail
