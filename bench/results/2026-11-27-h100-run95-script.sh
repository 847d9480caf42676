#!/usr/bin/env bash
# session-11 run 95: Hopper attention, row sums of P on the tensor cores: v1 every item (run93's code), v2 items of two
# consumers only, chosen by a runtime branch (ptxas injects warpgroup.arrive), against main 1014468 (base);
# interleaved, three rounds at Wan2.1-14B 720p and two at 1.3B; cuDNN + FA2
set -uo pipefail
tar -xJf .carry/bundle.tar.xz -C .carry
export LD_LIBRARY_PATH="$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
o=$OUT/r; B=.carry/bin; mkdir -p $o
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $o/gpu.txt
fin() { tar -C $OUT -czf $OUT/run95.tgz r; }
run() { # tag env bin shape...
  local tag=$1 e=$2 bin=$3; shift 3
  local s=$SECONDS; env $e timeout 100 stdbuf -oL $B/$bin $(for x in "$@"; do echo --shape $x; done) --json $o/attn_$tag.json > $o/attn_$tag.log 2>&1
  echo "$tag rc $? $((SECONDS-s)) s"; grep -E 'wan|^ +0\.' $o/attn_$tag.log | awk '/wan/{print} !/wan/{printf "%s ", $4} END{print ""}'; fin
}
for i in 1 2 3; do
  for v in v1 v2 base; do run ${v}_14b_$i SVOO_X=1 svoo_cuda_attention_bench_$v wan14b-720p; done
done
for i in 1 2; do
  for v in v1 v2 base; do run ${v}_13b_$i SVOO_X=1 svoo_cuda_attention_bench_$v wan1.3b-720p wan1.3b-480p; done
done
s=$SECONDS; timeout 100 python3 .carry/dense_baseline.py --shape 40x75600 --shape 12x75600 --shape 12x32760 --json $o/dense.json > $o/dense.log 2>&1; echo "dense rc $? $((SECONDS-s)) s"; cat $o/dense.log; fin
