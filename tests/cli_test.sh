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
check cluster-bad-method 2 "" -- "$svoo" cluster -i "$tmp/qkv.safetensors" -o "$tmp/c.safetensors" --method spectral
check demo 0 "recall at equal block density" -- "$svoo" demo --frames 2 --height 8 --width 8 --heads 4 --dim 32 --kq 4 --kk 16 --quiet
echo "$pass passed, $failures failed"
[ "$failures" -eq 0 ]
