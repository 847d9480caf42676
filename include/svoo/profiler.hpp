// The offline profiler (spec 1): tau-densities of captured Q/K for several inputs, aggregated
// per (step, layer, head). Capture layout: docs/capture-format.md.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "svoo/measures.hpp"
#include "svoo/profile.hpp"
#include "svoo/safetensors.hpp"
#include "svoo/stability.hpp"

namespace svoo {

// One (step, layer) of a capture: tensors `q.s{step}.l{layer}` and `k.s{step}.l{layer}`.
struct CaptureSlot {
  int step = 0, layer = 0;
  bool operator==(const CaptureSlot&) const = default;
  auto operator<=>(const CaptureSlot&) const = default;
};
std::string capture_tensor_name(char qk, const CaptureSlot& slot);  // "q.s3.l7"

// The slots of one capture, sorted. Error(format) naming `source` for: a tensor name that is not
// q.s{step}.l{layer} / k.s{step}.l{layer} with step >= 1, layer >= 0 (decimal, no sign or leading
// zeros); a q without its k or a k without its q; no slots at all. `v.*` tensors are ignored.
std::vector<CaptureSlot> capture_slots(const SafetensorsFile& capture, const std::string& source);

struct ProfilerOptions {
  double tau = 0.95;
  RowSample rows;  // rows per head (0: all) and their seed
  Aggregate aggregate = Aggregate::max;
  // Device::cuda: svoo::cuda::tau_density (bf16/f16 captures; needs a build with CUDA and a visible
  // GPU, else Error(unsupported)); its counts lie within a bracket of the exact ones (svoo/cuda.hpp).
  Device device = Device::cpu;
};

// Called after each (step, layer): the profile so far, the slot, its position (1-based) of
// `total`, and whether it was skipped because `resume` already had it.
using ProfilerCallback =
    std::function<void(const Profile& so_far, const CaptureSlot& slot, int position, int total, bool skipped)>;

// Every input must hold the same slots with the same head count (tokens may differ). Entries of
// `resume` (may be null) whose statistics count equals the number of inputs are kept and their
// (step, layer) not recomputed when all its heads are there. Error(invalid_argument/format/shape)
// with the input's name on any mismatch.
Profile profile_captures(const std::vector<SafetensorsFile>& captures, const std::vector<std::string>& sources,
                         const ProfilerOptions& options, const Profile* resume = nullptr,
                         const ProfilerCallback& callback = {});

// Writes the CSV to `path` + ".tmp" and renames it over `path`, so a reader or an interrupted run
// sees either the old or the new file, never a half-written one.
void save_profile_csv_atomic(const std::string& path, const Profile& profile);

}  // namespace svoo
