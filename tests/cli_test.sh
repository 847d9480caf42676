#!/usr/bin/env bash
# CLI checks run by CTest: exit codes, messages and values of every command on small inputs.
# usage: cli_test.sh path/to/svoo
set -uo pipefail
svoo=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
pass=0
check() {  # check NAME EXPECTED_EXIT PATTERN -- command...
  local name=$1 want=$2 pattern=$3
  shift 4
  "$@" >"$tmp/out" 2>&1
  local got=$?
  if [ "$got" -ne "$want" ]; then
    echo "FAIL $name: exit $got, expected $want"; sed 's/^/    /' "$tmp/out" | tail -20; failures=$((failures + 1)); return
  fi
  if [ -n "$pattern" ] && ! grep -qE -- "$pattern" "$tmp/out"; then
    echo "FAIL $name: output lacks /$pattern/"; sed 's/^/    /' "$tmp/out" | tail -20; failures=$((failures + 1)); return
  fi
  pass=$((pass + 1))
}

check help 0 "demo" -- "$svoo" --help
check no-command 2 "" -- "$svoo"
check unknown-option 2 "" -- "$svoo" demo --bogus
check demo-help 0 "--recall-rows" -- "$svoo" demo --help
check presets 0 "wan2.1-t2v-1.3b" -- "$svoo" presets
check synth 0 "wrote" -- "$svoo" synth -o "$tmp/qkv.safetensors" --frames 2 --height 6 --width 8 --heads 2 --dim 32
check synth-bad-density 1 "target" -- "$svoo" synth -o "$tmp/x.safetensors" --frames 2 --height 6 --width 8 --heads 2 --dim 32 --density 0.1 --density 1.5
check attend 0 "mean density" -- "$svoo" attend -i "$tmp/qkv.safetensors" -o "$tmp/out.safetensors" --kq 4 --kk 8 --quiet
# Keeping every cluster must reproduce dense attention: density 1, error at rounding level.
check attend-keep-all 0 "^ +0 +1\.0000 +1\.0000 +0\.00[0-9]+ +(1\.0000|0\.9999)" -- "$svoo" attend -i "$tmp/qkv.safetensors" -o "$tmp/all.safetensors" --kq 4 --kk 8 --top-p 1 --floor-lo 1 --floor-hi 1 --quiet
check attend-dense 0 "dense attention" -- "$svoo" attend --dense --lse -i "$tmp/qkv.safetensors" -o "$tmp/dense.safetensors" --quiet
check attend-missing-tensor 1 "has no tensor 'nope'" -- "$svoo" attend -i "$tmp/qkv.safetensors" -o "$tmp/o.safetensors" --q nope --quiet
head -c 100 "$tmp/qkv.safetensors" >"$tmp/truncated.safetensors"
check attend-truncated 1 "format error" -- "$svoo" attend -i "$tmp/truncated.safetensors" -o "$tmp/o.safetensors" --quiet
printf 'Step,Layer,Head,Sparsity\n1,0,0,0.5\n' >"$tmp/one_head.csv"
check attend-profile-heads 1 "has 1 heads, the input has 2" -- "$svoo" attend -i "$tmp/qkv.safetensors" -o "$tmp/o.safetensors" --profile "$tmp/one_head.csv" --quiet
check cluster 0 "4 clusters" -- "$svoo" cluster -i "$tmp/qkv.safetensors" -o "$tmp/c.safetensors" --kq 4 --kk 8 --quiet
check cluster-kmeans 0 "kmeans" -- "$svoo" cluster -i "$tmp/qkv.safetensors" -o "$tmp/c.safetensors" --kq 4 --kk 8 --method kmeans --quiet
# Anchors files (safetensors written by hand): valid, out of range, wrong dtype.
write_anchors() {  # write_anchors FILE DTYPE QMAX KMAX
  python3 - "$@" <<'EOS'
import json, struct, sys
path, dtype, qmax, kmax = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fmt, size = ("<i", 4) if dtype == "I32" else ("<f", 4)
q = [i * 7 for i in range(2 * 4 - 1)] + [qmax]  # the last anchor is qmax
k = [i * 5 for i in range(2 * 8 - 1)] + [kmax]
data = b"".join(struct.pack(fmt, x) for x in q + k)
header = {"q_anchors": {"dtype": dtype, "shape": [2, 4], "data_offsets": [0, 8 * size]},
          "k_anchors": {"dtype": dtype, "shape": [2, 8], "data_offsets": [8 * size, 24 * size]}}
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
EOS
}
write_anchors "$tmp/anchors.safetensors" I32 95 95
write_anchors "$tmp/anchors_far.safetensors" I32 96 95
write_anchors "$tmp/anchors_f32.safetensors" F32 95 95
check cluster-anchors 0 "4 clusters" -- "$svoo" cluster -i "$tmp/qkv.safetensors" -o "$tmp/c.safetensors" --anchors "$tmp/anchors.safetensors" --quiet
check cluster-anchors-range 1 "query anchor 96 \(head 1\) is outside" -- "$svoo" cluster -i "$tmp/qkv.safetensors" -o "$tmp/c.safetensors" --anchors "$tmp/anchors_far.safetensors" --quiet
check cluster-anchors-dtype 1 "must be I32 or I64" -- "$svoo" cluster -i "$tmp/qkv.safetensors" -o "$tmp/c.safetensors" --anchors "$tmp/anchors_f32.safetensors" --quiet
check cluster-bad-method 2 "" -- "$svoo" cluster -i "$tmp/qkv.safetensors" -o "$tmp/c.safetensors" --method spectral
check demo 0 "recall at equal block density" -- "$svoo" demo --frames 2 --height 8 --width 8 --heads 4 --dim 32 --kq 4 --kk 16 --quiet
check demo-aligned 0 "query clusters aligned to 8 rows" -- "$svoo" demo --frames 2 --height 8 --width 8 --heads 4 --dim 32 --kq 4 --kk 16 --align-queries 8 --quiet
check demo-align-range 2 "" -- "$svoo" demo --align-queries 1000
check demo-align-passes 0 "query clusters aligned to 8 rows" -- "$svoo" demo --frames 2 --height 8 --width 8 --heads 4 --dim 32 --kq 4 --kk 16 --align-queries 8 --align-passes 1 --quiet
check demo-align-passes-range 2 "" -- "$svoo" demo --align-queries 8 --align-passes 9
# Offline profiler: captures of two seeds, profile, resume, compare, report, and bad input.
check synth-capture 0 "wrote" -- "$svoo" synth-capture -o "$tmp/cap1.safetensors" --steps 2 --layers 2 --heads 2 --frames 2 --height 4 --width 6 --dim 16 --seed 1
check synth-capture-2 0 "wrote" -- "$svoo" synth-capture -o "$tmp/cap2.safetensors" --steps 2 --layers 2 --heads 2 --frames 2 --height 4 --width 6 --dim 16 --seed 2
check profile 0 "4 \(step, layer\) computed" -- "$svoo" profile -i "$tmp/cap1.safetensors" -i "$tmp/cap2.safetensors" -o "$tmp/prof.csv"
check profile-header 0 "^Step,Layer,Head,Sparsity,Count,Mean,Std,Min,Max$" -- head -1 "$tmp/prof.csv"
check profile-sidecar 0 "\"tau\": 0.95" -- cat "$tmp/prof.csv.json"
check profile-resume 0 "0 \(step, layer\) computed, 4 skipped" -- "$svoo" profile -i "$tmp/cap1.safetensors" -i "$tmp/cap2.safetensors" -o "$tmp/prof.csv" --resume
check profile-resume-other-settings 1 "other settings" -- "$svoo" profile -i "$tmp/cap1.safetensors" -i "$tmp/cap2.safetensors" -o "$tmp/prof.csv" --resume --tau 0.9
check profile-quantile 0 "wrote" -- "$svoo" profile -i "$tmp/cap1.safetensors" -i "$tmp/cap2.safetensors" -o "$tmp/profq.csv" --aggregate quantile --rows 8 --seed 3 --quiet
check profile-bad-aggregate 2 "" -- "$svoo" profile -i "$tmp/cap1.safetensors" -o "$tmp/x.csv" --aggregate median
check profile-no-input 1 "at least one --input" -- "$svoo" profile -o "$tmp/x.csv"
check profile-bad-device 2 "" -- "$svoo" profile -i "$tmp/cap1.safetensors" -o "$tmp/x.csv" --device tpu
# --device cuda: no GPU (CI) or a CUDA-less build -> a clear error; with a GPU the tiny captures
# (head dim 16) are refused by the kernel, which needs 128.
check profile-device-cuda 1 "no CUDA device|without the CUDA backend|head_dim 128" -- "$svoo" profile -i "$tmp/cap1.safetensors" -o "$tmp/x.csv" --device cuda --quiet
check profile-bad-names 1 "is not q.s\{step\}.l\{layer\}" -- "$svoo" profile -i "$tmp/qkv.safetensors" -o "$tmp/x.csv"
"$svoo" synth-capture -o "$tmp/cap3h.safetensors" --steps 2 --layers 2 --heads 3 --frames 2 --height 4 --width 6 --dim 16 >/dev/null
check profile-mismatched-heads 1 "same heads" -- "$svoo" profile -i "$tmp/cap1.safetensors" -i "$tmp/cap3h.safetensors" -o "$tmp/x.csv"
check compare 0 "entries compared: 8 \(only in A: 0, only in B: 0\)" -- "$svoo" profile compare "$tmp/prof.csv" "$tmp/profq.csv" -o "$tmp/diff.csv"
check compare-csv 0 "^Step,Layer,Head,A,B,Diff$" -- head -1 "$tmp/diff.csv"
check report 0 "input stability: (YES|NO)" -- "$svoo" report "$tmp/prof.csv" -d "$tmp/report"
check report-html 0 "<svg" -- cat "$tmp/report/report.html"
check report-one-input 0 "cannot be decided from one input" -- "$svoo" report "$tmp/one_head.csv" -d "$tmp/report1"
printf 'Step,Layer,Head,Sparsity\n1,0,0,0.5\n1,0,1,0.4\n' >"$tmp/two_heads.csv"
check report-grid-mismatch 1 "must share the grid" -- "$svoo" report "$tmp/one_head.csv" "$tmp/two_heads.csv" -d "$tmp/report2"
check report-not-a-profile 1 "expected the header" -- "$svoo" report "$tmp/diff.csv" -d "$tmp/report3"
echo "$pass passed, $failures failed"
[ "$failures" -eq 0 ]
