// Internal: the persistent, pipelined schedule of streamed wgmma products shared by the
// co-clustering assignment (assign_wgmma.cu) and the tau-density (density_wgmma.cu). A persistent
// block takes work items (an X tile of 128 rows each, items li = 0, 1, ... of this block) and, per
// item, streams `tiles` tiles of another matrix; step g = (item li, tile t) is one m64 n128 product
// per warpgroup, folded into per-row state by the kernel.
//   - tiles stream through a ring of kStages stages whose completion is tracked with mbarriers
//     that every thread arrives on when its cp.asyncs land (cp.async.mbarrier.arrive.noinc,
//     expected count = the block's threads), not with cp.async group counts: the X prefetch makes
//     the order of loads differ from the order of uses;
//   - X tiles: item li goes to buffer li % kXBufs, loaded during the last step of item li - kXBufs;
//   - two accumulator banks: step g+1's products are issued into one before step g is folded from
//     the other, so the fold runs while the tensor cores work.
// Step g starts with its products finished in `cur` and nothing in flight:
//   wait for step g+1's stage (and its X buffer if it starts an item), fence.proxy.async, issue
//   step g+1 into `nxt`, commit; fold step g from `cur` (at an item's last tile: item_done);
//   B: wait on empty[stage of g] (every thread arrives there once it has step g's products, at the
//   end of step g-1), after which step g's stage and, at an item's last step, the item's X buffer
//   are free in both warpgroups; load step g + kStages into step g's stage; at an item's last
//   step, X of item li + kXBufs; wgmma wait<0> (step g+1's products); arrive on empty[stage of g+1].
// B was a block barrier until run41: it held each warpgroup until the other had folded too, so
// both left their issue gaps at the same time. With the mbarrier they drift apart by up to a step:
// keys 1.44-1.46 ms against 1.79-1.84 for the same kernel with the block barrier, same run (H100).
// Why not wait<1> with a group in flight across steps: ptxas then serialised the wgmmas
// (C7514/C7515: the accumulators of the group in flight are live across the loop's back edge).
#pragma once

#include <cstdint>

#include "wgmma.cuh"

namespace svoo::cuda::detail::wgmma {

template <int kStages, int kXBufs>
struct Stream {
  std::uint64_t* full;   // [kStages]: stage s holds its next step
  std::uint64_t* empty;  // [kStages]: every thread holds the products of stage s's step
  std::uint64_t* xfull;  // [kXBufs]: X buffer b holds its next item
  int items, tiles;      // this block's items; tiles an item
  int g = 0, li = 0, t = 0;  // the step being folded: number, item, tile

  // Thread 0, before the block's first barrier: every barrier expects `threads` arrivals.
  __device__ __forceinline__ void init(unsigned threads) const {
    for (int s = 0; s < kStages; ++s) mbar_init(&full[s], threads);
    for (int s = 0; s < kStages; ++s) mbar_init(&empty[s], threads);
    for (int b = 0; b < kXBufs; ++b) mbar_init(&xfull[b], threads);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  // Waits (this thread) until step `step` = (item, tile) can be multiplied; then fence.proxy.async.
  __device__ __forceinline__ void wait_step(int step, int item, int tile) const {
    mbar_wait(&full[static_cast<unsigned>(step) % kStages], (static_cast<unsigned>(step) / kStages) & 1);
    if (tile == 0) mbar_wait(&xfull[item % kXBufs], (item / kXBufs) & 1);
    fence_async_shared();  // cp.async writes -> tensor-core reads
  }
  // Step 0's products into d0 (the kernel has issued its first loads).
  template <class Issue>
  __device__ __forceinline__ void begin(float (&d0)[64], Issue& issue) const {
    wait_step(0, 0, 0);
    fence();
    issue(d0, 0, 0);
    wait<0>();
    mbar_arrive(&empty[0]);
  }
  // One step (the file comment): issue(nxt, step, item), fold(cur, tile), item_done(),
  // load_next_tile(), load_x(item), item_start(item) are the kernel's.
  template <bool kLast, class Issue, class Fold, class ItemDone, class LoadTile, class LoadX, class ItemStart>
  __device__ __forceinline__ void step(float (&cur)[64], float (&nxt)[64], Issue& issue, Fold& fold, ItemDone& item_done,
                                       LoadTile& load_next_tile, LoadX& load_x, ItemStart& item_start) {
    int n_li = li, n_t = t + 1;
    if (n_t == tiles) n_t = 0, ++n_li;
    if constexpr (!kLast) {
      wait_step(g + 1, n_li, n_t);
      fence_regs(nxt);
      fence();
      issue(nxt, g + 1, n_li);
    }
    fence_regs(cur);
    fold(cur, t);
    if (t == tiles - 1) item_done();
    mbar_wait(&empty[static_cast<unsigned>(g) % kStages], (static_cast<unsigned>(g) / kStages) & 1);
    load_next_tile();                                         // step g + kStages, into step g's stage
    if (t == tiles - 1 && li + kXBufs < items) load_x(li + kXBufs);  // into item li's X buffer
    wait<0>();  // step g+1's products
    if constexpr (!kLast) mbar_arrive(&empty[static_cast<unsigned>(g + 1) % kStages]);
    ++g;
    li = n_li, t = n_t;
    if (n_t == 0 && li < items) item_start(li);
  }
};

}  // namespace svoo::cuda::detail::wgmma
