// Query-cluster alignment on the device (ClusterConfig::query_align): the roles of each cluster,
// and the rounds of svoo::align_clusters (src/core/cluster_align.cpp, the reference), one block a
// head. The candidate lists come from launch_align_candidates and launch_align_candidates_listed
// (assign.cu).
//
// The rounds run in shared memory per cluster (room, rows to shed, failure, offer buckets) with
// the head's offered rows in global scratch. Every decision is independent of thread order: a
// cluster offers its rows in (cost, row) order, a taking cluster accepts the offers ranked below
// its room in (cost, row) order, failures are flags and frees are counts, so the result is the
// reference's, bit for bit, given the same lists.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include <cub/cub.cuh>

#include "kernels.cuh"
#include "svoo/error.hpp"

namespace svoo::cuda::detail {
namespace {

constexpr int kRoundThreads = 1024;

constexpr int kRoleThreads = 256;

// One block a head: takes and rem of each cluster; where each shedding cluster's offered rows go
// in the head's list (offer_base, an exclusive scan of rem) and where its rows start among the
// head's shedding rows (shed_base, an exclusive scan of the shedding clusters' sizes); the totals
// at index `clusters`.
__global__ void __launch_bounds__(kRoleThreads)
    alignment_roles_kernel(const std::int32_t* __restrict__ sizes, int clusters, int align, int take_above,
                           std::uint8_t* __restrict__ takes, std::int32_t* __restrict__ rem,
                           std::int32_t* __restrict__ offer_base, std::int32_t* __restrict__ shed_base) {
  using Scan = cub::BlockScan<int2, kRoleThreads>;
  __shared__ typename Scan::TempStorage scan;
  const std::int64_t h0 = static_cast<std::int64_t>(blockIdx.x) * clusters;
  const int per = (clusters + kRoleThreads - 1) / kRoleThreads;
  const int j0 = min(clusters, static_cast<int>(threadIdx.x) * per), j1 = min(clusters, j0 + per);
  int2 sum = make_int2(0, 0);
  for (int j = j0; j < j1; ++j) {
    const int size = sizes[h0 + j], r = size % align;
    const int sheds = r > take_above ? 0 : r;
    takes[h0 + j] = r > take_above ? 1 : 0;
    rem[h0 + j] = sheds;
    sum.x += sheds, sum.y += sheds > 0 ? size : 0;
  }
  int2 run, total;
  const auto add = [](int2 a, int2 b) { return make_int2(a.x + b.x, a.y + b.y); };
  Scan(scan).ExclusiveScan(sum, run, make_int2(0, 0), add, total);
  std::int32_t* ob = offer_base + static_cast<std::int64_t>(blockIdx.x) * (clusters + 1);
  std::int32_t* sb = shed_base + static_cast<std::int64_t>(blockIdx.x) * (clusters + 1);
  for (int j = j0; j < j1; ++j) {
    ob[j] = run.x, sb[j] = run.y;
    const int r = rem[h0 + j];
    run.x += r, run.y += r > 0 ? sizes[h0 + j] : 0;
  }
  if (threadIdx.x == 0) ob[clusters] = total.x, sb[clusters] = total.y;
}

// The offered rows of one head, in global scratch (capacity `cap` each).
struct Offered {
  std::int32_t *row, *option, *target, *taker, *bucket;
  float* cost;
};

__device__ __forceinline__ Offered offered_of(void* scratch, std::int64_t cap, int head) {
  auto* base = static_cast<std::int32_t*>(scratch) + static_cast<std::int64_t>(head) * cap * 6;
  return {base, base + cap, base + 2 * cap, base + 3 * cap, base + 4 * cap, reinterpret_cast<float*>(base + 5 * cap)};
}

// (cost, row) ordering: true when (v, i) comes before (bv, bi).
__device__ __forceinline__ bool before(float v, int i, float bv, int bi) { return v < bv || (v == bv && i < bi); }

constexpr int kOfferThreads = 128, kOfferCap = 4096;  // listed rows a cluster keeps in shared memory

// (cost, row) as one unsigned key in the same order (zero's sign ignored, as a float compare does).
__device__ __forceinline__ std::uint64_t offer_key(float v, int i) {
  std::uint32_t b = __float_as_uint(v == 0.0f ? 0.0f : v);
  b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return (static_cast<std::uint64_t>(b) << 32) | static_cast<std::uint32_t>(i);
}

// One block a (cluster, head) that sheds: its rem listed rows whose first candidate costs least, in
// (cost, row) order, into the head's list at offer_base[j]; all -1 when it has fewer listed rows
// or a cost is NaN, so that it keeps every row. The rem-th smallest (cost, row) key is found by a
// radix select (8 passes of 8 bits; the keys in shared memory up to kOfferCap listed rows, read
// again from global memory past that), then the keys at or below it ranked among themselves.
__global__ void __launch_bounds__(kOfferThreads)
    align_offers_kernel(const std::int32_t* __restrict__ rem, const std::int32_t* __restrict__ offer_base,
                        const std::int32_t* __restrict__ offsets, const std::int32_t* __restrict__ perm,
                        std::int64_t tokens, int clusters, const std::int16_t* __restrict__ cand,
                        const float* __restrict__ cost, int stride, void* scratch, std::int64_t cap) {
  __shared__ std::uint64_t key_s[kOfferCap];
  __shared__ std::uint64_t pick_s[kAlignMaxAlign / 2];  // want <= align / 2 keys picked
  __shared__ int hist[256];
  __shared__ int listed, nan_seen, picked;
  __shared__ std::uint64_t prefix_s;
  __shared__ int k_s;
  const int j = blockIdx.x, head = blockIdx.y;
  const int want = rem[static_cast<std::int64_t>(head) * clusters + j];
  if (want == 0) return;
  const std::int32_t* ph = perm + static_cast<std::int64_t>(head) * tokens;
  const std::int32_t* oh = offsets + static_cast<std::int64_t>(head) * (clusters + 1);
  const std::int16_t* ch = cand + static_cast<std::int64_t>(head) * tokens * stride;  // a row's first entry at i * stride
  const float* kh = cost + static_cast<std::int64_t>(head) * tokens * stride;
  std::int32_t* out = offered_of(scratch, cap, head).row + offer_base[static_cast<std::int64_t>(head) * (clusters + 1) + j];
  const int b = oh[j], end = oh[j + 1];
  if (threadIdx.x == 0) listed = 0, nan_seen = 0, picked = 0, prefix_s = 0, k_s = want - 1;
  __syncthreads();
  for (int p = b + threadIdx.x; p < end; p += kOfferThreads) {
    const int i = ph[p];
    if (ch[static_cast<std::int64_t>(i) * stride] < 0) continue;
    const float v = kh[static_cast<std::int64_t>(i) * stride];
    if (v != v) nan_seen = 1;
    const int at = atomicAdd(&listed, 1);
    if (at < kOfferCap) key_s[at] = offer_key(v, i);
  }
  __syncthreads();
  const int n = listed;
  if (n < want || nan_seen) {
    for (int t = threadIdx.x; t < want; t += kOfferThreads) out[t] = -1;
    return;
  }
  const bool in_smem = n <= kOfferCap;
  // Calls f(key) for every listed row's key.
  auto for_keys = [&](auto&& f) {
    if (in_smem) {
      for (int a = threadIdx.x; a < n; a += kOfferThreads) f(key_s[a]);
    } else {
      for (int p = b + threadIdx.x; p < end; p += kOfferThreads) {
        const int i = ph[p];
        if (ch[static_cast<std::int64_t>(i) * stride] >= 0) f(offer_key(kh[static_cast<std::int64_t>(i) * stride], i));
      }
    }
  };
  std::uint64_t mask = 0;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += kOfferThreads) hist[d] = 0;
    __syncthreads();
    const std::uint64_t prefix = prefix_s;
    for_keys([&](std::uint64_t key) {
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255], 1);
    });
    __syncthreads();
    if (threadIdx.x == 0) {  // the digit where the k-th key lies
      int k = k_s, d = 0;
      while (hist[d] <= k) k -= hist[d++];
      k_s = k;
      prefix_s = prefix | (static_cast<std::uint64_t>(d) << shift);
    }
    mask |= static_cast<std::uint64_t>(255) << shift;
    __syncthreads();
  }
  const std::uint64_t kth = prefix_s;  // the want-th smallest key: exactly want keys are <= it
  for_keys([&](std::uint64_t key) {
    if (key <= kth) pick_s[atomicAdd(&picked, 1)] = key;
  });
  __syncthreads();
  for (int a = threadIdx.x; a < want; a += kOfferThreads) {
    int rank = 0;
    for (int c = 0; c < want; ++c) rank += pick_s[c] < pick_s[a];
    out[rank] = static_cast<std::int32_t>(pick_s[a] & 0xffffffffu);
  }
}

