// Synthetic captures for the profiler: one safetensors file per "input" in the capture layout of
// docs/capture-format.md (q.s{step}.l{layer}, k.s{step}.l{layer}), built from the synthetic
// workload. The per-head target densities depend only on (step, layer, head), so captures with
// different seeds differ in content but, by construction, hardly in density; `jitter` > 0
// multiplies every target by exp(jitter * u), u uniform in [-1, 1] drawn from the seed, to
// make an input-dependent (unstable) case.
#pragma once

#include <cstdint>

#include "svoo/safetensors.hpp"
#include "svoo/synthetic.hpp"

namespace svoo {

struct SyntheticCaptureConfig {
  int steps = 2, layers = 2;
  SyntheticConfig layer;  // grid, heads, dim, dtype, seed (the input's seed); targets ignored
  double jitter = 0.0;
};

// The target density of (step, layer, head) before jitter: a fixed, seed-independent spread in
// [0.04, 0.5] with a mild trend over steps.
double synthetic_capture_target(int step, int layer, int head, int steps);

SafetensorsFile make_synthetic_capture(const SyntheticCaptureConfig& config);

}  // namespace svoo
