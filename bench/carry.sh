#!/usr/bin/env bash
# Gathers what a lent GPU machine needs into .carry/ (ignored by git): the GPU binaries built in
# build/, the shared libraries they load that the machine's image lacks (OpenBLAS and its
# Fortran runtime), and the dense-attention yardstick script.
#   bench/carry.sh [BINARY...]
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .carry && mkdir -p .carry/bin .carry/lib
# Binaries to take (default: the GPU check and both benchmarks); the call's 64 MiB limit leaves
# room for about three of them beside OpenBLAS.
bins=${*:-svoo_gpu_check svoo_cuda_plan_bench svoo_cuda_attention_bench}
for b in $bins; do
  [ -x "build/$b" ] && cp "build/$b" .carry/bin/ && strip ".carry/bin/$b"
done
for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
  path=$(ldd build/svoo_gpu_check | awk -v l="$lib" '$1 == l {print $3}')
  [ -n "$path" ] && cp -L "$path" .carry/lib/
done
cp ../shared/tools/dense_baseline.py .carry/
du -sh .carry
