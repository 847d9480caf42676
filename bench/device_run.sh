#!/usr/bin/env bash
# Runs on a lent GPU machine, from the repository root, with binaries built here and carried in
# .carry/ (see bench/carry.sh): the GPU check, compute-sanitizer on a quick pass, the planning
# benchmark and cuDNN dense attention timed in the same run. Output: $OUT/*.log, *.json.
#   bench/device_run.sh [check] [sanitize] [bench] [attn] [attn80] [density] [dense] [ab] [ncu]   (default: all but attn80, ab, ncu)
# attn80: the attention benchmark with the mma.sync kernel forced (SVOO_ATTN_KERNEL=sm80).
# ab: a change timed against the code before it, interleaved on the same card: AB_BINS names the
#   binaries in .carry/bin (e.g. "svoo_cuda_attention_bench svoo_cuda_attention_bench_base", the
#   second built before the change), AB_ROUNDS the rounds (2), AB_ARGS the benchmark's options
#   (e.g. "--shape wan14b-720p"); SVOO_* variables pass through (SVOO_ATTN_KERNEL=sm80 ...). The
#   binaries' order alternates from round to round. AB_CUDNN=HEADSxTOKENS (e.g. 12x32760) follows
#   each round with cuDNN at that shape, and bench/rounds_summary.py then rates every binary
#   against cuDNN's mean over the rounds (its rate moves by up to 10 % within a run) and times
#   the others against the last of AB_BINS (the base). AB_YARDSTICK=flash rates them against
#   FlashAttention-2's rows instead (the sm_80 kernel's target; e.g. SVOO_ATTN_KERNEL=sm80
#   AB_BINS=svoo_cuda_attention_bench AB_CUDNN=12x32760 AB_ARGS="--shape wan1.3b-480p --align 128").
# ncu: Nsight Compute on one dense attention call (`--profile-dense`, 12 x 32,760) of each attention
#   benchmark binary NCU_BINS names (default svoo_cuda_attention_bench), kernel regex NCU_KERNEL
#   (attention_hopper): speed of light, scheduler and warp-state statistics, and the stall samples
#   and executed instructions by SASS opcode (bench/ncu_summary.py), to compare two builds.
#   NCU_ARGS replaces the benchmark's options (e.g. "--profile-density 0.3 --shape wan1.3b-480p": a
#   sparse call; the first of its two calls is skipped, as with --profile-dense).
set -uo pipefail
[ -f .carry/bundle.tar.xz ] && tar -xJf .carry/bundle.tar.xz -C .carry
export LD_LIBRARY_PATH="$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
out=${OUT:-/tmp/out}
mkdir -p "$out"
steps=${*:-check sanitize bench attn density dense}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
for s in $steps; do
  case $s in
    check) timeout 300 .carry/bin/svoo_gpu_check 2>&1 | tee "$out/gpu_check.log" ;;
    sanitize)
      for tool in memcheck racecheck; do
        # racecheck of --quick takes ~230 s since the attention grid became persistent (run114; 106-116 s before)
        timeout 300 stdbuf -oL compute-sanitizer --tool $tool --error-exitcode 9 .carry/bin/svoo_gpu_check --quick >"$out/sanitize_$tool.log" 2>&1
        echo "compute-sanitizer $tool: exit $? ($(grep -c 'ERROR SUMMARY: 0' "$out/sanitize_$tool.log") clean summaries)"
        tail -3 "$out/sanitize_$tool.log"
      done ;;
    bench) timeout 150 .carry/bin/svoo_cuda_plan_bench --json "$out/plan_bench.json" 2>&1 | tee "$out/plan_bench.log" ;;
    attn) timeout 240 .carry/bin/svoo_cuda_attention_bench --json "$out/attention_bench.json" 2>&1 | tee "$out/attention_bench.log" ;;
    attn80) SVOO_ATTN_KERNEL=sm80 timeout 240 .carry/bin/svoo_cuda_attention_bench --json "$out/attention_bench_sm80.json" 2>&1 |
              tee "$out/attention_bench_sm80.log" ;;
    density)
      timeout 200 .carry/bin/svoo_gpu_density_check 2>&1 | tee "$out/density_check.log"
      timeout 200 .carry/bin/svoo_cuda_density_bench --heads 12 --heads 40 --json "$out/density_bench.json" 2>&1 |
        tee "$out/density_bench.log" ;;
    ab)
      bins=${AB_BINS:?ab: AB_BINS names the binaries to compare}
      for r in $(seq "${AB_ROUNDS:-2}"); do
        order=$bins
        [ $((r % 2)) -eq 0 ] && order=$(echo "$bins" | tr ' ' '\n' | tac | tr '\n' ' ')
        for b in $order; do
          timeout 200 ".carry/bin/$b" ${AB_ARGS:-} --json "$out/ab_${b}_$r.json" >"$out/ab_${b}_$r.log" 2>&1
          echo "$b, round $r: exit $?"
          grep -v '^#' "$out/ab_${b}_$r.log" | head -12
        done
        if [ -n "${AB_CUDNN:-}" ]; then
          timeout 120 python3 .carry/dense_baseline.py --shape "$AB_CUDNN" --json "$out/ab_dense_$r.json" >"$out/ab_dense_$r.log" 2>&1
          grep -E "CUDNN|FLASH" "$out/ab_dense_$r.log"
        fi
      done
      python3 bench/rounds_summary.py "$out" --base "$(echo "$bins" | awk '{print $NF}')" \
        --yardstick "${AB_YARDSTICK:-cudnn}" | tee "$out/ab_summary.txt" ;;
    ncu)
      ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
      [ -n "$ncu" ] || { echo "ncu: Nsight Compute not found on this machine"; continue; }
      for b in ${NCU_BINS:-svoo_cuda_attention_bench}; do
        timeout 300 "$ncu" --clock-control none -k "regex:${NCU_KERNEL:-attention_hopper}" -s 1 -c 1 --section SpeedOfLight \
          --section SchedulerStats --section WarpStateStats --section SourceCounters --section ComputeWorkloadAnalysis \
          --section MemoryWorkloadAnalysis --section InstructionStats --section LaunchStats --section Occupancy -f -o "$out/ncu_$b" \
          ".carry/bin/$b" ${NCU_ARGS:---profile-dense} >"$out/ncu_$b.log" 2>&1
        echo "ncu $b: exit $?"
        "$ncu" -i "$out/ncu_$b.ncu-rep" >"$out/ncu_${b}_details.txt" 2>&1
        "$ncu" -i "$out/ncu_$b.ncu-rep" --page source --csv --print-source sass >"$out/ncu_${b}_sass.csv" 2>/dev/null &&
          python3 bench/ncu_summary.py "$out/ncu_${b}_sass.csv" "$b" | tee "$out/ncu_${b}_summary.txt" | head -25
        grep -E "Duration|Issued Warp Per Scheduler|Eligible Warps|No Eligible|L2 Hit|Memory Throughput|SM Busy" \
          "$out/ncu_${b}_details.txt" | head -12
      done ;;
    dense) timeout 120 python3 .carry/dense_baseline.py --shape 40x75600 --shape 12x75600 --shape 12x32760 \
             --json "$out/dense_baseline.json" 2>&1 | tee "$out/dense_baseline.log" ;;
  esac
done
