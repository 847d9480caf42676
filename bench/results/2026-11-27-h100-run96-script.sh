#!/usr/bin/env bash
# session-11 run 96: the final build (Hopper attention with row sums of P on the tensor cores; portable attention with
# 2-instruction copies and Q tokens in shared memory; density unchanged) against main 1014468 (base), two rounds;
# cuDNN + FA2; quick checks (both kernels, density), full check, memcheck + racecheck of the small cases (Hopper)
set -uo pipefail
tar -xJf .carry/bundle.tar.xz -C .carry
export LD_LIBRARY_PATH="$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
o=$OUT/r; B=.carry/bin; mkdir -p $o
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $o/gpu.txt
fin() { tar -C $OUT -czf $OUT/run96.tgz r; }
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer | head -1)
s=$SECONDS; timeout 60 $B/svoo_gpu_check --quick > $o/gpu_check_quick.log 2>&1; echo "quick rc $? $((SECONDS-s)) s"; tail -1 $o/gpu_check_quick.log; fin
s=$SECONDS; SVOO_ATTN_KERNEL=sm80 timeout 60 $B/svoo_gpu_check --quick > $o/gpu_check_sm80_quick.log 2>&1; echo "quick80 rc $? $((SECONDS-s)) s"; tail -1 $o/gpu_check_sm80_quick.log; fin
s=$SECONDS; timeout 60 $B/svoo_gpu_density_check --quick > $o/density_check_quick.log 2>&1; echo "dquick rc $? $((SECONDS-s)) s"; tail -1 $o/density_check_quick.log; fin
run() { # tag env bin shape...
  local tag=$1 e=$2 bin=$3; shift 3
  local s=$SECONDS; env $e timeout 100 stdbuf -oL $B/$bin $(for x in "$@"; do echo --shape $x; done) --json $o/attn_$tag.json > $o/attn_$tag.log 2>&1
  echo "$tag rc $? $((SECONDS-s)) s"; grep -E 'wan|^ +0\.' $o/attn_$tag.log | awk '/wan/{print} !/wan/{printf "%s ", $4} END{print ""}'; fin
}
for i in 1 2; do
  run new_14b_$i SVOO_X=1 svoo_cuda_attention_bench wan14b-720p
  run base_14b_$i SVOO_X=1 svoo_cuda_attention_bench_base wan14b-720p
done
for i in 1 2; do
  run new_13b_$i SVOO_X=1 svoo_cuda_attention_bench wan1.3b-720p wan1.3b-480p
  run base_13b_$i SVOO_X=1 svoo_cuda_attention_bench_base wan1.3b-720p wan1.3b-480p
done
s=$SECONDS; timeout 100 python3 .carry/dense_baseline.py --shape 40x75600 --shape 12x75600 --shape 12x32760 --json $o/dense.json > $o/dense.log 2>&1; echo "dense rc $? $((SECONDS-s)) s"; cat $o/dense.log; fin
s=$SECONDS; timeout 170 $B/svoo_gpu_check > $o/gpu_check_full.log 2>&1; echo "full rc $? $((SECONDS-s)) s"; tail -1 $o/gpu_check_full.log; fin
export SVOO_CHECK_CASES=small,ties,single
s=$SECONDS; timeout 60 $CS --tool memcheck $B/svoo_gpu_check --quick > $o/memcheck.log 2>&1; echo "memcheck rc $? $((SECONDS-s)) s"; tail -2 $o/memcheck.log; fin
s=$SECONDS; timeout 200 $CS --tool racecheck $B/svoo_gpu_check --quick > $o/racecheck.log 2>&1; echo "racecheck rc $? $((SECONDS-s)) s"; tail -2 $o/racecheck.log; fin
