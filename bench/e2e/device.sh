#!/usr/bin/env bash
# The e2e suite on a lent GPU machine, in one command, from the repository root, with .carry/
# made by bench/e2e/pack.sh carried along (wheels in .carry/whl, binaries in .carry/bin, OpenBLAS
# in .carry/lib, profiles in .carry/reference-profiles). About 8 minutes; everything lands in $OUT:
#   gpu.txt, e2e.log, e2e.json, e2e.md, e2e.svg
#   bench/e2e/device.sh [run.py options, e.g. --models wan1.3b --budget-s 200]
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/out}
mkdir -p "$out"
[ -d .carry/whl ] || tar -xJf .carry/bundle.tar.xz -C .carry || { echo "device.sh: no .carry bundle (bench/e2e/pack.sh)"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .carry/whl/*.whl \
  || { echo "device.sh: wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export LD_LIBRARY_PATH="$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
export SVOO_PROFILES="$PWD/.carry/reference-profiles" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c 'import svoo, diffusers, torch; print("svoo", svoo.__file__, "cuda build:", svoo.has_cuda, "| diffusers", diffusers.__version__, "| torch", torch.__version__)' \
  2>&1 | tee -a "$out/gpu.txt"
# The budget keeps the suite inside ~8 minutes: stages that would end past it are skipped and
# listed (HunyuanVideo goes first); partial results are rewritten after every stage.
timeout 540 python3 bench/e2e/run.py --level all --models wan1.3b,wan14b,hunyuan --res 480p,720p \
  --check wan1.3b:480p --budget-s 450 --plan-bench .carry/bin/svoo_cuda_plan_bench --out "$out" "$@" 2>&1 \
  | tee "$out/e2e.log"
rc=${PIPESTATUS[0]}
[ -f "$out/e2e.md" ] && cat "$out/e2e.md"
exit $rc
