#!/usr/bin/env bash
# Builds the libFuzzer targets with clang into build-fuzz and runs each for SECONDS (default 30)
# over a scratch copy of its regression corpus (tests/corpus/<format>/ is never written).
# Exits non-zero if a target fails to build or any run finds a crash, leak, sanitizer report
# or round-trip mismatch; the reproducer is left in the scratch directory, printed below.
# Usage: fuzz/run.sh [SECONDS]
set -euo pipefail

seconds="${1:-30}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"

CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DSVOO_FUZZ=ON -DSVOO_CUDA=OFF -DSVOO_BUILD_TESTS=OFF \
  -DSVOO_BUILD_CLI=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$build" profile_csv_fuzz safetensors_fuzz

scratch="$(mktemp -d "${TMPDIR:-/tmp}/svoo-fuzz.XXXXXX")"
echo "scratch directory: $scratch"
status=0
for format in profile_csv safetensors; do
  work="$scratch/$format"
  mkdir -p "$work/corpus" "$work/artifacts"
  cp "$root/tests/corpus/$format/"* "$work/corpus/"
  echo "== $format: ${seconds}s"
  # -max_len 8192 matches the corpus size limit; libFuzzer adds new inputs to work/corpus only.
  found=0
  if ! "$build/${format}_fuzz" -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log.txt" 2>&1; then
    found=1
  fi
  if compgen -G "$work/artifacts/*" >/dev/null; then found=1; fi
  if [[ $found -ne 0 ]]; then
    status=1
    tail -n 40 "$work/log.txt"
    echo "FINDING in $format: reproducers in $work/artifacts/" >&2
  else
    grep -E "^stat::number_of_executed_units|^stat::new_units_added" "$work/log.txt" || true
  fi
done
# Keep the scratch directory only when it holds something to look at.
if [[ $status -eq 0 ]]; then rm -rf "$scratch"; fi
exit "$status"
