// The stable sort of a side's tokens by cluster label, per head: the permutation, cluster offsets
// and sizes of a centroid update (and of the block layout).
//
// Tiled counting sort (the default where clusters <= 2048): the tokens of a head are cut into
// tiles of 2048.
//   1. tile_histogram_kernel: each tile's label counts, [h][tile][c] (coalesced rows);
//   2. tile_scan_kernel, a block a head: for each cluster, the exclusive sum of its counts over the
//      tiles, in place (tile t's members of c start there, within c), and over clusters the
//      offsets and sizes;
//   3. tile_scatter_kernel: each tile sorts its (label, token) pairs in shared memory (cub's block
//      radix sort, stable) and writes token i to its cluster's offset plus its tile's start plus its
//      rank among the tile's members of the same cluster.
// It reads the labels twice and writes the permutation once; the general path, cub's device radix
// sort of (head, label) keys, makes two to three passes over keys and values in global memory.
// Both are stable and deterministic and give bit-identical results; SVOO_LABEL_SORT=cub selects the
// general path (A/B).
#include <cub/cub.cuh>

#include <cstdlib>
#include <cstring>

#include "cluster_ops.cuh"
#include "common.cuh"

namespace svoo::cuda::detail {
namespace {

// ---- tiled counting sort ----

constexpr int kThreads = 256, kItems = 8, kTile = kThreads * kItems;
constexpr int kMaxClusters = 2048;  // the histogram and first positions in shared memory

__global__ void __launch_bounds__(kThreads) tile_histogram_kernel(const std::int32_t* labels, std::int64_t tokens,
                                                                  int clusters, int tiles, std::int32_t* counts) {
  __shared__ int hist[kMaxClusters];
  const int tile = blockIdx.x;
  const std::int64_t h = blockIdx.y;
  for (int c = threadIdx.x; c < clusters; c += kThreads) hist[c] = 0;
  __syncthreads();
  const std::int32_t* l = labels + h * tokens;
  const std::int64_t begin = static_cast<std::int64_t>(tile) * kTile;
  const std::int64_t end = begin + kTile < tokens ? begin + kTile : tokens;
  for (std::int64_t i = begin + threadIdx.x; i < end; i += kThreads) atomicAdd(&hist[l[i]], 1);
  __syncthreads();
  std::int32_t* out = counts + (h * tiles + tile) * clusters;
  for (int c = threadIdx.x; c < clusters; c += kThreads) out[c] = hist[c];
}

// A block of 1024 threads a head; thread t owns clusters t and t + 1024. counts [h][tile][c]
// becomes, in place, the exclusive sum over tiles < tile of c's counts; offsets [h][c] the
// exclusive sum over clusters < c of the sizes (and offsets [h][clusters] = tokens); sizes [h][c].
constexpr int kScanThreads = 1024;
__global__ void __launch_bounds__(kScanThreads) tile_scan_kernel(std::int32_t* counts, std::int64_t tokens, int clusters,
                                                                 int tiles, std::int32_t* offsets, std::int32_t* sizes) {
  using Scan = cub::BlockScan<int, kScanThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  const std::int64_t h = blockIdx.x;
  std::int32_t* ch = counts + h * tiles * clusters;
  int total[2] = {0, 0};
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const int c = threadIdx.x + k * kScanThreads;
    if (c >= clusters) continue;
    int run = 0;
    for (int t0 = 0; t0 < tiles; t0 += 8) {  // 8 loads in flight before the first store
      int v[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) v[u] = t0 + u < tiles ? ch[static_cast<std::int64_t>(t0 + u) * clusters + c] : 0;
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        if (t0 + u < tiles) ch[static_cast<std::int64_t>(t0 + u) * clusters + c] = run;
        run += v[u];
      }
    }
    total[k] = run;
  }
  int base0 = 0, base1 = 0, sum0 = 0;
  Scan(scan_storage).ExclusiveSum(total[0], base0, sum0);
  __syncthreads();  // scan_storage reused
  Scan(scan_storage).ExclusiveSum(total[1], base1);
  base1 += sum0;
  std::int32_t* oh = offsets + h * (clusters + 1);
  std::int32_t* sh = sizes + h * clusters;
  const int c0 = threadIdx.x, c1 = threadIdx.x + kScanThreads;
  if (c0 < clusters) oh[c0] = base0, sh[c0] = total[0];
  if (c1 < clusters) oh[c1] = base1, sh[c1] = total[1];
  if (threadIdx.x == 0) oh[clusters] = static_cast<std::int32_t>(tokens);
}

