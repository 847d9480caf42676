// Internal: facts about the current CUDA device that the launchers choose by, read once per process
// (the first device a launcher runs on; the backend uses one device a process).
#pragma once

namespace svoo::cuda::detail {

// Compute capability 9.0: the device runs this build's sm_90a (wgmma) kernels.
bool hopper_device();
// Streaming multiprocessors: the grid of the persistent kernels.
int sm_count();
// Throws Error(unsupported) naming `where` and the device when it cannot run this build's kernels:
// no device, or compute capability below 8.0 (the portable kernels use sm_80's cp.async, ldmatrix
// and bf16 mma.sync; without this check such a card fails with "no kernel image").
void require_supported_device(const char* where);

}  // namespace svoo::cuda::detail
