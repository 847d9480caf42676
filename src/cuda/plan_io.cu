// Plan state in and out of the Planner's workspace for callers that keep their own (svoo.torch,
// svoo.diffusers): label copies clamped into range, so that caller labels can never index outside
// the workspace; labels rebuilt from a loaded clustering's permutations.
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

// Block (c, h) writes label c at the tokens of cluster c of head h: perm[h, off[h, c] ..
// off[h, c + 1]) (the cluster's members in sorted order).
__global__ void labels_from_layout_kernel(const std::int32_t* perm, const std::int32_t* offsets, std::int64_t tokens,
                                          int clusters, std::int32_t* labels) {
  const std::int64_t h = blockIdx.y;
  const int c = static_cast<int>(blockIdx.x);
  const std::int32_t* off = offsets + h * (clusters + 1);
  const std::int32_t* ph = perm + h * tokens;
  std::int32_t* lh = labels + h * tokens;
  for (std::int64_t j = off[c] + threadIdx.x; j < off[c + 1]; j += blockDim.x) lh[ph[j]] = c;
}

}  // namespace

// labels[h, perm[h, j]] = c for every j in [offsets[h, c], offsets[h, c + 1]): the labels a
// clustering's permutation and offsets imply.
void launch_labels_from_layout(const std::int32_t* perm, const std::int32_t* offsets, std::int64_t heads,
                               std::int64_t tokens, int clusters, std::int32_t* labels, cudaStream_t stream) {
  if (heads <= 0 || tokens <= 0 || clusters <= 0) return;
  labels_from_layout_kernel<<<dim3(static_cast<unsigned>(clusters), static_cast<unsigned>(heads)), 128, 0, stream>>>(
      perm, offsets, tokens, clusters, labels);
}

// dst[i] = clamp(src[i], 0, clusters - 1) for i < n.
void launch_clamp_labels(const std::int32_t* src, std::int32_t* dst, std::int64_t n, int clusters,
                         cudaStream_t stream) {
  if (n <= 0) return;
  const std::int64_t blocks = (n + 255) / 256;
  clamp_copy_kernel<<<static_cast<unsigned>(blocks < 4096 ? blocks : 4096), 256, 0, stream>>>(src, dst, n, clusters);
}

}  // namespace svoo::cuda::detail
