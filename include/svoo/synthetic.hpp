// A synthetic workload of video-like attention inputs (no model weights can be downloaded, so
// this is the embedded default for demos, tests and benchmarks). Tokens sit on a
// (frames, height, width) grid; each head is built from content vectors of a chosen kind, then
// 3-D rotary position encoding (RoPE) is applied as in Wan2.1, and a per-head temperature is
// calibrated so the head's tau-density (spec section 1) equals a requested value.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "svoo/tensor.hpp"

namespace svoo {

enum class HeadKind {
  spatial_local,   // attends to nearby tokens in (height, width) across a few frames
  temporal_local,  // attends to the same spatial position in nearby frames
  semantic,        // attends to tokens of the same moving object across all frames
  near_global,     // attends broadly (high density)
};
const char* head_kind_name(HeadKind kind) noexcept;

struct SyntheticConfig {
  int frames = 8;    // latent frames
  int height = 30;   // latent rows (Wan2.1 480p after 2x2 patching: 30 x 52)
  int width = 52;
  int heads = 12;
  int dim = 128;     // even; split across the three RoPE axes like Wan2.1 (t: dim - 4*(dim/6), h, w: 2*(dim/6))
  DType dtype = DType::bf16;
  std::uint64_t seed = 0;
  // Requested tau-density per head (empty: a spread of values typical of the reference profiles).
  std::vector<double> target_density;
  // Head kinds (empty: cycles spatial_local, temporal_local, semantic, near_global).
  std::vector<HeadKind> kinds;
  double tau = 0.95;
  int calibration_rows = 256;  // sampled query rows used to measure density during calibration
  int objects = 12;            // moving objects for semantic heads
};

struct SyntheticLayer {
  HostTensor q, k, v;                   // [heads, frames*height*width, dim], dtype of the config
  std::vector<HeadKind> kinds;          // per head
  std::vector<double> target_density;   // per head, as requested
  std::vector<double> achieved_density; // per head, measured on the stored (rounded) q, k
  std::vector<double> temperature;      // per head: the logit multiplier found by calibration
  std::int64_t tokens() const noexcept { return q.shape().size() == 3 ? q.shape()[1] : 0; }
};

// Deterministic for a given config (seed included). Throws Error(invalid_argument) for a grid or
// dim that is empty or odd, targets outside (0, 1], or sizes that do not match `heads`.
SyntheticLayer make_synthetic_layer(const SyntheticConfig& config);

}  // namespace svoo
