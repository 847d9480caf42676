#!/usr/bin/env bash
# session-11 run 91: (a) Hopper attention producer copies of 3 instructions (token shuffle, one IMAD.WIDE, the copy);
# (b) portable attention copies of 2 instructions + Q tokens kept in shared memory for the epilogue; (c) density pass 3:
# count at or above the window's bottom (predicated add), queue addresses from one running byte address.
# new against main 1014468 (base), interleaved; cuDNN + FA2; quick checks of new
set -uo pipefail
tar -xJf .carry/bundle.tar.xz -C .carry
export LD_LIBRARY_PATH="$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
o=$OUT/r; B=.carry/bin; mkdir -p $o
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $o/gpu.txt
fin() { tar -C $OUT -czf $OUT/run91.tgz r; }
s=$SECONDS; timeout 60 $B/svoo_gpu_check --quick > $o/gpu_check_quick.log 2>&1; echo "quick rc $? $((SECONDS-s)) s"; tail -1 $o/gpu_check_quick.log; fin
s=$SECONDS; SVOO_ATTN_KERNEL=sm80 timeout 60 $B/svoo_gpu_check --quick > $o/gpu_check_sm80_quick.log 2>&1; echo "quick80 rc $? $((SECONDS-s)) s"; tail -1 $o/gpu_check_sm80_quick.log; fin
s=$SECONDS; timeout 60 $B/svoo_gpu_density_check --quick > $o/density_check_quick.log 2>&1; echo "dquick rc $? $((SECONDS-s)) s"; grep -m3 FAIL $o/density_check_quick.log; tail -1 $o/density_check_quick.log; fin
run() { # tag env bin shape...
  local tag=$1 e=$2 bin=$3; shift 3
  local s=$SECONDS; env $e timeout 100 stdbuf -oL $B/$bin $(for x in "$@"; do echo --shape $x; done) --json $o/attn_$tag.json > $o/attn_$tag.log 2>&1
  echo "$tag rc $? $((SECONDS-s)) s"; grep -E 'wan|^ +0\.' $o/attn_$tag.log | awk '/wan/{print} !/wan/{printf "%s ", $4} END{print ""}'; fin
}
for i in 1 2; do
  run new_14b_$i SVOO_X=1 svoo_cuda_attention_bench wan14b-720p
  run base_14b_$i SVOO_X=1 svoo_cuda_attention_bench_base wan14b-720p
done
run new_13b SVOO_X=1 svoo_cuda_attention_bench wan1.3b-720p wan1.3b-480p
run base_13b SVOO_X=1 svoo_cuda_attention_bench_base wan1.3b-720p wan1.3b-480p
for i in 1 2; do
  run sm80_new_14b_$i SVOO_ATTN_KERNEL=sm80 svoo_cuda_attention_bench wan14b-720p
  run sm80_base_14b_$i SVOO_ATTN_KERNEL=sm80 svoo_cuda_attention_bench_base wan14b-720p
done
for rep in 1 2; do
  for v in new base; do
    b=svoo_cuda_density_bench; [ $v = base ] && b=svoo_cuda_density_bench_base
    s=$SECONDS; timeout 100 stdbuf -oL $B/$b --breakdown --json $o/density_bench_${v}_$rep.json > $o/density_bench_${v}_$rep.log 2>&1; echo "dbench $v $rep rc $? $((SECONDS-s)) s"; grep -v "^#" $o/density_bench_${v}_$rep.log | head -12; fin
  done
done
s=$SECONDS; timeout 100 python3 .carry/dense_baseline.py --shape 40x75600 --shape 12x75600 --shape 12x32760 --json $o/dense.json > $o/dense.log 2>&1; echo "dense rc $? $((SECONDS-s)) s"; cat $o/dense.log; fin
