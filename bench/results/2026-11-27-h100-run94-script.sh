#!/usr/bin/env bash
# session-11 run 94: Hopper attention, row sums of P on the tensor cores for items of two consumers, adds for a lone consumer (new) against main 1014468 (base), three
# rounds at Wan2.1-14B 720p and two at 1.3B; portable kernel (2-instruction copies, Q tokens in shared memory):
# Hopper quick check, memcheck + racecheck of the small cases
set -uo pipefail
tar -xJf .carry/bundle.tar.xz -C .carry
export LD_LIBRARY_PATH="$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
o=$OUT/r; B=.carry/bin; mkdir -p $o
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $o/gpu.txt
fin() { tar -C $OUT -czf $OUT/run94.tgz r; }
s=$SECONDS; timeout 60 $B/svoo_gpu_check --quick > $o/gpu_check_quick.log 2>&1; echo "quick rc $? $((SECONDS-s)) s"; tail -1 $o/gpu_check_quick.log; fin
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer | head -1)
run() { # tag env bin shape...
  local tag=$1 e=$2 bin=$3; shift 3
  local s=$SECONDS; env $e timeout 100 stdbuf -oL $B/$bin $(for x in "$@"; do echo --shape $x; done) --json $o/attn_$tag.json > $o/attn_$tag.log 2>&1
  echo "$tag rc $? $((SECONDS-s)) s"; grep -E 'wan|^ +0\.' $o/attn_$tag.log | awk '/wan/{print} !/wan/{printf "%s ", $4} END{print ""}'; fin
}
for i in 1 2 3; do
  run new_14b_$i SVOO_X=1 svoo_cuda_attention_bench wan14b-720p
  run base_14b_$i SVOO_X=1 svoo_cuda_attention_bench_base wan14b-720p
done
for i in 1 2; do
  run new_13b_$i SVOO_X=1 svoo_cuda_attention_bench wan1.3b-720p wan1.3b-480p
  run base_13b_$i SVOO_X=1 svoo_cuda_attention_bench_base wan1.3b-720p wan1.3b-480p
done
s=$SECONDS; timeout 100 python3 .carry/dense_baseline.py --shape 40x75600 --shape 12x75600 --shape 12x32760 --json $o/dense.json > $o/dense.log 2>&1; echo "dense rc $? $((SECONDS-s)) s"; cat $o/dense.log; fin
export SVOO_CHECK_CASES=small,ties,single
s=$SECONDS; timeout 100 $CS --tool memcheck $B/svoo_gpu_check --quick > $o/memcheck.log 2>&1; echo "memcheck rc $? $((SECONDS-s)) s"; tail -2 $o/memcheck.log; fin
s=$SECONDS; timeout 280 $CS --tool racecheck $B/svoo_gpu_check --quick > $o/racecheck.log 2>&1; echo "racecheck rc $? $((SECONDS-s)) s"; tail -2 $o/racecheck.log; fin
