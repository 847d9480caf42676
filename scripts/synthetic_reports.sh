#!/usr/bin/env bash
# Builds the two synthetic multi-input reports in docs/reports/ from the synthetic workload:
# four seeds of a small 4-step x 6-layer x 4-head capture each, profiled and reported.
#   synthetic-multi-seed: targets depend only on (step, layer, head)  -> stable by construction
#   synthetic-unstable:   targets x exp(1.0 * U[-1, 1]) drawn per seed -> input-dependent
# usage: scripts/synthetic_reports.sh [path/to/svoo]   (run from the repository root)
set -euo pipefail
svoo=${1:-build/svoo}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for case in multi-seed:0 unstable:1.0; do
  name=${case%%:*} jitter=${case##*:}
  inputs=()
  for seed in 1 2 3 4; do
    "$svoo" synth-capture -o "$tmp/$name-$seed.safetensors" --steps 4 --layers 6 --heads 4 \
        --frames 2 --height 8 --width 12 --dim 32 --seed "$seed" --jitter "$jitter"
    inputs+=(--input "$tmp/$name-$seed.safetensors")
    # A single-input profile per seed too, so the report can give pairwise rank correlations.
    "$svoo" profile --input "$tmp/$name-$seed.safetensors" -o "$tmp/$name-$seed.csv" --quiet
  done
  "$svoo" profile "${inputs[@]}" -o "$tmp/$name.csv" --quiet
  # The stats profile (ICC from per-entry statistics) and the per-input profiles (Spearman) agree
  # on every number they share; the committed report uses the per-input ones (more to show).
  "$svoo" report "$tmp/$name.csv" -d "$tmp/$name-stats" >/dev/null
  "$svoo" report "$tmp"/$name-[1-4].csv -d "docs/reports/synthetic-$name" \
      --title "svoo stability report: synthetic, 4 seeds, jitter $jitter"
done
