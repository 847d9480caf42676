#!/usr/bin/env bash
# On the GPU machine: installs the bundle of bench/python_carry.sh (folder $1) into /tmp/site and
# runs check_cuda.py, logging to $OUT (or /tmp/out).
#   bash bench/python_device_run.sh .carry-torchgpu [check_cuda.py options]
set -o pipefail
carry=$(cd "$1" && pwd); shift
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/b
tar -xJf "$carry/bundle.tar.xz" -C /tmp/b || exit
# filelock and fsspec: keep torch's own
ls /tmp/b/whl | grep -v -E '^(filelock|fsspec)-' | sed 's|^|/tmp/b/whl/|' |
  xargs python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site || exit
export PYTHONPATH=/tmp/site LD_LIBRARY_PATH=/tmp/b/lib PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; date -u; } | tee "$out/device.txt"
cd /tmp && python3 "$carry/check_cuda.py" --json "$out/results.json" "$@" 2>&1 | tee "$out/check.log"
