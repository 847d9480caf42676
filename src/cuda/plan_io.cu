// Plan state in and out of the Planner's workspace for callers that keep their own (svoo.torch,
// svoo.diffusers): label copies clamped into range, so that caller labels can never index outside
// the workspace.
#include <cuda_runtime.h>

#include <cstdint>

namespace svoo::cuda::detail {
namespace {

__global__ void clamp_copy_kernel(const std::int32_t* src, std::int32_t* dst, std::int64_t n, int clusters) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int32_t l = src[i];
    dst[i] = l < 0 ? 0 : (l >= clusters ? clusters - 1 : l);
  }
}

}  // namespace

// dst[i] = clamp(src[i], 0, clusters - 1) for i < n.
void launch_clamp_labels(const std::int32_t* src, std::int32_t* dst, std::int64_t n, int clusters,
                         cudaStream_t stream) {
  if (n <= 0) return;
  const std::int64_t blocks = (n + 255) / 256;
  clamp_copy_kernel<<<static_cast<unsigned>(blocks < 4096 ? blocks : 4096), 256, 0, stream>>>(src, dst, n, clusters);
}

}  // namespace svoo::cuda::detail