__global__ void __launch_bounds__(kRoundThreads)
    align_rounds_kernel(std::int32_t* __restrict__ labels, const std::int32_t* __restrict__ sizes,
                        const std::int32_t* __restrict__ offer_base, std::int64_t tokens, int clusters, int align,
                        int take_above, int e, const std::int16_t* __restrict__ cand, const float* __restrict__ cost,
                        void* scratch, std::int64_t cap) {
  extern __shared__ int tables[];
  int* room = tables;              // rows a taking cluster may still accept
  int* failed = room + clusters;   // 1: keeps its rows
  int* count = failed + clusters;  // offers to each taker this round
  int* start = count + clusters;   // bucket starts
  int* fill = start + clusters;
  int* fails_now = fill + clusters;  // set during a round's offers, folded into failed after them
  __shared__ int any_offer;
  const int head = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  std::int32_t* lh = labels + static_cast<std::int64_t>(head) * tokens;
  const std::int16_t* ch = cand + static_cast<std::int64_t>(head) * cap * kAlignE;  // by offered slot
  const float* kh = cost + static_cast<std::int64_t>(head) * cap * kAlignE;
  const Offered o = offered_of(scratch, cap, head);
  const int n = offer_base[static_cast<std::int64_t>(head) * (clusters + 1) + clusters];

  for (int j = threadIdx.x; j < clusters; j += kRoundThreads) {
    const int r = sizes[static_cast<std::int64_t>(head) * clusters + j] % align;
    room[j] = r > take_above ? align - r : 0;
    failed[j] = 0, fails_now[j] = 0;
  }
  for (int d = threadIdx.x; d < n; d += kRoundThreads) o.option[d] = 0, o.target[d] = -1;
  __syncthreads();

  // Rounds: a row is refused at most e times, so e + 2 rounds settle every row.
  for (int round = 0; round < e + 2; ++round) {
    // Offers: each unplaced row's next candidate with room (the room at the round's start).
    for (int d = threadIdx.x; d < n; d += kRoundThreads) {
      o.taker[d] = -1;
      const int i = o.row[d];
      if (i < 0) continue;
      const int home = lh[i];
      if (failed[home] || o.target[d] >= 0) continue;
      int k = o.option[d], c = -1;
      for (; k < e; ++k) {
        c = ch[static_cast<std::int64_t>(d) * kAlignE + k];
        if (c >= 0 && room[c] > 0) break;
      }
      o.option[d] = k;
      if (k >= e) {
        fails_now[home] = 1;  // failed itself is only read in this phase (its offers are withdrawn below)
        continue;
      }
      o.taker[d] = c;
      o.cost[d] = kh[static_cast<std::int64_t>(d) * kAlignE + k];
    }
    __syncthreads();
    for (int j = threadIdx.x; j < clusters; j += kRoundThreads)
      if (fails_now[j]) failed[j] = 1, fails_now[j] = 0;
    __syncthreads();
    // A failed cluster's accepted rows go home and free their room; its offers are withdrawn.
    for (int d = threadIdx.x; d < n; d += kRoundThreads) {
      const int i = o.row[d];
      if (i < 0 || !failed[lh[i]]) continue;
      if (o.target[d] >= 0) atomicAdd(&room[o.target[d]], 1), o.target[d] = -1;
      o.taker[d] = -1;
    }
    for (int j = threadIdx.x; j < clusters; j += kRoundThreads) count[j] = 0, fill[j] = 0;
    if (threadIdx.x == 0) any_offer = 0;
    __syncthreads();
    for (int d = threadIdx.x; d < n; d += kRoundThreads)
      if (o.taker[d] >= 0) atomicAdd(&count[o.taker[d]], 1), any_offer = 1;
    __syncthreads();
    if (!any_offer) break;
    if (warp == 0) {  // bucket starts: an exclusive scan of the counts, a chunk a lane
      const int per = (clusters + 31) / 32, j0 = lane * per, j1 = min(clusters, j0 + per);
      int sum = 0;
      for (int j = j0; j < j1; ++j) sum += count[j];
      int incl = sum;
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, incl, off);
        if (lane >= off) incl += v;
      }
      int run = incl - sum;
      for (int j = j0; j < j1; ++j) start[j] = run, run += count[j];
    }
    __syncthreads();
    for (int d = threadIdx.x; d < n; d += kRoundThreads) {
      const int c = o.taker[d];
      if (c >= 0) o.bucket[start[c] + atomicAdd(&fill[c], 1)] = d;
    }
    __syncthreads();
    // Acceptance: an offer ranked below its taker's room in (cost, row) order.
    for (int d = threadIdx.x; d < n; d += kRoundThreads) {
      const int c = o.taker[d];
      if (c < 0) continue;
      const float v = o.cost[d];
      const int i = o.row[d];
      int rank = 0;
      for (int q = start[c]; q < start[c] + count[c]; ++q) {
        const int d2 = o.bucket[q];
        rank += before(o.cost[d2], o.row[d2], v, i);
      }
      if (rank < room[c]) o.target[d] = c;
      else ++o.option[d];  // refused: its next candidate in the next round
    }
    __syncthreads();
    for (int j = threadIdx.x; j < clusters; j += kRoundThreads) room[j] -= min(room[j], count[j]);
    __syncthreads();
  }
  // A cluster moves its rows only if every offered one was placed.
  for (int d = threadIdx.x; d < n; d += kRoundThreads) {
    const int i = o.row[d];
    if (i >= 0 && o.target[d] < 0) failed[lh[i]] = 1;
  }
  __syncthreads();
  for (int d = threadIdx.x; d < n; d += kRoundThreads) {
    const int i = o.row[d];
    if (i < 0) continue;
    const int target = o.target[d];
    if (!failed[lh[i]]) lh[i] = target;
  }
}

