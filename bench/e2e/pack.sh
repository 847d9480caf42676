#!/usr/bin/env bash
# Prepares .carry/ for bench/e2e/device.sh, on the CPU machine, from the repository root's build:
#   - the svoo wheel for the device's Python (cp312; built here with the CUDA backend when nvcc is found),
#   - wheels of diffusers and of its needs that the device image lacks (importlib_metadata),
#   - the reference profiles (.carry/reference-profiles/),
#   - the GPU benchmark binaries, OpenBLAS and the dense yardstick (bench/carry.sh),
# all in one xz bundle, .carry/bundle.tar.xz (the wheels land in .carry/whl/ once unpacked).
#   bench/e2e/pack.sh                 # then carry .carry to the device and run bench/e2e/device.sh
# Environment: PYTHON312 (default python3.12), JOBS (parallel build jobs, default 1),
#   SVOO_WHEEL (an svoo cp312 wheel already built: skips the build), DIFFUSERS_VERSION,
#   IMPORTLIB_METADATA_VERSION (defaults: the versions the suite was written against).
set -euo pipefail
cd "$(dirname "$0")/../.."
py312=${PYTHON312:-python3.12}
diffusers_version=${DIFFUSERS_VERSION:-0.42.1}
importlib_metadata_version=${IMPORTLIB_METADATA_VERSION:-10.2.0}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
whl="$tmp/whl"
mkdir -p "$whl"

if [ -n "${SVOO_WHEEL:-}" ]; then
  cp "$SVOO_WHEEL" "$whl/"
else
  # nanobind and scikit-build-core must be installed for $py312 (no build isolation: no downloads
  # during the build). The build folder build/python-cp312-... is kept, so a rebuild is incremental.
  CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-1} "$py312" -m pip wheel -q --no-build-isolation --no-deps -w "$whl" .
fi
ls "$whl"/svoo-*-cp312-*.whl >/dev/null || { echo "pack: no svoo cp312 wheel was made" >&2; exit 1; }

# Pure-Python wheels the device image lacks (its package list: /work/.library/device/KINDS.md);
# diffusers' other needs (filelock, huggingface-hub, numpy, regex, requests, safetensors, Pillow,
# zipp) are there already.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$whl" "diffusers==$diffusers_version" "importlib_metadata==$importlib_metadata_version"
ls -la "$whl"

# the reference profiles travel too (../shared beside the checkout does not reach the device)
profiles=${SVOO_PROFILES:-../shared/reference-profiles}
[ -f "$profiles/sparsity_wan_1.3B_t2v.csv" ] || { echo "pack: no reference profiles in $profiles" >&2; exit 1; }
bench/carry.sh --extra "$whl" --extra "$profiles" svoo_gpu_check svoo_cuda_plan_bench svoo_cuda_attention_bench
tar -tJf .carry/bundle.tar.xz | grep -E '^\./(whl/|bin/|reference-profiles/$)' | sed 's/^/  /'
