"""The benchmark's selection rule and the generation schedule, without a GPU.

Random weights make the top-p rule meaningless (their attention is not a real model's), so the
suite keeps, for every (step, layer, head), max(clipped floor, profiled density) of the key
clusters, from the model's reference profile. It gets that from the released rule itself by
overriding two options: top_p = 0 keeps only the first element of the top-p order (n_topp = 1),
and floor_hi = 1 makes the floor floor(clip(d, lo, 1) * Kk) = floor(max(lo, d) * Kk) (d <= 1);
the kept count is max(1, that floor) (src/core/selection.cpp select_row, src/cuda/select.cu).
Since the preset's clip is [lo, hi] with d >= lo or not, max(clip(d, lo, hi), d) = max(lo, d):
the same number.

The generation schedule is the Controller's own (`decide`, with the clustering cache simulated as
`svoo.diffusers` keeps it: one per CFG branch and layer), so the composition cannot drift from what
`svoo.diffusers.enable` does.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

# The overrides that turn the released rule into "keep max(lo, profiled density)".
RULE_OVERRIDES = {"top_p": 0.0, "floor_hi": 1.0}
RULE_NOTE = ("random weights: each (step, layer, head) keeps max(clipped floor, profiled density) of its key "
             "clusters from the model's reference profile (released rule with top_p=0, floor_hi=1: "
             "floor(max(floor_lo, d) * Kk), at least 1), not the top-p rule")


def floor_count(fraction: float, n: int) -> int:
    """floor(fraction * n) as svoo computes it (src/core/selection.cpp floor_count)."""
    return int(math.floor(fraction * n + 1e-9))


def kept_clusters(density: float, floor_lo: float, kk: int) -> int:
    """Key clusters a query cluster keeps under the benchmark rule (top_p=0, floor_hi=1)."""
    if math.isnan(density):
        density = 0.0
    r = min(max(density, floor_lo), 1.0)
    return min(max(1, floor_count(r, kk)), kk)


def kept_fraction(densities: Sequence[float], floor_lo: float, kk: int) -> float:
    """Mean kept fraction of key clusters over heads (the block density when clusters are of
    equal size)."""
    return sum(kept_clusters(d, floor_lo, kk) for d in densities) / (kk * len(densities))


def schedule(controller, steps: int, layers: int, branches: int, expert: int = 0) -> List[Dict]:
    """Per (step, branch): the mode of every layer, from controller.decide with the cache kept as
    svoo.diffusers keeps it, and the class of the transformer call: 'dense' (every layer dense),
    'recluster' (some layer reclusters) or 'reuse'."""
    cache: Dict = {}
    out = []
    for step in range(1, steps + 1):
        for branch in range(branches):
            modes = []
            for layer in range(layers):
                mode, _ = controller.decide(step, layer, branch, expert, cache.get((branch, layer)))
                if mode == "recluster":
                    cache[(branch, layer)] = step
                modes.append(mode)
            cls = ("dense" if all(m == "dense" for m in modes) else
                   "recluster" if "recluster" in modes else "reuse")
            out.append({"step": step, "branch": branch, "modes": modes, "call": cls})
    return out


def step_densities(profile, controller, floor_lo: float, kk: int) -> List[Dict]:
    """Per step: the call class (branch 0) and the mean kept fraction over the sparse layers and
    heads under the benchmark rule (1.0 for a dense step); `profile` is svoo.load_profile's array
    [steps, layers, heads]."""
    steps, layers = controller.steps, controller.layers
    sched = {(e["step"], e["branch"]): e for e in schedule(controller, steps, layers, 1)}
    rows = []
    for step in range(1, steps + 1):
        modes = sched[(step, 0)]["modes"]
        fr = []
        for layer in range(layers):
            if modes[layer] == "dense":
                continue
            s = min(step, profile.shape[0]) - 1
            fr.append(kept_fraction([float(x) for x in profile[s, min(layer, profile.shape[1] - 1), :controller.heads]],
                                    floor_lo, kk))
        sparse_mean = sum(fr) / len(fr) if fr else 1.0
        all_layers = (sum(fr) + (layers - len(fr))) / layers
        rows.append({"step": step, "call": sched[(step, 0)]["call"], "kept_fraction_sparse_layers": sparse_mean,
                     "kept_fraction_all_layers": all_layers})
    return rows


def representative_step(rows: List[Dict], reuse_interval: int, warmup: int) -> Dict[str, int]:
    """The reuse step whose kept fraction is nearest the mean over sparse steps (so that one
    timed call stands for the mean), and the scheduled recluster step of its window."""
    sparse = [r for r in rows if r["call"] != "dense"]
    if not sparse:
        raise ValueError("no sparse step in this schedule")
    mean = sum(r["kept_fraction_sparse_layers"] for r in sparse) / len(sparse)
    reuse = [r for r in sparse if r["call"] == "reuse"] or sparse
    rep = min(reuse, key=lambda r: (abs(r["kept_fraction_sparse_layers"] - mean), r["step"]))["step"]
    s0 = warmup + 1
    recluster = rep - (rep - s0) % reuse_interval
    return {"reuse_step": rep, "recluster_step": recluster, "mean_kept_fraction": mean}


def compose(sched: List[Dict], call_s: Dict[str, float]) -> Dict:
    """Whole-generation time from per-call times {'dense', 'recluster', 'reuse'} (seconds)."""
    counts = {"dense": 0, "recluster": 0, "reuse": 0}
    for e in sched:
        counts[e["call"]] += 1
    parts = {k: counts[k] * call_s[k] for k in counts if counts[k]}
    return {"calls": counts, "seconds_by_call": parts, "seconds": sum(parts.values())}


def required_reuse_s(dense_total: float, target: float, counts: Dict[str, int], call_s: Dict[str, float]) -> Optional[float]:
    """The reuse-call time that would make the composed generation reach `target` x, other
    calls unchanged; None when even a free reuse call would not."""
    budget = dense_total / target - counts.get("dense", 0) * call_s["dense"] - counts.get("recluster", 0) * call_s["recluster"]
    n = counts.get("reuse", 0)
    if n == 0 or budget <= 0:
        return None
    return budget / n