std::int64_t offered_capacity(std::int64_t tokens, int clusters, int align) {
  return std::min<std::int64_t>(tokens, static_cast<std::int64_t>(clusters) * (align / 2));
}

}  // namespace

void launch_alignment_roles(const std::int32_t* sizes, int heads, int clusters, int align, int take_above,
                            std::uint8_t* takes, std::int32_t* rem, std::int32_t* offer_base, std::int32_t* shed_base,
                            cudaStream_t stream) {
  if (heads == 0 || clusters == 0) return;
  require(align >= 2 && align <= kAlignMaxAlign && take_above >= 1 && take_above <= align / 2,
          ErrorKind::invalid_argument, "launch_alignment_roles: align in [2, 256] and a taking bar in [1, align / 2]");
  alignment_roles_kernel<<<heads, kRoleThreads, 0, stream>>>(sizes, clusters, align, take_above, takes, rem, offer_base,
                                                             shed_base);
}

std::size_t alignment_rounds_scratch_bytes(int heads, std::int64_t tokens, int clusters, int align) {
  return static_cast<std::size_t>(heads) * offered_capacity(tokens, clusters, align) * 6 * sizeof(std::int32_t);
}

std::int64_t alignment_offered_stride(std::int64_t tokens, int clusters, int align) {
  return offered_capacity(tokens, clusters, align) * 6;
}

