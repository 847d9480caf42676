// Internal: facts about the current CUDA device that the launchers choose by, read once per process
// (the first device a launcher runs on; the backend uses one device a process).
#pragma once

namespace svoo::cuda::detail {

// Compute capability 9.0: the device runs this build's sm_90a (wgmma) kernels.
bool hopper_device();
// Streaming multiprocessors: the grid of the persistent kernels.
int sm_count();

}  // namespace svoo::cuda::detail
