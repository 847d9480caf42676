#!/usr/bin/env bash
# Gathers what a lent GPU machine needs into .carry/ (ignored by git), xz-compressed so that many
# binaries fit the call's 64 MiB: the GPU binaries built in build/, the shared libraries they load
# that the machine's image lacks (OpenBLAS and its Fortran runtime), the dense-attention yardstick
# script, and any extra files or folders named with --extra (a wheel, a Python package...).
#   bench/carry.sh [--extra PATH]... [BINARY...]
# On the machine, first: tar -xJf .carry/bundle.tar.xz -C .carry   (bench/device_run.sh does it)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=()
bins=()
while [ $# -gt 0 ]; do
  case $1 in
    --extra) extras+=("$2"); shift 2 ;;
    *) bins+=("$1"); shift ;;
  esac
done
[ ${#bins[@]} -eq 0 ] && bins=(svoo_gpu_check svoo_cuda_plan_bench svoo_cuda_attention_bench svoo_gpu_density_check
                             svoo_cuda_density_bench)  # what bench/device_run.sh runs by default
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
for b in "${bins[@]}"; do
  if [ -x "build/$b" ]; then cp "build/$b" "$stage/bin/" && strip "$stage/bin/$b"; else echo "carry: no build/$b" >&2; exit 1; fi
done
for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
  path=$(ldd "build/${bins[0]}" | awk -v l="$lib" '$1 == l {print $3}')
  [ -n "$path" ] && cp -L "$path" "$stage/lib/"
done
cp ../shared/tools/dense_baseline.py "$stage/"
for e in "${extras[@]}"; do cp -rL "$e" "$stage/"; done
rm -rf .carry && mkdir -p .carry
tar -C "$stage" -cf - . | xz -T2 -6 >.carry/bundle.tar.xz
du -sh .carry/bundle.tar.xz
