#!/usr/bin/env python3
"""Summary of interleaved benchmark rounds against a dense yardstick (bench/device_run.sh ab with AB_CUDNN).

cuDNN's dense rate at one shape moves by up to 10 % between calls of one run on the lent H200s
(574-640 TFLOP/s at 12 x 32,760 in run200), more than most changes to the kernel. So each round
of the attention benchmark is followed by a cuDNN call series, and a binary's rate at a density is
judged against cuDNN's mean over the rounds; the round-by-round ratios show the spread. Binaries
are also compared with each other by their median kernel times.

    python3 bench/rounds_summary.py DIR [--base NAME] [--yardstick cudnn|flash]
    # DIR: ab_<binary>_<round>.json, ab_dense_<round>.json

The yardstick is cuDNN by default; `--yardstick flash` rates the binaries against torch's
FlashAttention-2 rows of the same files instead, the portable (sm_80) kernel's target.
"""
import argparse
import glob
import json
import os
import re
import statistics
import sys

# --yardstick: the dense backend's row name in dense_baseline.py's JSON, and its name in the text.
YARDSTICKS = {"cudnn": ("CUDNN_ATTENTION", "cuDNN"), "flash": ("FLASH_ATTENTION", "FlashAttention-2")}


def load_rounds(directory, yardstick="cudnn"):
    """{binary: {round: [attention bench rows]}}, {round: the yardstick's TFLOP/s}."""
    if yardstick not in YARDSTICKS:
        raise ValueError(f"yardstick {yardstick!r}: expected one of {', '.join(sorted(YARDSTICKS))}")
    backend, label = YARDSTICKS[yardstick]
    runs, dense = {}, {}
    for path in sorted(glob.glob(os.path.join(directory, "ab_*_*.json"))):
        m = re.fullmatch(r"ab_(.+)_(\d+)\.json", os.path.basename(path))
        if not m:
            continue
        name, rnd = m.group(1), int(m.group(2))
        try:
            with open(path) as f:
                rows = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e}); a round cut short by its timeout?") from None
        need = ("backend", "tflops") if name == "dense" else ("target_density", "effective_tflops", "sparse_ms")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{path}: expected a list of result rows")
        for r in rows:
            missing = [k for k in need if k not in r]
            if missing:
                raise ValueError(f"{path}: a row lacks {', '.join(missing)}")
        if name == "dense":
            rates = [r["tflops"] for r in rows if r["backend"] == backend]
            if len(rates) != 1:
                raise ValueError(f"{path}: expected one {label} row (one AB_CUDNN shape), found {len(rates)}")
            dense[rnd] = rates[0]
        else:
            runs.setdefault(name, {})[rnd] = rows
    return runs, dense, label


def summarise(runs, dense, label="cuDNN", base=None):
    """Lines of text: per binary and density the rates, their ratio to the yardstick (`label`:
    cuDNN, or FlashAttention-2), and the kernel time of the others against `base` (default: the
    first binary by name), medians."""
    if not runs:
        raise ValueError("no attention benchmark rounds (ab_<binary>_<round>.json)")
    base = base or sorted(runs)[0]
    if base not in runs:
        raise ValueError(f"--base {base}: no rounds of that binary (found {', '.join(sorted(runs))})")
    rounds = sorted(dense)
    lines = []
    if rounds:
        mean_dense = statistics.mean(dense[r] for r in rounds)
        lines.append(f"{label} per round: " + " / ".join(f"{dense[r]:.1f}" for r in rounds) + f", mean {mean_dense:.1f} TFLOP/s")
    medians = {}
    for name, by_round in runs.items():
        lines.append(name)
        densities = sorted({row["target_density"] for rows in by_round.values() for row in rows})
        for d in densities:
            pts = {r: row for r, rows in by_round.items() for row in rows if row["target_density"] == d}
            rates = [pts[r]["effective_tflops"] for r in sorted(pts)]
            ms = statistics.median(pts[r]["sparse_ms"] for r in pts)
            medians[(name, d)] = ms
            text = f"  {d:.2f}: {min(rates):.1f}-{max(rates):.1f} TFLOP/s, mean {statistics.mean(rates):.1f}, median {ms:.3f} ms"
            paired = [r for r in sorted(pts) if r in dense]
            if paired:
                ratio = statistics.mean(pts[r]["effective_tflops"] for r in paired) / statistics.mean(dense[r] for r in paired)
                each = [pts[r]["effective_tflops"] / dense[r] for r in paired]
                text += f"; {100 * ratio:.1f} % of {label}'s mean, round by round {100 * min(each):.1f}-{100 * max(each):.1f} %"
            lines.append(text)
    for name in sorted(runs):
        if name == base:
            continue
        parts = [f"{d:.2f} {100 * (medians[(name, d)] / medians[(base, d)] - 1):+.1f} %"
                 for (n, d) in medians if n == name and (base, d) in medians]
        lines.append(f"kernel time of {name} against {base} (medians): " + "; ".join(parts))
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("directory")
    ap.add_argument("--base", help="the binary the others' kernel times are compared with (default: the first by name)")
    ap.add_argument("--yardstick", choices=sorted(YARDSTICKS), default="cudnn",
                    help="the dense rate the binaries are rated against (default: cudnn)")
    args = ap.parse_args(argv)
    try:
        print("\n".join(summarise(*load_rounds(args.directory, args.yardstick), base=args.base)))
    except (OSError, ValueError) as e:
        print(f"rounds_summary: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
