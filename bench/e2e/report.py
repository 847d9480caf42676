"""Tables (markdown), targets and a self-contained SVG plot of the e2e suite's JSON.

  python3 bench/e2e/report.py DIR/e2e.json      # rewrites DIR/e2e.md and DIR/e2e.svg
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Optional
from xml.sax.saxutils import escape

import policy

GIB = float(1 << 30)


def _find(rows: List[Dict], model: str, res: str) -> Optional[Dict]:
    return next((r for r in rows if r["model"] == model and r["res"] == res), None)


def _why_missing(result: Dict, model: str, res: str) -> str:
    for s in result.get("skipped", []):
        if f"{model} {res}" in s["what"]:
            return f"not measured: {s['what']} skipped ({s['reason']})"
    for e in result.get("errors", []):
        if f"{model} {res}" in e["what"]:
            return f"not measured: {e['what']} failed ({e['error']})"
    return "not measured (shape not requested)"


def _attention_budget(t: Dict, need_call_s: float) -> str:
    """What the sparse attention per layer must become for a reuse call of need_call_s."""
    L = t["layers"]
    dl = t["controller"]["dense_layers"]
    attn = t.get("model_attention_per_layer_s", t["dense_attention_call_ms"] * 1e-3)
    fixed = t["non_attention_s"] + dl * attn
    if need_call_s <= fixed:
        return (f"even free sparse attention cannot: the non-attention work and the dense layers take "
                f"{fixed:.3f} s of a call, more than the {need_call_s:.3f} s needed")
    need_layer = (need_call_s - fixed) / max(1, L - dl)
    now = t["sparse_attention_per_layer_s"]
    heads, tokens = t["heads"], t["tokens"]
    td = (t.get("token_density_reuse_step") or {}).get("mean")
    if td is not None:  # measured on the plans: what the kernel's time follows
        f, what = td, f"token density {td:.3f} (kept fraction of key clusters {t['kept_fraction_reuse_step']:.3f})"
    else:
        f = t["kept_fraction_reuse_step"]
        what = f"kept fraction {f:.3f}"
    eff = 4.0 * heads * tokens * tokens * 128 * f / need_layer / 1e12
    now_eff = 4.0 * heads * tokens * tokens * 128 * f / now / 1e12 if now > 0 else float("nan")
    # the token density at which the kernel's current effective rate would meet the need
    at_rate = f * need_layer / now if now > 0 else float("nan")
    return (f"sparse attention (selection included) per layer must drop from {1e3 * now:.2f} ms to "
            f"{1e3 * need_layer:.2f} ms ({now / need_layer:.2f}x faster; at {what} that is {eff:.0f} "
            f"effective TFLOP/s, now {now_eff:.0f}; at the current rate it takes a density of {at_rate:.3f}; "
            f"dense attention takes {1e3 * attn:.2f} ms a layer in the model)")


def _cache_cell(mem: Dict) -> str:
    dev, host = mem.get("clustering_cache_bytes"), mem.get("clustering_cache_host_bytes")
    if dev is None:
        return "-"
    where = mem.get("clustering_cache_where", "device")
    return f"{where}: {dev / GIB:.2f} / {(host or 0) / GIB:.2f}"


def evaluate_targets(result: Dict, targets: List[Dict]) -> List[Dict]:
    out = []
    for tg in targets:
        row: Dict[str, Any] = {"name": tg["name"], "target": tg["target"], "level": tg["level"]}
        if tg["level"] == "memory":
            mems = [(t["model"], t["res"], t["memory"].get("extra_fraction")) for t in result.get("transformer", [])]
            mems = [m for m in mems if m[2] is not None]
            if not mems:
                row.update(measured=None, met=None, note="not measured (GPU only)")
            else:
                worst = max(mems, key=lambda m: m[2])
                t = _find(result["transformer"], worst[0], worst[1])
                mem = t["memory"]
                row.update(measured=worst[2], met=worst[2] <= tg["target"], shape=f"{worst[0]} {worst[1]}")
                if not row["met"]:
                    ws = mem.get("planner_workspace_bytes") or 0
                    act = max(mem["recluster"]["peak_allocated"], mem["reuse"]["peak_allocated"]) - mem["dense_peak_bytes"]
                    cache = mem.get("clustering_cache_bytes") or 0
                    branches = mem.get("cfg_branches", 1)
                    if branches * cache >= max(ws, act - cache):
                        stage = "the reuse steps' clustering cache"
                        fix = (f"enable(clustering_cache='host') (now {mem.get('clustering_cache_where', 'device')}: "
                               f"{mem.get('clustering_cache_slots', 0)} slots, {cache / GIB:.2f} GiB a CFG branch)")
                    elif ws >= act:
                        stage = "planner workspace"
                        fix = "one planner workspace shared by every layer (and both CFG branches), sized for one call"
                    else:
                        stage = "activations of the svoo calls (torch allocations)"
                        fix = ("no per-call copies in the svoo processor (Q/K/V views instead of contiguous copies, "
                               "the output written in place)")
                    row["limiting_stage"] = stage
                    row["note"] = (f"svoo peak {mem['svoo_peak_bytes'] / GIB:.2f} GiB vs dense {mem['dense_peak_bytes'] / GIB:.2f} "
                                   f"GiB at {worst[0]} {worst[1]}: planner workspace {ws / GIB:.2f} GiB, extra torch peak "
                                   f"{act / GIB:.2f} GiB; fix: {fix}")
            out.append(row)
            continue
        t = _find(result.get("transformer", []), tg["model"], tg["res"])
        g = _find(result.get("generation", []), tg["model"], tg["res"])
        if t is None or (tg["level"] == "generation" and g is None):
            row.update(measured=None, met=None, note=_why_missing(result, tg["model"], tg["res"]))
            out.append(row)
            continue
        notes = []
        if not t.get("sparse_path_active", False):
            notes.append("svoo ran dense attention at sparse steps (its CUDA path was not active): not svoo's speed")
        if tg["level"] == "sparse_step":
            measured = t["speedup_sparse_call"]
            row.update(measured=measured, met=measured >= tg["target"])
            if not row["met"]:
                need = t["dense_call_s"] / tg["target"]
                fixed = t["non_attention_s"] + t["controller"]["dense_layers"] * t.get(
                    "model_attention_per_layer_s", t["dense_attention_call_ms"] * 1e-3)
                sparse_attn = t["sparse_attention_per_layer_s"] * (t["layers"] - t["controller"]["dense_layers"])
                row["limiting_stage"] = ("non-attention layers and dense layers (Amdahl bound)" if need <= fixed else
                                         "sparse attention kernel" if sparse_attn > t["non_attention_s"] else
                                         "non-attention layers")
                notes.append(f"sparse call {t['reuse_call_s']:.3f} s, needs {need:.3f} s for {tg['target']}x: " +
                             _attention_budget(t, need))
        else:
            measured = g["speedup"]
            row.update(measured=measured, met=measured >= tg["target"], bound=g["speedup_bound_free_sparse_attention"])
            if not row["met"]:
                parts = g["svoo_seconds_by_call"]
                total = g["svoo_s"]
                shares = ", ".join(f"{k} calls {v:.1f} s ({100 * v / total:.0f} %)" for k, v in parts.items())
                notes.append(f"svoo generation {total:.1f} s: {shares}")
                need = policy.required_reuse_s(g["dense_s"], tg["target"], g["calls"], g["per_call_s"])
                if need is None:
                    row["limiting_stage"] = "dense warm-up and reclustering calls"
                    notes.append("the dense warm-up and reclustering calls alone exceed the time budget of the target: "
                                 "fewer dense steps or cheaper reclustering would fix it")
                else:
                    sparse_attn = t["sparse_attention_per_layer_s"] * (t["layers"] - t["controller"]["dense_layers"])
                    recl = parts.get("recluster", 0.0)
                    if g["speedup_bound_free_sparse_attention"] < tg["target"]:
                        row["limiting_stage"] = "dense warm-up / non-attention layers (Amdahl bound)"
                    elif recl > parts.get("reuse", 0.0) * 0.25:
                        row["limiting_stage"] = "reclustering calls"
                    else:
                        row["limiting_stage"] = ("sparse attention kernel" if sparse_attn > t["non_attention_s"]
                                                 else "non-attention layers")
                    notes.append(f"needs {need:.3f} s per sparse call (now {t['reuse_call_s']:.3f} s; "
                                 f"co-clustering adds {t['clustering_per_layer_s'] * 1e3:.2f} ms per layer at a recluster "
                                 f"step): " + _attention_budget(t, need))
                notes.append(f"with free sparse attention and clustering the schedule allows "
                             f"{g['speedup_bound_free_sparse_attention']:.2f}x")
        if tg["level"] == "generation" and g is not None and "speedup_vs_unmasked_dense" in g:
            notes.append(f"against dense attention without diffusers' (all-ones) mask: {g['speedup_vs_unmasked_dense']:.2f}x")
        if notes:
            row["note"] = "; ".join(notes)
        out.append(row)
    return out


# --------------------------------------------------------------------------------------- markdown

def _f(x, fmt="{:.2f}", none="-"):
    return none if x is None else fmt.format(x)


def _table(head: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown(result: Dict) -> str:
    env = result["env"]
    md = [f"# svoo end-to-end benchmark{' (smoke, CPU)' if result.get('smoke') else ''}\n",
          f"{env.get('gpu', env['device'])}, torch {env['torch']}, cuDNN {env.get('cudnn', '-')}, diffusers "
          f"{env.get('diffusers')}, svoo CUDA build: {env['svoo_has_cuda']}; {result['created']}; "
          f"{result.get('elapsed_s', 0):.0f} s.\n",
          f"**Selection in every svoo number below — {result['rule']}.** Dense = the same model, same process, "
          f"attention by {result.get('dense_backend', 'cuDNN SDPA forced')}"
          f"{' (on the CPU: torch default SDPA)' if result['env']['device'] == 'cpu' else ''}.\n"]
    if result.get("targets"):
        md.append("## Targets (vs cuDNN dense, same run)\n")
        md.append(_table(["target", "goal", "measured", "met", "holds it back / what would fix it"], [
            [t["name"], (f"<= {100 * t['target']:.0f} %" if t["level"] == "memory" else f">= {t['target']:.1f}x"),
             (_f(t["measured"], "{:+.1%}") if t["level"] == "memory" else _f(t["measured"], "{:.2f}x")),
             {True: "yes", False: "**no**", None: "n/a"}[t["met"]],
             ((t.get("limiting_stage", "") + ": ") if t.get("limiting_stage") else "") + t.get("note", "")]
            for t in result["targets"]]))
    if result.get("attention"):
        md.append("\n## Attention level (one call, random inputs, profile densities of the representative step)\n")
        md.append(_table(["model", "res", "heads x tokens", "cuDNN dense ms", "co-cluster ms", "select ms",
                          "sparse attn ms", "kept", "reuse call x", "recluster call x", "permute / unpermute ms"], [
            [a["model"], a["res"], f"{a['heads']} x {a['tokens']}", _f(a["dense_cudnn_ms"]), _f(a["cocluster_ms"]),
             _f(a["select_ms"]), _f(a["attention_ms"]), _f(a["kept_fraction"], "{:.3f}"),
             _f(a["speedup_reuse_call"]), _f(a["speedup_recluster_call"]),
             f"{_f(a['permute_qkv_ms'])} / {_f(a['unpermute_o_ms'])} (fused)"] for a in result["attention"]]))
        md.append("\nPermutation: the sparse kernel reads Q, K, V and writes O through the cluster permutations, so "
                  "its time is inside `sparse attn`; the standalone permute / unpermute passes "
                  "(svoo_cuda_plan_bench) are shown for reference.\n")
    if result.get("transformer"):
        md.append("\n## Transformer level (one transformer call = one CFG branch of one step)\n")
        md.append(_table(["model", "res", "tokens", "params", "dense s", "recluster s", "sparse s", "sparse x",
                          "recluster x", "non-attn s", "steps (recl/sparse)", "kept clusters", "token density",
                          "svoo active"], [
            [t["model"], t["res"], str(t["tokens"]), f"{t['params'] / 1e9:.2f} B", _f(t["dense_call_s"], "{:.3f}"),
             _f(t["recluster_call_s"], "{:.3f}"), _f(t["reuse_call_s"], "{:.3f}"), _f(t["speedup_sparse_call"]),
             _f(t["speedup_recluster_call"]), _f(t["non_attention_s"], "{:.3f}"),
             f"{t['recluster_step']}/{t['reuse_step']}", _f(t["kept_fraction_reuse_step"], "{:.3f}"),
             _f((t.get("token_density_reuse_step") or {}).get("mean"), "{:.3f}"),
             "yes" if t["sparse_path_active"] else "**no**"] for t in result["transformer"]]))
        md.append("\n`kept clusters`: the policy's kept fraction of key clusters at the reuse step (mean over sparse "
                  "layers and heads); `token density`: kept query-key token pairs over all pairs, measured on the "
                  "plans of that step (the kept clusters tend to be the large ones, so it is higher).\n")
        md.append("\n## Peak GPU memory (torch.cuda.max_memory_allocated over the timed calls; + planner workspace)\n")
        md.append(_table(["model", "res", "dense GiB", "recluster GiB", "sparse GiB", "planner workspace GiB",
                          "clustering cache (device / host GiB)", "svoo extra, one CFG branch",
                          "svoo extra, generation", "extra vs activations only"], [
            [t["model"], t["res"], _f(t["memory"]["dense"]["peak_allocated"] and t["memory"]["dense"]["peak_allocated"] / GIB),
             _f(t["memory"]["recluster"]["peak_allocated"] and t["memory"]["recluster"]["peak_allocated"] / GIB),
             _f(t["memory"]["reuse"]["peak_allocated"] and t["memory"]["reuse"]["peak_allocated"] / GIB),
             _f(t["memory"]["planner_workspace_bytes"] and t["memory"]["planner_workspace_bytes"] / GIB, "{:.3f}"),
             _cache_cell(t["memory"]),
             _f(t["memory"].get("extra_fraction_one_branch"), "{:+.1%}"),
             _f(t["memory"].get("extra_fraction"), "{:+.1%}"),
             _f(t["memory"].get("extra_fraction_of_activations"), "{:+.1%}")] for t in result["transformer"]]))
        md.append("\nThe calls are of one CFG branch; `generation` adds the other branches' device-resident "
                  "clustering slots (a generation keeps one cache per branch), and is what the target is about.\n")
    if result.get("generation"):
        md.append("\n## Generation level (denoising loop composed from the Controller's schedule and the per-call times)\n")
        md.append(_table(["model", "res", "steps x branches", "calls dense/recluster/sparse", "dense s", "svoo s",
                          "speedup", "bound (free sparse attn)"], [
            [g["model"], g["res"], f"{g['steps']} x {g['branches']}",
             f"{g['calls']['dense']}/{g['calls']['recluster']}/{g['calls']['reuse']}", _f(g["dense_s"], "{:.1f}"),
             _f(g["svoo_s"], "{:.1f}"), _f(g["speedup"]), _f(g["speedup_bound_free_sparse_attention"])]
            for g in result["generation"]]))
        md.append("\nText encoding and VAE decoding are not included (same for dense and svoo).\n")
        for g in result["generation"]:
            t = _find(result.get("transformer", []), g["model"], g["res"])
            if t is None:
                continue
            if "speedup_vs_unmasked_dense" in g:
                md.append(f"\n{g['model']} {g['res']}: diffusers masks the joint attention (an all-ones mask here), "
                          f"and cuDNN's masked path is slower; without the mask a dense call takes "
                          f"{t['dense_unmasked_call_s']:.3f} s (masked {t['dense_call_s']:.3f} s): sparse call "
                          f"{t['speedup_sparse_call_vs_unmasked_dense']:.2f}x, whole generation "
                          f"{g['dense_unmasked_s']:.1f} s -> {g['svoo_unmasked_dense_s']:.1f} s "
                          f"(**{g['speedup_vs_unmasked_dense']:.2f}x**, svoo's dense calls unmasked too).\n")
            if g["speedup"] > g["speedup_bound_free_sparse_attention"] and not t.get("non_attention_source", "").startswith("measured"):
                md.append(
                    f"\n**{g['model']} {g['res']}: the measured speed-up ({g['speedup']:.2f}x) exceeds the bound.** "
                    f"The sparse call is shorter than the non-attention time derived from the attention-level "
                    f"cuDNN call ({t['dense_attention_call_ms']:.1f} ms, no mask), so the dense model's attention calls "
                    f"take longer than that call: most likely because the model passes an attention mask (diffusers' "
                    f"HunyuanVideo masks its joint attention, all ones here) and cuDNN runs its masked path. The "
                    f"non-attention time derived as dense call - layers x unmasked call "
                    f"({t['non_attention_s']:.3f} s) and the bound are therefore overestimated. Dense is what the "
                    f"diffusers model runs; a dense attention without the mask would be faster, and the speed-up "
                    f"against it lower.\n")
    checks = [c for c in result.get("checks", []) if "skipped" not in c]
    if checks:
        md.append("\n## Check: composed vs a real full denoising loop\n")
        md.append(_table(["model", "res", "steps", "svoo measured s", "svoo composed s", "error", "dense measured s",
                          "dense composed s", "error", "schedule = log"], [
            [c["model"], c["res"], str(c["steps"]), _f(c["measured_svoo_s"]), _f(c["composed_svoo_s"]),
             _f(c["svoo_error"], "{:+.1%}"), _f(c.get("measured_dense_s")), _f(c.get("composed_dense_s")),
             _f(c.get("dense_error"), "{:+.1%}"), "yes" if c["schedule_matches_log"] else "**no**"] for c in checks]))
    if result.get("densities"):
        md.append("\n## Kept fraction of key clusters per step (benchmark rule, sparse layers)\n")
        rows = []
        for m, d in result["densities"].items():
            sp = [r["kept_fraction_sparse_layers"] for r in d["per_step"] if r["call"] != "dense"]
            rows.append([m, d["profile"], f"{d['steps']}", f"{d['warmup_steps']}", f"{d['dense_layers']}",
                         f"{d['reuse_interval']}", _f(min(sp), "{:.3f}"), _f(d["mean_kept_fraction"], "{:.3f}"),
                         _f(max(sp), "{:.3f}"), f"{d['reuse_step']}"])
        md.append(_table(["model", "profile", "steps", "dense warm-up", "dense layers", "reuse interval", "min",
                          "mean", "max", "representative step"], rows))
    for key, title in (("skipped", "Skipped"), ("errors", "Errors")):
        if result.get(key):
            md.append(f"\n## {title}\n")
            md += [f"- {s['what']}: {s.get('reason', s.get('error'))}\n" for s in result[key]]
    return "\n".join(md)


# -------------------------------------------------------------------------------------------- svg

def svg(result: Dict) -> str:
    """Two panels: speed-ups per shape (attention call, sparse step, generation) against the
    targets, and the kept fraction per step of each model."""
    bars = []  # (label, value, target or None)
    for t in result.get("transformer", []):
        key = f"{t['model']} {t['res']}"
        a = _find(result.get("attention", []), t["model"], t["res"])
        g = _find(result.get("generation", []), t["model"], t["res"])
        if a:
            bars.append((f"{key}: attention call (sparse)", a["speedup_reuse_call"], None))
        bars.append((f"{key}: sparse step", t["speedup_sparse_call"], 3.0 if key == "wan1.3b 720p" else None))
        if g:
            tgt = {"wan1.3b 720p": 2.0, "wan14b 720p": 1.8, "hunyuan 720p": 2.2}.get(key)
            bars.append((f"{key}: generation", g["speedup"], tgt))
    if not bars:
        for a in result.get("attention", []):
            bars.append((f"{a['model']} {a['res']}: attention call (sparse)", a["speedup_reuse_call"], None))
    W, left, bh = 900, 300, 22
    h1 = 60 + bh * max(1, len(bars))
    h2 = 280
    H = h1 + h2 + 40
    xmax = max([4.0] + [b[1] for b in bars] + [b[2] or 0 for b in bars]) * 1.1
    sx = lambda v: left + (W - left - 40) * v / xmax  # noqa: E731
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="10" y="20" font-size="15" font-weight="bold">svoo vs cuDNN dense: speed-up '
         f'({escape(result["env"].get("gpu", result["env"]["device"]))})</text>',
         f'<text x="10" y="38" fill="#555">{escape(result["rule"][:140])}</text>']
    for v in range(0, int(xmax) + 1):
        x = sx(v)
        o.append(f'<line x1="{x:.1f}" y1="48" x2="{x:.1f}" y2="{h1 - 8}" stroke="#ddd"/>')
        o.append(f'<text x="{x:.1f}" y="{h1 + 4}" text-anchor="middle" fill="#555">{v}x</text>')
    x1 = sx(1.0)
    o.append(f'<line x1="{x1:.1f}" y1="48" x2="{x1:.1f}" y2="{h1 - 8}" stroke="#333" stroke-dasharray="4,3"/>')
    for i, (label, v, tgt) in enumerate(bars):
        y = 52 + i * bh
        color = "#4477aa" if "attention" in label else ("#66ccee" if "step" in label else "#228833")
        if tgt is not None and v < tgt:
            color = "#ee6677"
        o.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{escape(label)}</text>')
        o.append(f'<rect x="{left}" y="{y + 2}" width="{max(0.0, sx(v) - left):.1f}" height="{bh - 6}" fill="{color}"/>')
        o.append(f'<text x="{sx(v) + 4:.1f}" y="{y + 14}">{v:.2f}x</text>')
        if tgt is not None:
            xt = sx(tgt)
            o.append(f'<line x1="{xt:.1f}" y1="{y}" x2="{xt:.1f}" y2="{y + bh - 2}" stroke="black" stroke-width="2"/>')
    # panel 2: kept fraction per step
    top, ph, pl, pw = h1 + 30, h2 - 60, 60, W - 100
    o.append(f'<text x="10" y="{top}" font-size="14" font-weight="bold">kept fraction of key clusters per step '
             f'(mean over sparse layers and heads; 1 = dense warm-up)</text>')
    y0 = top + 15 + ph
    o.append(f'<rect x="{pl}" y="{top + 15}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    for fr in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y0 - ph * fr
        o.append(f'<text x="{pl - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{fr:.2f}</text>')
    palette = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#aa3377"]
    for i, (m, d) in enumerate(result.get("densities", {}).items()):
        rows = d["per_step"]
        n = max(1, len(rows) - 1)
        pts = " ".join(f"{pl + pw * j / n:.1f},{y0 - ph * r['kept_fraction_sparse_layers']:.1f}" for j, r in enumerate(rows))
        o.append(f'<polyline points="{pts}" fill="none" stroke="{palette[i % 5]}" stroke-width="2"/>')
        o.append(f'<text x="{pl + pw - 150}" y="{top + 32 + 16 * i}" fill="{palette[i % 5]}">{escape(m)} '
                 f'(mean {d["mean_kept_fraction"]:.3f})</text>')
    o.append(f'<text x="{pl + pw / 2}" y="{y0 + 18}" text-anchor="middle" fill="#555">denoising step</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


def write_all(result: Dict, out_dir: str) -> List[str]:
    paths = [os.path.join(out_dir, n) for n in ("e2e.json", "e2e.md", "e2e.svg")]
    with open(paths[0], "w") as f:
        json.dump(result, f, indent=1, default=float)
    with open(paths[1], "w") as f:
        f.write(markdown(result))
    with open(paths[2], "w") as f:
        f.write(svg(result))
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    with open(sys.argv[1]) as f:
        res = json.load(f)
    print("\n".join(write_all(res, os.path.dirname(os.path.abspath(sys.argv[1])))))