__global__ void __launch_bounds__(kThreads) tile_scatter_kernel(const std::int32_t* labels, std::int64_t tokens,
                                                                int clusters, int tiles, int bits,
                                                                const std::int32_t* starts, const std::int32_t* offsets,
                                                                std::int32_t* perm) {
  using Sort = cub::BlockRadixSort<unsigned, kThreads, kItems, std::int32_t>;
  __shared__ typename Sort::TempStorage sort_storage;
  __shared__ unsigned sorted[kTile];
  __shared__ int first[kMaxClusters];
  const int tile = blockIdx.x;
  const std::int64_t h = blockIdx.y;
  const std::int32_t* l = labels + h * tokens;
  const std::int64_t begin = static_cast<std::int64_t>(tile) * kTile;
  // Blocked arrangement: thread t holds tile positions t * kItems + i (the order the sort keeps
  // among equal keys). Past the end: the label `clusters`, which sorts last and is not written.
  unsigned key[kItems];
  std::int32_t tok[kItems];
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const std::int64_t n = begin + threadIdx.x * kItems + i;
    key[i] = n < tokens ? static_cast<unsigned>(l[n]) : static_cast<unsigned>(clusters);
    tok[i] = static_cast<std::int32_t>(n);
  }
  Sort(sort_storage).Sort(key, tok, 0, bits);
#pragma unroll
  for (int i = 0; i < kItems; ++i) sorted[threadIdx.x * kItems + i] = key[i];
  __syncthreads();
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int p = threadIdx.x * kItems + i;
    if (key[i] < static_cast<unsigned>(clusters) && (p == 0 || sorted[p - 1] != key[i])) first[key[i]] = p;
  }
  __syncthreads();
  const std::int32_t* st = starts + (h * tiles + tile) * clusters;
  const std::int32_t* oh = offsets + h * (clusters + 1);
  std::int32_t* ph = perm + h * tokens;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    if (key[i] >= static_cast<unsigned>(clusters)) continue;
    const int p = threadIdx.x * kItems + i;
    ph[oh[key[i]] + st[key[i]] + (p - first[key[i]])] = tok[i];
  }
}

// ---- general path: cub's device radix sort of (head, label) keys ----

__global__ void sort_keys_kernel(const std::int32_t* labels, std::int64_t tokens, std::int64_t items, int clusters,
                                 std::int32_t* keys, std::int32_t* vals) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t h = i / tokens;
    keys[i] = static_cast<std::int32_t>(h * clusters + labels[i]);
    vals[i] = static_cast<std::int32_t>(i - h * tokens);
  }
}

// From the sorted keys (h * clusters + label), the first position of every key: the thread at a
// position where the key changes writes it for each key in (previous key, this key] (the empty
// clusters in between start where the next non-empty one does; keys past the last item start at the
// end), as an offset within its head. Every head holds exactly `tokens` items, so the head of key
// kk starts at kk / clusters * tokens. No atomics: the result does not depend on scheduling.
__global__ void cluster_starts_kernel(const std::int32_t* sorted, std::int64_t tokens, std::int64_t items,
                                      int clusters, std::int32_t* offsets) {
  const std::int64_t keys = items / tokens * clusters;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i <= items;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t prev = i == 0 ? -1 : sorted[i - 1];
    const std::int64_t cur = i == items ? keys : sorted[i];  // past the end: one past the last key
    for (std::int64_t kk = prev + 1; kk <= cur && kk < keys; ++kk) {
      const std::int64_t h = kk / clusters, c = kk % clusters;
      offsets[h * (clusters + 1) + c] = static_cast<std::int32_t>(i - h * tokens);
    }
  }
}

