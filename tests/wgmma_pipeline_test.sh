#!/usr/bin/env bash
# The Hopper kernels' wgmma products stay asynchronous: ptxas reports "Potential Performance Loss:
# wgmma.mma_async instructions are serialized" (C7510-C7515) when a change to a kernel leaves it
# unable to pipeline them (a branch whose two sides join accumulators while products are in
# flight, a value kept live across them, too few registers...), and the kernel then runs 20-30 %
# slower while every test still passes: a 64-key-last-tile experiment did exactly that (run207).
# Without a GPU this is the only place to see it, so the kernels are compiled for sm_90a with
# ptxas' report and any such line fails the test, except in kernels listed as known below.
#   tests/wgmma_pipeline_test.sh NVCC SOURCE_DIR
set -euo pipefail
nvcc=$1
src=$2
# Known: the co-clustering assignment's variant 3 (assign_wgmma_kernel; variant 4, the default,
# is pipelined), kept for comparison (docs/cuda-backend.md, "Assignment variant 4").
known='assign_wgmma_kernel'
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for f in attention_hopper density_wgmma assign_wgmma; do
  "$nvcc" -DSVOO_WITH_CUDA=1 -I"$src/include" -I"$src/src" -O3 -DNDEBUG -std=c++17 --expt-relaxed-constexpr \
    -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -cubin "$src/src/cuda/$f.cu" -o "$out/$f.cubin" >"$out/$f.log" 2>&1 ||
    { echo "$f.cu: nvcc failed"; cat "$out/$f.log"; exit 1; }
  bad=$(grep -E "wgmma.mma_async instructions are serialized" "$out/$f.log" | grep -v -E "$known" || true)
  if [ -n "$bad" ]; then
    echo "$f.cu: ptxas serialises wgmma:"
    echo "$bad"
    status=1
  else
    echo "$f.cu: wgmma pipelined ($(grep -c "Compiling entry function" "$out/$f.log") kernels)"
  fi
done
exit $status