void launch_align_offers(const std::int32_t* rem, const std::int32_t* offer_base, const std::int32_t* offsets,
                         const std::int32_t* perm, int heads, std::int64_t tokens, int clusters, int align,
                         const std::int16_t* first_cand, const float* first_cost, int first_stride, void* scratch,
                         cudaStream_t stream) {
  if (heads == 0 || tokens == 0 || clusters == 0) return;
  const std::int64_t cap = offered_capacity(tokens, clusters, align);
  align_offers_kernel<<<dim3(static_cast<unsigned>(clusters), static_cast<unsigned>(heads)), kOfferThreads, 0,
                        stream>>>(rem, offer_base, offsets, perm, tokens, clusters, first_cand, first_cost, first_stride,
                                  scratch, cap);
}

void launch_align_rounds(std::int32_t* labels, const std::int32_t* sizes, const std::int32_t* offer_base, int heads,
                         std::int64_t tokens, int clusters, int align, int take_above, int e,
                         const std::int16_t* cand, const float* cost, void* scratch, cudaStream_t stream) {
  if (heads == 0 || tokens == 0 || clusters == 0) return;
  require(align >= 2 && align <= kAlignMaxAlign && take_above >= 1 && take_above <= align / 2,
          ErrorKind::invalid_argument, "launch_align_rounds: align in [2, 256] and a taking bar in [1, align / 2]");
  const std::int64_t cap = offered_capacity(tokens, clusters, align);
  const int smem = 6 * clusters * static_cast<int>(sizeof(int));
  cudaFuncSetAttribute(align_rounds_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  align_rounds_kernel<<<heads, kRoundThreads, smem, stream>>>(labels, sizes, offer_base, tokens, clusters, align,
                                                              take_above, e, cand, cost, scratch, cap);
}

}  // namespace svoo::cuda::detail