// offsets[h, clusters] = tokens; sizes[h, c] = offsets[h, c + 1] - offsets[h, c].
__global__ void sizes_kernel(std::int64_t heads, std::int64_t tokens, int clusters, std::int32_t* offsets,
                             std::int32_t* sizes) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < heads * clusters;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t h = i / clusters, c = i % clusters;
    const std::int32_t* o = offsets + h * (clusters + 1);
    const std::int32_t end = c + 1 == clusters ? static_cast<std::int32_t>(tokens) : o[c + 1];
    if (c + 1 == clusters) offsets[h * (clusters + 1) + clusters] = static_cast<std::int32_t>(tokens);
    sizes[i] = end - o[c];
  }
}

int tiles_for(std::int64_t tokens) { return static_cast<int>((tokens + kTile - 1) / kTile); }

bool tiled_by_default() {
  static const bool tiled = [] {
    const char* e = std::getenv("SVOO_LABEL_SORT");
    return !(e && std::strcmp(e, "cub") == 0);
  }();
  return tiled;
}

}  // namespace

std::int64_t tile_sort_count_items(std::int64_t heads, std::int64_t tokens, int clusters) {
  const std::int64_t items = heads * tiles_for(tokens) * clusters;
  return clusters <= kMaxClusters && items < (std::int64_t{1} << 31) ? items : 0;
}

bool sort_needs_general_scratch(std::int64_t heads, std::int64_t tokens, int clusters) {
  return tile_sort_count_items(heads, tokens, clusters) == 0 || !tiled_by_default();
}

std::size_t sort_temp_bytes(std::int64_t heads, std::int64_t tokens, int clusters) {
  int key_bits = 1;
  while ((std::int64_t{1} << key_bits) <= heads * clusters) ++key_bits;
  std::size_t bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<std::int32_t*>(nullptr),
                                  static_cast<std::int32_t*>(nullptr), static_cast<std::int32_t*>(nullptr),
                                  static_cast<std::int32_t*>(nullptr), static_cast<int>(heads * tokens), 0, key_bits);
  return bytes;
}

void launch_sort_labels(const std::int32_t* labels, std::int64_t heads, std::int64_t tokens, int clusters,
                        const SortScratch& s, std::int32_t* sizes, std::int32_t* offsets, std::int32_t* perm,
                        cudaStream_t stream, SortPath path) {
  const std::int64_t items = heads * tokens;
  if (items == 0) return;
  const std::int64_t counts = tile_sort_count_items(heads, tokens, clusters);
  if (path == SortPath::automatic) path = tiled_by_default() ? SortPath::tiled : SortPath::cub;
  const bool can_tile = counts > 0 && s.counts != nullptr;
  const bool can_general = s.keys_in && s.keys_out && s.vals_in && s.temp;
  if (path == SortPath::cub && !can_general) path = SortPath::tiled;  // a planner without its scratch
  std::size_t bytes = s.temp_bytes;
  if (path == SortPath::tiled && can_tile) {
    const int tiles = tiles_for(tokens);
    int bits = 1;
    while ((1 << bits) <= clusters) ++bits;  // room for the sentinel `clusters`
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(heads));
    tile_histogram_kernel<<<grid, kThreads, 0, stream>>>(labels, tokens, clusters, tiles, s.counts);
    tile_scan_kernel<<<static_cast<unsigned>(heads), kScanThreads, 0, stream>>>(s.counts, tokens, clusters, tiles,
                                                                                offsets, sizes);
    tile_scatter_kernel<<<grid, kThreads, 0, stream>>>(labels, tokens, clusters, tiles, bits, s.counts, offsets, perm);
    return;
  }
  int key_bits = 1;
  while ((std::int64_t{1} << key_bits) <= heads * clusters) ++key_bits;
  const unsigned blocks = grid_for_items((items + 255) / 256);
  sort_keys_kernel<<<blocks, 256, 0, stream>>>(labels, tokens, items, clusters, s.keys_in, s.vals_in);
  cub::DeviceRadixSort::SortPairs(s.temp, bytes, s.keys_in, s.keys_out, s.vals_in, perm, static_cast<int>(items), 0,
                                  key_bits, stream);
  cluster_starts_kernel<<<grid_for_items((items + 256) / 256), 256, 0, stream>>>(s.keys_out, tokens, items, clusters,
                                                                                offsets);
  sizes_kernel<<<grid_for_items((heads * clusters + 255) / 256), 256, 0, stream>>>(heads, tokens, clusters, offsets,
                                                                                    sizes);
}

}  // namespace svoo::cuda::detail
