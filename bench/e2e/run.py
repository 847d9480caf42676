#!/usr/bin/env python3
"""svoo end-to-end benchmark suite: attention, transformer and generation level, dense cuDNN
attention vs svoo in the same run, plus peak GPU memory.

  python3 bench/e2e/run.py --level all --models wan1.3b,wan14b --res 480p,720p --out DIR
  python3 bench/e2e/run.py --smoke --out DIR        # tiny random-weight Wan on the CPU (CI)

Writes DIR/e2e.json (every number), DIR/e2e.md (tables, targets) and DIR/e2e.svg (plot).

Random weights make the top-p rule meaningless, so every svoo number here keeps, for each
(step, layer, head), max(clipped floor, profiled density) of its key clusters from the model's
reference profile (released rule with top_p=0, floor_hi=1; see policy.py).

Levels:
  attention    one call at each model's shape: cuDNN dense vs svoo co-clustering, selection and
               sparse attention (which reads and writes through the cluster permutations; the
               standalone permutation passes come from svoo_cuda_plan_bench when given), at the
               profile's densities of a representative step, on a sample of layers.
  transformer  a random-weight WanTransformer3DModel (real Wan2.1 configs; HunyuanVideo too), bf16:
               one dense call (cuDNN attention forced), one reclustering call and one sparse
               (reuse) call under svoo.diffusers.enable, peak memory of each.
  generation   the whole denoising loop's time under the released schedule (warm-up, dense
               layers, reuse interval, steps, CFG branches) from the Controller's own decisions
               and the measured per-call times, checked once against a real full loop (--check).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import sys
import time
from typing import Any, Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import policy  # noqa: E402
import report  # noqa: E402
from plan_density import measure_token_density  # noqa: E402

# Real transformer configs (diffusers' config.json of the released checkpoints).
WAN_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None,
                rope_max_seq_len=1024)
WAN_14B = dict(WAN_1_3B, num_attention_heads=40, ffn_dim=13824, num_layers=40)
HUNYUAN = dict(in_channels=16, out_channels=16, num_attention_heads=24, attention_head_dim=128, num_layers=20,
               num_single_layers=40, num_refiner_layers=2, mlp_ratio=4.0, patch_size=2, patch_size_t=1,
               qk_norm="rms_norm", guidance_embeds=True, text_embed_dim=4096, pooled_projection_dim=768,
               rope_theta=256.0, rope_axes_dim=(16, 56, 56))
TINY_WAN = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=4,
                text_dim=16, freq_dim=16, ffn_dim=64, num_layers=2, rope_max_seq_len=64)

MODELS: Dict[str, Dict[str, Any]] = {
    "wan1.3b": dict(kind="wan", config=WAN_1_3B, preset="wan2.1-t2v-1.3b", profile="sparsity_wan_1.3B_t2v.csv",
                    frames=81, branches=2, text_len=512, label="Wan2.1-T2V-1.3B"),
    "wan14b": dict(kind="wan", config=WAN_14B, preset="wan2.1-t2v-14b", profile="sparsity_wan_14B_t2v.csv",
                   frames=81, branches=2, text_len=512, label="Wan2.1-T2V-14B"),
    # HunyuanVideo is guidance-distilled: one transformer call per step (no CFG pass).
    "hunyuan": dict(kind="hunyuan", config=HUNYUAN, preset="hunyuan-t2v", profile="sparsity_hunyuan10_13B_t2v.csv",
                    frames=129, branches=1, text_len=256, label="HunyuanVideo T2V"),
    "tiny": dict(kind="wan", config=TINY_WAN, preset="wan2.1-t2v-1.3b", profile="sparsity_wan_1.3B_t2v.csv",
                 frames=9, branches=2, text_len=5, label="tiny random Wan (smoke)"),
}
RES = {"480p": (480, 832), "720p": (720, 1280), "tiny": (48, 48)}
# The shapes each target is about (bench README and the issue).
TARGETS = [
    dict(name="Wan2.1-1.3B 720p whole generation", model="wan1.3b", res="720p", level="generation", target=2.0),
    dict(name="Wan2.1-1.3B 720p sparse step", model="wan1.3b", res="720p", level="sparse_step", target=3.0),
    dict(name="Wan2.1-14B 720p whole generation", model="wan14b", res="720p", level="generation", target=1.8),
    dict(name="HunyuanVideo 720p x 129 whole generation", model="hunyuan", res="720p", level="generation", target=2.2),
    dict(name="extra peak memory vs dense", model="*", res="*", level="memory", target=0.10),
]


# ----------------------------------------------------------------------------------------- helpers

def log(msg: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Clock:
    """Wall-clock budget of the whole run; stages ask before they start."""

    def __init__(self, budget_s: Optional[float]):
        self.start, self.budget = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fits(self, seconds: float) -> bool:
        return self.budget is None or self.elapsed() + seconds <= self.budget


def find_profiles(arg: Optional[str], required: bool = True) -> Optional[str]:
    root = os.path.abspath(os.path.join(HERE, "..", ".."))
    for d in [arg, os.environ.get("SVOO_PROFILES"), os.path.join(root, ".carry", "reference-profiles"),
              os.path.join(root, "..", "shared", "reference-profiles"), os.path.join(root, "shared", "reference-profiles")]:
        if d and os.path.isfile(os.path.join(d, MODELS["wan1.3b"]["profile"])):
            return os.path.abspath(d)
    if not required:
        return None
    raise SystemExit("e2e: reference profiles not found; pass --profiles DIR (shared/reference-profiles)")


def latent_shape(model: str, res: str) -> tuple:
    """(latent frames, latent height, latent width) and tokens after patching (VAE 4x8x8, patch 1x2x2)."""
    m = MODELS[model]
    h, w = RES[res]
    f = (m["frames"] - 1) // 4 + 1
    lh, lw = h // 8, w // 8
    return (f, lh, lw), f * (lh // 2) * (lw // 2)


def attn_heads(model: str) -> int:
    return MODELS[model]["config"]["num_attention_heads"]


def n_layers(model: str) -> int:
    c = MODELS[model]["config"]
    return c["num_layers"] + c.get("num_single_layers", 0)


class Device:
    def __init__(self, torch, name: str):
        self.torch, self.name = torch, name
        self.cuda = name.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def time_s(self, fn: Callable[[], Any], iters: int = 3, warm: int = 1) -> Dict[str, Any]:
        """Median wall time of fn (synchronised), after `warm` untimed calls; on the GPU also the
        peak of torch.cuda.max_memory_allocated over all of them (absolute, and above the start)."""
        if self.cuda:
            self.sync()
            self.torch.cuda.reset_peak_memory_stats()
            base = self.torch.cuda.memory_allocated()
        for _ in range(warm):
            fn()
        self.sync()
        ts = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            self.sync()
            ts.append(time.perf_counter() - t0)
        ts.sort()
        out = {"median_s": ts[len(ts) // 2], "min_s": ts[0], "max_s": ts[-1], "iters": iters, "warm": warm,
               "peak_allocated": None, "peak_above_start": None}
        if self.cuda:
            peak = self.torch.cuda.max_memory_allocated()
            out.update(peak_allocated=peak, peak_above_start=peak - base)
        return out

    def memory(self) -> Dict[str, Optional[int]]:
        if not self.cuda:
            return {"allocated": None, "reserved": None, "device_used": None, "outside_torch": None}
        t = self.torch.cuda
        free, total = t.mem_get_info()
        return {"allocated": t.memory_allocated(), "reserved": t.memory_reserved(), "device_used": total - free,
                "outside_torch": (total - free) - t.memory_reserved()}


DENSE_BACKEND = {"mode": "cudnn", "note": "cuDNN SDPA forced (sdpa_kernel([SDPBackend.CUDNN_ATTENTION]))"}


def dense_ctx(torch, dev: Device):
    """cuDNN SDPA forced on the GPU (the yardstick); torch's default CPU path otherwise. If cuDNN
    refuses a call (a masked joint attention, say), the suite falls back to cuDNN first in
    priority and says so in the JSON (DENSE_BACKEND)."""
    import contextlib
    if not dev.cuda:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    if DENSE_BACKEND["mode"] == "cudnn":
        return sdpa_kernel([SDPBackend.CUDNN_ATTENTION])
    return sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                        SDPBackend.MATH], set_priority=True)


def with_dense_fallback(fn: Callable[[], Any]) -> Any:
    """Runs fn; if forced cuDNN has no kernel for some call, switches to cuDNN-first priority
    and runs fn again."""
    try:
        return fn()
    except RuntimeError as e:
        if DENSE_BACKEND["mode"] != "cudnn" or "kernel" not in str(e).lower():
            raise
        DENSE_BACKEND.update(mode="prefer", note=f"cuDNN first in priority, others allowed: forced cuDNN refused a "
                                                 f"call ({str(e).splitlines()[0][:200]})")
        log(f"  forced cuDNN refused a call; cuDNN-first priority from now on: {str(e).splitlines()[0][:120]}")
        return fn()


class sdpa_patched:
    """Replaces torch.nn.functional.scaled_dot_product_attention while active (diffusers' attention
    dispatch and svoo's dense path look it up at call time), counting the calls it serves:
    - "free": returns zeros of the output's shape, so a forward costs everything but attention
      (the measured non-attention time of a call; Wan's small cross-attention is freed too);
    - "unmasked": drops attn_mask, exact when every mask entry is True, as in this suite's inputs
      (HunyuanVideo masks its joint attention even when every prompt slot is valid)."""

    def __init__(self, torch, mode: str):
        self.F, self.mode, self.calls = torch.nn.functional, mode, 0
        self.original = self.F.scaled_dot_product_attention

    def __enter__(self):
        def replacement(query, key, value, attn_mask=None, *args, **kwargs):
            self.calls += 1
            if self.mode == "free":
                return query.new_zeros(query.shape[:-1] + (value.shape[-1],))
            return self.original(query, key, value, None, *args, **kwargs)

        self.F.scaled_dot_product_attention = replacement
        return self

    def __exit__(self, *exc):
        self.F.scaled_dot_product_attention = self.original
        return False


# --------------------------------------------------------------------------------- the three levels

ALIGN_QUERIES = 128  # --align-queries: enable()'s query-cluster alignment at the transformer and generation levels
CLUSTERING_CACHE = "host"  # --clustering-cache: enable()'s clustering_cache at the same levels


def model_policy(model: str, profiles: str, smoke: bool) -> Dict[str, Any]:
    """Preset, profile path, profile array, and the enable() options of the benchmark rule."""
    import svoo
    m = MODELS[model]
    p = svoo.preset(m["preset"])
    path = os.path.join(profiles, m["profile"]) if profiles else None
    if smoke:
        path = tiny_profile(path, steps=6, layers=m["config"]["num_layers"], heads=attn_heads(model))
    opts = dict(preset=m["preset"], profile=path, **policy.RULE_OVERRIDES)
    opts["align_queries"] = ALIGN_QUERIES
    opts["clustering_cache"] = CLUSTERING_CACHE
    if smoke:  # few tokens: few clusters, few steps, short reuse window (exercises every call class)
        opts.update(kq=4, kk=12, num_inference_steps=6, reuse_interval=3)
    return {"preset": p, "profile_path": path, "profile": svoo.load_profile(path), "enable": opts,
            "kq": opts.get("kq", p["kq"]), "kk": opts.get("kk", p["kk"]),
            "steps": opts.get("num_inference_steps", p["steps"])}


def tiny_profile(path: str, steps: int, layers: int, heads: int) -> str:
    """A profile of the tiny smoke model cut from a real one: `steps` steps spread over its steps,
    its first layers and heads (the Controller wants the model's own layer and head counts).
    Without the reference profiles (a bare clone), fixed made-up densities."""
    import tempfile
    import numpy as np
    import svoo
    if path is None:
        full = np.array([0.74, 0.04, 0.31, 0.12, 0.09, 0.22, 0.05, 0.6])[np.arange(steps * layers * heads) % 8]
        full = full.reshape(steps, layers, heads)
    else:
        full = svoo.load_profile(path)
    picks = [round(i * (full.shape[0] - 1) / max(1, steps - 1)) for i in range(steps)]
    import atexit
    fd, out = tempfile.mkstemp(prefix="svoo_e2e_tiny_", suffix=".csv")
    atexit.register(lambda: os.path.exists(out) and os.remove(out))
    with os.fdopen(fd, "w") as f:
        f.write("Step,Layer,Head,Sparsity\n")
        for s, src in enumerate(picks, 1):
            for layer in range(layers):
                for h in range(heads):
                    f.write(f"{s},{layer},{h},{float(full[src, layer, h]):.6g}\n")
    return out


def make_controller(model: str, pol: Dict[str, Any]):
    """The Controller exactly as svoo.diffusers.enable builds it."""
    from svoo import _svoo
    o = pol["enable"]
    return _svoo.Controller(o["preset"], steps=o.get("num_inference_steps"), profile=o["profile"],
                            warmup_steps=o.get("warmup_steps"), dense_layers=o.get("dense_layers"),
                            reuse_interval=o.get("reuse_interval"), layers=n_layers(model), heads=attn_heads(model))


def densities_for(model: str, pol: Dict[str, Any]) -> Dict[str, Any]:
    ctrl = make_controller(model, pol)
    rows = policy.step_densities(pol["profile"], ctrl, pol["preset"]["floor_lo"], pol["kk"])
    interval = pol["enable"].get("reuse_interval", pol["preset"]["reuse_interval"])
    rep = policy.representative_step(rows, interval, ctrl.warmup_steps)
    return {"model": model, "profile": os.path.basename(pol["profile_path"]), "steps": ctrl.steps,
            "warmup_steps": ctrl.warmup_steps, "dense_layers": ctrl.dense_layers, "reuse_interval": interval,
            "floor_lo": pol["preset"]["floor_lo"], "kk": pol["kk"], "per_step": rows, **rep}


def _mean_or_none(x) -> Optional[float]:
    """A plan's block density: one number, or the mean of one per head."""
    if x is None or callable(x):
        return None
    try:
        vals = [float(v) for v in x]
    except TypeError:
        return float(x)
    return sum(vals) / len(vals) if vals else None


def attention_level(model: str, res: str, pol, dens, dev: Device, args, plan_bench: Dict) -> Dict[str, Any]:
    """One attention call at the model's shape: dense cuDNN vs svoo's stages."""
    import torch
    import torch.nn.functional as F
    import svoo
    H = attn_heads(model)
    _, N = latent_shape(model, res)
    if MODELS[model]["kind"] == "hunyuan":
        N += MODELS[model]["text_len"]  # joint attention: video tokens and the text slots, all clustered here
    D = MODELS[model]["config"]["attention_head_dim"]
    dtype = torch.bfloat16 if dev.cuda else torch.float32
    g = torch.Generator(device=dev.name).manual_seed(0)
    q, k, v = (torch.randn(H, N, D, device=dev.name, dtype=dtype, generator=g) for _ in range(3))
    it = dict(iters=args.iters, warm=1)
    with dense_ctx(torch, dev):
        dense = dev.time_s(lambda: F.scaled_dot_product_attention(q[None], k[None], v[None]), **it)
    step = dens["reuse_step"]
    ctrl = make_controller(model, pol)
    sparse_layers = [layer for layer in range(n_layers(model)) if layer >= ctrl.dense_layers]
    n_sample = max(1, min(args.attn_layers, len(sparse_layers)))
    layers = [sparse_layers[round(i * (len(sparse_layers) - 1) / max(1, n_sample - 1))] for i in range(n_sample)]
    layers = sorted(set(layers))
    lo, kq, kk = pol["preset"]["floor_lo"], pol["kq"], pol["kk"]
    rows = []
    out = torch.empty_like(q)
    if dev.cuda:
        planner = svoo.CudaPlanner(H, N, N, D, kq, kk)
        cluster = dev.time_s(lambda: planner.cluster(q, k, iterations=pol["preset"]["iterations"]), **it)
        for layer in layers:
            d = [float(x) for x in pol["profile"][step - 1, layer, :H]]
            sel = dev.time_s(lambda: planner.select(0.0, lo, 1.0, None, "released", d), **it)
            att = dev.time_s(lambda: planner.sparse_attention(q, k, v, out), **it)
            rows.append({"layer": layer, "kept_fraction": policy.kept_fraction(d, lo, kk),
                         "block_density": _mean_or_none(getattr(planner, "block_density", None)),
                         "select_ms": 1e3 * sel["median_s"], "attention_ms": 1e3 * att["median_s"]})
        cluster_ms = 1e3 * cluster["median_s"]
        backend = "svoo.CudaPlanner"
    else:
        # CPU: plan() does clustering + selection + layout; with reuse= it skips the clustering.
        d0 = [float(x) for x in pol["profile"][step - 1, layers[0], :H]]
        opts = dict(preset=pol["preset"]["name"], kq=kq, kk=kk, **policy.RULE_OVERRIDES)
        full = dev.time_s(lambda: svoo.plan(q, k, profiled=d0, **opts), **it)
        base = svoo.plan(q, k, profiled=d0, **opts)
        plans = {}
        for layer in layers:
            d = [float(x) for x in pol["profile"][step - 1, layer, :H]]
            sel = dev.time_s(lambda: plans.__setitem__(layer, svoo.plan(q, k, profiled=d, reuse=base, **opts)), **it)
            att = dev.time_s(lambda: svoo.sparse_attention(q, k, v, plans[layer], out), **it)
            rows.append({"layer": layer, "kept_fraction": policy.kept_fraction(d, lo, kk),
                         "block_density": _mean_or_none(plans[layer].block_density),
                         "select_ms": 1e3 * sel["median_s"], "attention_ms": 1e3 * att["median_s"]})
        cluster_ms = max(0.0, 1e3 * full["median_s"] - rows[0]["select_ms"])
        backend = "svoo CPU plan (clustering = plan - plan(reuse=))"
    dense_ms = 1e3 * dense["median_s"]
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    sel_ms, att_ms = mean("select_ms"), mean("attention_ms")
    pb = plan_bench.get(f"{model}-{res}")
    res_row = {
        "model": model, "res": res, "heads": H, "tokens": N, "head_dim": D, "kq": kq, "kk": kk, "backend": backend,
        "step": step, "layers": rows, "dense_cudnn_ms": dense_ms, "cocluster_ms": cluster_ms, "select_ms": sel_ms,
        "attention_ms": att_ms, "kept_fraction": mean("kept_fraction"),
        "permutation": "fused: the sparse kernel reads Q/K/V and writes O through the cluster permutations",
        "permute_qkv_ms": pb.get("permute_qkv_ms") if pb else None,
        "unpermute_o_ms": pb.get("unpermute_o_ms") if pb else None,
        "plan_bench_cocluster_ms": pb.get("cocluster_t2_ms") if pb else None,
        "reuse_call_ms": sel_ms + att_ms, "recluster_call_ms": cluster_ms + sel_ms + att_ms,
    }
    res_row["speedup_reuse_call"] = dense_ms / res_row["reuse_call_ms"]
    res_row["speedup_recluster_call"] = dense_ms / res_row["recluster_call_ms"]
    res_row["attention_effective_tflops"] = (4.0 * H * N * N * D * res_row["kept_fraction"] / (att_ms * 1e-3) / 1e12
                                             if dev.cuda else None)
    res_row["dense_tflops"] = 4.0 * H * N * N * D / (dense_ms * 1e-3) / 1e12 if dev.cuda else None
    del q, k, v, out
    return res_row


def build_model(model: str, dev: Device):
    import torch
    m = MODELS[model]
    if m["kind"] == "wan":
        from diffusers import WanTransformer3DModel as cls
    else:
        from diffusers import HunyuanVideoTransformer3DModel as cls
    torch.manual_seed(0)
    dtype = torch.bfloat16 if dev.cuda else torch.float32
    old = torch.get_default_dtype()
    try:  # built in place, in bf16, on the device: no fp32 copy of 14B weights anywhere
        torch.set_default_dtype(dtype)
        with torch.device(dev.name):
            net = cls(**m["config"])
    finally:
        torch.set_default_dtype(old)
    # as from_pretrained(torch_dtype=bf16) leaves it: the model's fp32 modules kept in fp32
    keep = set(getattr(net, "_keep_in_fp32_modules", None) or [])
    if dtype != torch.float32 and keep:
        for name, module in net.named_modules():
            if keep & set(name.split(".")):
                module.float()
    return net.eval().requires_grad_(False)


def model_inputs(model: str, res: str, dev: Device, uncond: bool = False) -> Dict[str, Any]:
    import torch
    m = MODELS[model]
    (f, lh, lw), _ = latent_shape(model, res)
    c = m["config"]
    dtype = torch.bfloat16 if dev.cuda else torch.float32
    g = torch.Generator(device=dev.name).manual_seed(1)
    x = torch.randn(1, c["in_channels"], f, lh, lw, device=dev.name, dtype=dtype, generator=g)
    text_dim = c.get("text_dim", c.get("text_embed_dim"))
    text = torch.randn(1, m["text_len"], text_dim, device=dev.name, dtype=dtype, generator=g)
    if uncond:
        text = torch.zeros_like(text)
    inp = dict(hidden_states=x, encoder_hidden_states=text)
    if m["kind"] == "hunyuan":
        inp.update(encoder_attention_mask=torch.ones(1, m["text_len"], device=dev.name, dtype=torch.int64),
                   pooled_projections=torch.randn(1, c["pooled_projection_dim"], device=dev.name, dtype=dtype,
                                                  generator=g),
                   guidance=torch.tensor([6000.0], device=dev.name, dtype=dtype))
    return inp


def forward(net, inp, timestep: float, dev: Device):
    import torch
    with torch.no_grad():
        return net(timestep=torch.tensor([timestep], device=dev.name), return_dict=False, **inp)[0]


def goto_step(state, step: int) -> None:
    """Makes the next transformer call step `step`, branch 0 (svoo.diffusers learns the step
    from the timestep; this sets the state it learns into)."""
    state.step, state.branch, state.last_timestep = step - 1, -1, None


def call_modes(state, n_before: int) -> Dict[str, int]:
    seen: Dict[str, int] = {}
    for entry in state.log[n_before:]:
        seen[entry[-1]] = seen.get(entry[-1], 0) + 1
    return seen


def transformer_level(model: str, res: str, pol, dens, dev: Device, args, net=None) -> Dict[str, Any]:
    """One dense, one reclustering and one sparse (reuse) transformer call, same process."""
    import torch
    import torch.nn.functional as F
    import svoo.diffusers as sd
    t_build = time.perf_counter()
    own = net is None
    if own:
        net = build_model(model, dev)
    build_s = time.perf_counter() - t_build if own else None
    params = sum(p.numel() for p in net.parameters())
    inp = model_inputs(model, res, dev)
    _, N = latent_shape(model, res)
    H, D = attn_heads(model), MODELS[model]["config"]["attention_head_dim"]
    L = n_layers(model)
    it = dict(iters=args.model_iters if model in ("wan1.3b", "tiny") else args.big_model_iters, warm=1)
    row: Dict[str, Any] = {"model": model, "res": res, "tokens": N, "layers": L, "heads": H, "params": params,
                           "build_s": build_s, "dtype": "bf16" if dev.cuda else "fp32", "rule": policy.RULE_NOTE}
    # cuDNN dense self-attention alone at this shape (for the non-attention share of a call)
    dtype = torch.bfloat16 if dev.cuda else torch.float32
    q = torch.randn(1, H, N + (MODELS[model]["text_len"] if MODELS[model]["kind"] == "hunyuan" else 0), D,
                    device=dev.name, dtype=dtype)
    with dense_ctx(torch, dev):
        row["dense_attention_call_ms"] = 1e3 * dev.time_s(lambda: F.scaled_dot_product_attention(q, q, q),
                                                          iters=args.iters)["median_s"]
    del q
    mem0 = dev.memory()
    def time_dense():
        with dense_ctx(torch, dev):
            return dev.time_s(lambda: forward(net, inp, 999.0, dev), **it)

    dense = with_dense_fallback(time_dense)
    row["dense_backend"] = DENSE_BACKEND["note"]
    row["dense_call_s"] = dense["median_s"]
    row["dense_timing"] = dense

    def time_patched(mode: str):
        with dense_ctx(torch, dev), sdpa_patched(torch, mode) as p:
            t = dev.time_s(lambda: forward(net, inp, 999.0, dev), **it)
        return t["median_s"], p.calls // (it["iters"] + it["warm"])

    # The same call with attention free: what is left is its non-attention time, measured.
    row["free_attention_call_s"], row["free_attention_sdpa_calls"] = time_patched("free")
    if MODELS[model]["kind"] == "hunyuan":  # dense without diffusers' all-ones joint-attention mask
        row["dense_unmasked_call_s"], _ = time_patched("unmasked")
    state = sd.enable(net, **pol["enable"])
    try:
        row["controller"] = {"steps": state.controller.steps, "warmup_steps": state.controller.warmup_steps,
                             "dense_layers": state.controller.dense_layers}
        rs, us = dens["recluster_step"], dens["reuse_step"]
        n0 = len(state.log)

        def recluster():
            goto_step(state, rs)
            forward(net, inp, 500.0, dev)

        def reuse():
            goto_step(state, us)
            forward(net, inp, 400.0, dev)

        def warmup():  # step 1: every layer dense, through svoo.diffusers (svoo's dense kernel on Hopper for Wan)
            goto_step(state, 1)
            forward(net, inp, 999.0, dev)

        with dense_ctx(torch, dev):
            rec = dev.time_s(recluster, **it)
            steps_seen = {e[0] for e in state.log[n0:]}
            if steps_seen != {rs}:  # the state's step fields moved: goto_step no longer steers enable()
                raise RuntimeError(f"svoo.diffusers logged steps {sorted(steps_seen)} for calls steered to step {rs}")
            row["recluster_modes"] = call_modes(state, n0)
            n1 = len(state.log)
            use = dev.time_s(reuse, **it)
            row["reuse_modes"] = call_modes(state, n1)
            n2 = len(state.log)
            wup = dev.time_s(warmup, **it)
            row["warmup_modes"] = call_modes(state, n2)
            if dev.cuda:  # one more reuse call, untimed: the token density of every sparse layer's plan
                with measure_token_density(torch) as m:
                    reuse()
                row["token_density_reuse_step"] = m.summary()
        mem1 = dev.memory()
        # the reuse steps' clustering cache (CUDA path): its device-resident slots stay allocated
        # between calls (part of svoo's peak, and the other CFG branch has as many); host slots
        # cost the device only their uploads in flight (in the measured peaks)
        cache_bytes = state.clusterings.device_bytes()
        cache_host_bytes = state.clusterings.host_bytes()
        cache_slots = len(state.clusterings.entries)
    finally:
        sd.disable(net)
    row.update(recluster_step=rs, reuse_step=us, recluster_call_s=rec["median_s"], reuse_call_s=use["median_s"],
               recluster_timing=rec, reuse_timing=use, warmup_call_s=wup["median_s"], warmup_timing=wup,
               kept_fraction_reuse_step=dens["per_step"][us - 1]["kept_fraction_sparse_layers"])
    sparse_layers = L - row["controller"]["dense_layers"]
    row["sparse_path_active"] = (row["reuse_modes"].get("reuse", 0) > 0 and
                                 row["recluster_modes"].get("recluster", 0) > 0 and
                                 row["reuse_modes"].get("dense", 0) <= (it["iters"] + it["warm"]) * (L - sparse_layers))
    row["speedup_sparse_call"] = row["dense_call_s"] / row["reuse_call_s"]
    if "dense_unmasked_call_s" in row:
        row["speedup_sparse_call_vs_unmasked_dense"] = row["dense_unmasked_call_s"] / row["reuse_call_s"]
    row["speedup_recluster_call"] = row["dense_call_s"] / row["recluster_call_s"]
    # Where a call's time goes: the non-attention time measured with attention free (derived as
    # dense call - L attention-level cuDNN calls where the patch served no call); the model's own
    # dense attention per layer is the rest of its dense call.
    row["non_attention_derived_s"] = max(0.0, row["dense_call_s"] - L * row["dense_attention_call_ms"] * 1e-3)
    measured = row["free_attention_sdpa_calls"] >= L
    row["non_attention_source"] = ("measured: the call with attention free" if measured else
                                   "derived: dense call - layers x attention-level cuDNN call")
    row["non_attention_s"] = row["free_attention_call_s"] if measured else row["non_attention_derived_s"]
    row["model_attention_per_layer_s"] = ((row["dense_call_s"] - row["non_attention_s"]) / L if measured else
                                          row["dense_attention_call_ms"] * 1e-3)
    attn_s = row["model_attention_per_layer_s"]
    dense_layers = row["controller"]["dense_layers"]
    row["sparse_attention_per_layer_s"] = max(0.0, (row["reuse_call_s"] - row["non_attention_s"] - dense_layers * attn_s)
                                              / max(1, sparse_layers))
    row["clustering_per_layer_s"] = max(0.0, (row["recluster_call_s"] - row["reuse_call_s"]) / max(1, sparse_layers))
    ws = mem1["outside_torch"] - mem0["outside_torch"] if dev.cuda else None
    extra = getattr(state, "workspace_bytes", None)
    peak = lambda t: {k: t[k] for k in ("peak_allocated", "peak_above_start")}  # noqa: E731
    mem_dense, mem_rec, mem_use = peak(dense), peak(rec), peak(use)
    mem = {"dense": mem_dense, "recluster": mem_rec, "reuse": mem_use,
           "outside_torch_before": mem0["outside_torch"], "outside_torch_after": mem1["outside_torch"],
           "planner_workspace_bytes": extra if isinstance(extra, int) else ws,
           "clustering_cache_bytes": cache_bytes, "clustering_cache_slots": cache_slots,
           "clustering_cache_where": state.clusterings.where, "clustering_cache_host_bytes": cache_host_bytes,
           "planner_workspace_source": "state.workspace_bytes" if isinstance(extra, int) else
           "device memory in use outside torch's allocator, after svoo calls minus before (cudaMalloc by svoo)"}
    if dev.cuda:
        svoo_peak = max(mem_rec["peak_allocated"], mem_use["peak_allocated"]) + max(0, mem["planner_workspace_bytes"] or 0)
        # The calls above are one CFG branch; a generation keeps every branch's slots, so its peak
        # has the other branches' device-resident slots on top (what the memory target is about).
        branches = MODELS[model]["branches"]
        mem["cfg_branches"] = branches
        mem["svoo_peak_one_branch_bytes"] = svoo_peak
        mem["extra_fraction_one_branch"] = svoo_peak / mem_dense["peak_allocated"] - 1.0
        svoo_peak += (branches - 1) * cache_bytes
        mem["svoo_peak_bytes"] = svoo_peak
        mem["dense_peak_bytes"] = mem_dense["peak_allocated"]
        mem["extra_fraction"] = svoo_peak / mem_dense["peak_allocated"] - 1.0
        # the same against the activations alone (peak minus weights and buffers)
        weights = sum(p.numel() * p.element_size() for p in net.parameters()) + \
            sum(b.numel() * b.element_size() for b in net.buffers())
        mem["weights_bytes"] = weights
        act_dense = mem_dense["peak_allocated"] - weights
        mem["extra_fraction_of_activations"] = (svoo_peak - weights) / act_dense - 1.0 if act_dense > 0 else None
    row["memory"] = mem
    if own:
        del net
    return row


def run_loop(net, model: str, res: str, steps: int, dev: Device, state=None) -> float:
    """The denoising loop of the Wan pipelines on given latents and text: per step the
    conditional and the unconditional transformer call, CFG, one scheduler step. The text
    encoder and the VAE are not part of it."""
    import torch
    from diffusers import UniPCMultistepScheduler
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
                                    flow_shift=5.0 if res == "720p" else 3.0)
    sched.set_timesteps(steps, device=dev.name)
    cond, uncond = model_inputs(model, res, dev), model_inputs(model, res, dev, uncond=True)
    latents = cond["hidden_states"].float()  # the Wan pipelines keep latents in fp32
    dtype = cond["hidden_states"].dtype
    branches = MODELS[model]["branches"]
    dev.sync()
    t0 = time.perf_counter()
    with torch.no_grad(), dense_ctx(torch, dev):
        for t in sched.timesteps:
            x = latents.to(dtype)
            noise = net(hidden_states=x, timestep=t.expand(1), encoder_hidden_states=cond["encoder_hidden_states"],
                        return_dict=False)[0]
            if branches == 2:
                noise_u = net(hidden_states=x, timestep=t.expand(1),
                              encoder_hidden_states=uncond["encoder_hidden_states"], return_dict=False)[0]
                noise = noise_u + 5.0 * (noise - noise_u)
            latents = sched.step(noise.float(), t, latents, return_dict=False)[0]
    dev.sync()
    return time.perf_counter() - t0


def generation_level(model: str, res: str, pol, trow: Dict[str, Any], steps: Optional[int] = None) -> Dict[str, Any]:
    """Composes the whole denoising loop's time from the Controller's schedule and the measured
    per-call times."""
    if steps is not None and steps != pol["steps"]:
        pol = dict(pol, enable=dict(pol["enable"], num_inference_steps=steps), steps=steps)
    ctrl = make_controller(model, pol)
    branches = MODELS[model]["branches"]
    sched = policy.schedule(ctrl, ctrl.steps, ctrl.layers, branches)
    calls = {"dense": trow["dense_call_s"], "recluster": trow["recluster_call_s"], "reuse": trow["reuse_call_s"]}
    # svoo's own warm-up calls (every layer dense through svoo.diffusers), where measured; the
    # baseline is the original model's dense call at every step.
    svoo_calls = dict(calls, dense=trow.get("warmup_call_s", calls["dense"]))
    svoo_c = policy.compose(sched, svoo_calls)
    dense_total = len(sched) * calls["dense"]
    out = {"model": model, "res": res, "steps": ctrl.steps, "branches": branches, "warmup_steps": ctrl.warmup_steps,
           "dense_layers": ctrl.dense_layers, "calls": svoo_c["calls"], "svoo_seconds_by_call": svoo_c["seconds_by_call"],
           "dense_s": dense_total, "svoo_s": svoo_c["seconds"], "speedup": dense_total / svoo_c["seconds"],
           "per_call_s": calls, "svoo_per_call_s": svoo_calls,
           "composed_from": "Controller.decide schedule x measured per-call times",
           "excludes": "text encoder and VAE decode"}
    # The speed-up with free sparse attention and free clustering (what the dense warm-up,
    # dense layers and the non-attention layers alone allow).
    L, dl = trow["layers"], ctrl.dense_layers
    attn = trow.get("model_attention_per_layer_s", trow["dense_attention_call_ms"] * 1e-3)
    floor_call = trow["non_attention_s"] + dl * attn
    bound = policy.compose(sched, {"dense": svoo_calls["dense"], "recluster": floor_call, "reuse": floor_call})["seconds"]
    out["speedup_bound_free_sparse_attention"] = dense_total / bound
    if "dense_unmasked_call_s" in trow:  # HunyuanVideo: dense calls (baseline and warm-up) without the mask
        unm = dict(calls, dense=trow["dense_unmasked_call_s"])
        out["dense_unmasked_s"] = len(sched) * unm["dense"]
        # svoo's warm-up steps against the same unmasked call (its measured warm-up runs the
        # model's masked attention, so it can only be slower than that call)
        out["svoo_unmasked_dense_s"] = policy.compose(sched, dict(unm, dense=min(unm["dense"], svoo_calls["dense"])))["seconds"]
        out["speedup_vs_unmasked_dense"] = out["dense_unmasked_s"] / out["svoo_unmasked_dense_s"]
    return out, sched


def check_level(model: str, res: str, pol, trow, dev: Device, args, clock: Clock, net=None) -> Dict[str, Any]:
    """A real full denoising loop with svoo (and dense, if the budget allows), vs the composition."""
    import svoo.diffusers as sd
    per_call = {k: trow[f"{k}_call_s"] for k in ("dense", "recluster", "reuse")}
    mean_call = (per_call["dense"] + per_call["reuse"]) / 2
    steps = None
    for s in ([pol["steps"]] + [x for x in (25, 10) if x < pol["steps"]]):
        if clock.fits(1.15 * s * MODELS[model]["branches"] * (mean_call + per_call["dense"]) + 20):
            steps = s
            break
    if steps is None:
        return {"model": model, "res": res, "skipped": "budget"}
    comp, sched = generation_level(model, res, pol, trow, steps)
    own = net is None
    if own:
        net = build_model(model, dev)
    opts = dict(pol["enable"], num_inference_steps=steps)
    # warm-up as a pipeline's first generation pays it once: a 2-step loop (a reclustering and a
    # sparse step), then a fresh enable for the measured loop
    sd.enable(net, **dict(opts, num_inference_steps=2, warmup_steps=0))
    try:
        run_loop(net, model, res, 2, dev)
    finally:
        sd.disable(net)
    state = sd.enable(net, **opts)
    try:
        svoo_s = run_loop(net, model, res, steps, dev, state)
        counts = {}
        for *_, mode in state.log:
            counts[mode] = counts.get(mode, 0) + 1
        expect = {}
        for e in sched:
            for m in e["modes"]:
                expect[m] = expect.get(m, 0) + 1
    finally:
        sd.disable(net)
    out = {"model": model, "res": res, "steps": steps, "measured_svoo_s": svoo_s, "composed_svoo_s": comp["svoo_s"],
           "svoo_error": comp["svoo_s"] / svoo_s - 1.0, "log_modes": counts, "schedule_modes": expect,
           "schedule_matches_log": counts == expect}
    if clock.fits(1.15 * steps * MODELS[model]["branches"] * per_call["dense"] + 10):
        dense_s = run_loop(net, model, res, steps, dev)
        out.update(measured_dense_s=dense_s, composed_dense_s=comp["dense_s"], dense_error=comp["dense_s"] / dense_s - 1.0,
                   measured_speedup=dense_s / svoo_s, composed_speedup=comp["speedup"])
    else:
        out["dense_skipped"] = "budget"
    return out


def plan_bench_results(path: Optional[str], dev: Device, out_dir: str) -> Dict[str, Dict]:
    """svoo_cuda_plan_bench's standalone permutation / co-clustering times, by shape name."""
    if not path or not dev.cuda or not os.path.exists(path):
        return {}
    import subprocess
    js = os.path.join(out_dir, "plan_bench.json")
    try:
        subprocess.run([path, "--json", js], check=True, timeout=180, stdout=subprocess.DEVNULL)
        with open(js) as f:
            rows = json.load(f)
        os.remove(js)
        return {r["shape"]: r for r in rows}
    except Exception as e:  # the suite goes on without them
        log(f"plan bench failed: {e}")
        return {}


# ------------------------------------------------------------------------------------------- main

def estimate_call_s(model: str, res: str, tflops: float) -> float:
    """Rough time of one dense transformer call from its FLOPs (for the budget only)."""
    _, N = latent_shape(model, res)
    c = MODELS[model]
    params = {"wan1.3b": 1.42e9, "wan14b": 14.3e9, "hunyuan": 12.8e9}.get(model, 1e6)
    H, D = attn_heads(model), c["config"]["attention_head_dim"]
    flops = 2 * params * N + n_layers(model) * 4 * H * N * N * D
    return flops / (tflops * 1e12)


def env_info(torch, dev: Device) -> Dict[str, Any]:
    import svoo
    info = {"python": platform.python_version(), "torch": torch.__version__, "svoo": getattr(svoo, "__version__", None),
            "svoo_has_cuda": bool(svoo.has_cuda), "svoo_path": os.path.dirname(svoo.__file__), "device": dev.name}
    try:
        import diffusers
        info["diffusers"] = diffusers.__version__
    except ImportError:
        info["diffusers"] = None
    if dev.cuda:
        info["gpu"] = torch.cuda.get_device_name()
        info["cudnn"] = torch.backends.cudnn.version()
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
    return info


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--level", default="all", help="attention, transformer, generation or all (comma-separated)")
    ap.add_argument("--models", default="wan1.3b,wan14b", help="wan1.3b, wan14b, hunyuan (comma-separated)")
    ap.add_argument("--res", default="480p,720p", help="480p, 720p (comma-separated; 14B and HunyuanVideo: 720p only "
                                                        "unless --all-res)")
    ap.add_argument("--all-res", action="store_true", help="every model at every --res")
    ap.add_argument("--out", default="e2e-out", help="folder for e2e.json, e2e.md, e2e.svg")
    ap.add_argument("--json", action="store_true", help="also print the JSON to stdout")
    ap.add_argument("--smoke", action="store_true", help="tiny random Wan on the CPU, seconds (CI)")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--profiles", default=None, help="folder of the reference profile CSVs")
    ap.add_argument("--check", default="wan1.3b:480p", help="MODEL:RES of the real full loop check, or 'none'")
    ap.add_argument("--budget-s", type=float, default=None, help="skip stages that would end after this many seconds")
    ap.add_argument("--iters", type=int, default=5, help="timed repetitions of one attention call")
    ap.add_argument("--model-iters", type=int, default=2, help="timed repetitions of one Wan2.1-1.3B transformer call")
    ap.add_argument("--big-model-iters", type=int, default=1, help="the same for 14B and HunyuanVideo")
    ap.add_argument("--attn-layers", type=int, default=4, help="layers sampled at the attention level")
    ap.add_argument("--align-queries", type=int, default=128,
                    help="enable(align_queries=N) at the transformer and generation levels (128, enable()'s default; "
                         "0: the spec's clustering)")
    ap.add_argument("--clustering-cache", default="host", choices=["host", "device"],
                    help="enable(clustering_cache=...) at the transformer and generation levels (host, enable()'s "
                         "default: page-locked host memory, prefetched; device: every slot on the GPU)")
    ap.add_argument("--plan-bench", default=None, help="svoo_cuda_plan_bench binary (standalone permutation times)")
    args = ap.parse_args(argv)
    global ALIGN_QUERIES, CLUSTERING_CACHE
    ALIGN_QUERIES = args.align_queries
    CLUSTERING_CACHE = args.clustering_cache

    import torch
    clock = Clock(args.budget_s)
    if args.smoke:
        models, resolutions, dev_name = ["tiny"], ["tiny"], args.device or "cpu"
        args.check = "tiny:tiny" if args.check == "wan1.3b:480p" else args.check
        args.iters, args.model_iters = min(args.iters, 3), min(args.model_iters, 2)
    else:
        models = [m for m in args.models.split(",") if m]
        resolutions = [r for r in args.res.split(",") if r]
        dev_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        for m in models:
            if m not in MODELS or m == "tiny":
                raise SystemExit(f"e2e: unknown model {m!r}; known: wan1.3b, wan14b, hunyuan")
    levels = {"attention", "transformer", "generation"} if args.level == "all" else set(args.level.split(","))
    dev = Device(torch, dev_name)
    profiles = find_profiles(args.profiles, required=not args.smoke)
    os.makedirs(args.out, exist_ok=True)
    result: Dict[str, Any] = {"suite": "svoo-e2e", "version": 1, "smoke": args.smoke,
                              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                              "argv": sys.argv[1:] if argv is None else list(argv), "env": env_info(torch, dev),
                              "rule": policy.RULE_NOTE, "densities": {}, "attention": [], "transformer": [],
                              "generation": [], "checks": [], "skipped": [], "errors": [], "complete": False}
    log(f"device {dev.name} ({result['env'].get('gpu', 'cpu')}), profiles {profiles}")

    def shapes():  # HunyuanVideo last: the budget drops it first
        for m in sorted(models, key=lambda x: x == "hunyuan"):
            for r in resolutions:
                if args.smoke or args.all_res or m == "wan1.3b" or r == "720p":
                    yield m, r

    pols = {m: model_policy(m, profiles, args.smoke) for m in models}
    dens = {m: densities_for(m, pols[m]) for m in models}
    result["densities"] = dens
    tflops = 400.0 if dev.cuda else 0.05

    def guarded(what: str, cost_s: float, fn):
        if not clock.fits(cost_s):
            result["skipped"].append({"what": what, "reason": f"budget: ~{cost_s:.0f} s would end past "
                                                              f"{args.budget_s:.0f} s (at {clock.elapsed():.0f} s)"})
            log(f"skip {what} (budget)")
            return None
        log(f"{what} ...")
        try:
            return fn()
        except Exception as e:  # record it, free the GPU, go on with the next stage
            import traceback
            result["errors"].append({"what": what, "error": f"{type(e).__name__}: {e}",
                                     "trace": traceback.format_exc()[-2000:]})
            log(f"{what} failed: {type(e).__name__}: {e}")
            return None
        finally:
            gc.collect()
            if dev.cuda:
                torch.cuda.empty_cache()
            result["elapsed_s"] = clock.elapsed()
            result["dense_backend"] = DENSE_BACKEND["note"]
            result["targets"] = report.evaluate_targets(result, TARGETS)
            report.write_all(result, args.out)  # what is done so far survives a kill

    if "attention" in levels:
        pb = plan_bench_results(args.plan_bench, dev, args.out)
        for m, r in shapes():
            row = guarded(f"attention {m} {r}", 15 if dev.cuda else 5,
                          lambda: attention_level(m, r, pols[m], dens[m], dev, args, pb))
            if row:
                result["attention"].append(row)
                log(f"  cuDNN {row['dense_cudnn_ms']:.2f} ms; svoo cluster {row['cocluster_ms']:.2f} + select "
                    f"{row['select_ms']:.2f} + attention {row['attention_ms']:.2f} ms at {row['kept_fraction']:.3f}")
    check = tuple(args.check.split(":")) if args.check != "none" else None
    if levels & {"transformer", "generation"}:
        for m, r in shapes():
            iters = args.model_iters if m in ("wan1.3b", "tiny") else args.big_model_iters
            # dense, attention-free (HunyuanVideo: and unmasked dense), recluster, reuse, svoo warm-up calls
            calls = 6 if MODELS[m]["kind"] == "hunyuan" else 5
            est = estimate_call_s(m, r, tflops) * calls * (iters + 1) + (60 if m != "wan1.3b" else 10)
            net = None
            if check == (m, r) and "generation" in levels:  # one model for both: the check runs warm
                net = guarded(f"build {m}", 60, lambda: build_model(m, dev))
            row = guarded(f"transformer {m} {r}", est if dev.cuda else 5,
                          lambda: transformer_level(m, r, pols[m], dens[m], dev, args, net=net))
            if not row:
                net = None
                continue
            result["transformer"].append(row)
            _, N = latent_shape(m, r)
            fl = 2 * row["params"] * N + n_layers(m) * 4 * attn_heads(m) * N * N * MODELS[m]["config"]["attention_head_dim"]
            tflops = fl / row["dense_call_s"] / 1e12
            log(f"  dense {row['dense_call_s']:.3f} s, svoo warm-up {row['warmup_call_s']:.3f} s, recluster {row['recluster_call_s']:.3f} s, "
                f"sparse {row['reuse_call_s']:.3f} s ({row['speedup_sparse_call']:.2f}x); svoo path active: "
                f"{row['sparse_path_active']}; non-attention {row['non_attention_s']:.3f} s "
                f"({row['non_attention_source'].split(':')[0]})" +
                (f"; dense unmasked {row['dense_unmasked_call_s']:.3f} s" if "dense_unmasked_call_s" in row else ""))
            if not row["sparse_path_active"]:
                log(f"  WARNING: svoo ran dense at sparse steps (CUDA path not wired?): modes {row['reuse_modes']}")
            if "generation" not in levels:
                continue
            g, _ = generation_level(m, r, pols[m], row)
            result["generation"].append(g)
            log(f"generation {m} {r}: dense {g['dense_s']:.1f} s, svoo {g['svoo_s']:.1f} s, {g['speedup']:.2f}x")
            if check == (m, r):
                c = guarded(f"check {m} {r} full loop", 0,
                            lambda: check_level(m, r, pols[m], row, dev, args, clock, net=net))
                if c:
                    result["checks"].append(c)
                    if "skipped" in c:
                        result["skipped"].append({"what": f"check {m} {r}", "reason": c["skipped"]})
                    else:
                        log(f"  check: measured svoo {c['measured_svoo_s']:.2f} s vs composed {c['composed_svoo_s']:.2f} s "
                            f"({100 * c['svoo_error']:+.1f} %)")
            net = None
            gc.collect()
            if dev.cuda:
                torch.cuda.empty_cache()
        if check and "generation" in levels and not result["checks"]:
            result["skipped"].append({"what": f"check {args.check}", "reason": "that shape was not measured"})
    result["targets"] = report.evaluate_targets(result, TARGETS)
    result["elapsed_s"] = clock.elapsed()
    result["dense_backend"] = DENSE_BACKEND["note"]
    result["complete"] = True
    paths = report.write_all(result, args.out)
    log(f"wrote {', '.join(paths)} in {clock.elapsed():.0f} s")
    if args.json:
        print(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
