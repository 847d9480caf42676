#!/usr/bin/env python3
"""GPU checks of svoo.torch and svoo.diffusers (run on a CUDA machine, e.g. an H100; pytest does
not collect this file). Prints PASS/FAIL per check with its numbers and exits non-zero on any
failure.

    python python/tests/gpu/check_cuda.py [--skip-wan] [--json results.json]

Checks: the custom ops against the C++ CPU reference (small shapes) and an fp32 torch reference
(larger ones); device-side clustering save/load (the reuse path); torch.compile(fullgraph=True);
CUDA-graph capture and replay; a side stream; `svoo.diffusers.enable` with every cluster kept
against the original model (Wan and HunyuanVideo, tiny random weights, bf16, head_dim 128);
warm-up and dense layers running dense; and a random-weight WanTransformer3DModel with the
Wan2.1-T2V-1.3B config at 480p x 81 frames (32,760 tokens) running one denoising step (both CFG
branches) through `enable`, compared with the same step computed by the svoo.torch ops directly,
and the same step under torch.compile and captured as CUDA graphs (recluster and reuse steps,
named with svoo.diffusers.set_step) against eager.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F

import svoo
import svoo.torch as st

RESULTS = []


def report(name: str, ok: bool, **numbers) -> bool:
    nums = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items())
    print(f"{'PASS' if ok else 'FAIL'} {name}: {nums}", flush=True)
    RESULTS.append({"check": name, "pass": bool(ok), **{k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                                                        for k, v in numbers.items()}})
    return ok


def guarded(fn):
    def run(*args, **kwargs):
        try:
            fn(*args, **kwargs)
        except Exception as e:  # a crash is a failed check, the others still run
            traceback.print_exc()
            report(fn.__name__, False, error=f"{type(e).__name__}: {e}"[:300])
    return run


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def randn(*shape, seed=0, dtype=torch.bfloat16, scale=1.0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn(*shape, generator=g, device="cuda") * scale).to(dtype)


def masked_reference(q, k, v, ql, kl, keep):
    """fp32 attention of each head under the plan's mask (rows with no key give 0)."""
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    for h in range(q.shape[0]):
        s = (q[h].float() @ k[h].float().T) * q.shape[-1] ** -0.5
        mask = keep[h].bool()[ql[h].long()][:, kl[h].long()]
        p = s.masked_fill(~mask, float("-inf")).softmax(-1).nan_to_num(0.0)
        out[h] = p @ v[h].float()
    return out


def block_density(ql, kl, keep):
    heads, kq, kk = keep.shape
    sq = torch.stack([torch.bincount(ql[h].long(), minlength=kq) for h in range(heads)]).double()
    sk = torch.stack([torch.bincount(kl[h].long(), minlength=kk) for h in range(heads)]).double()
    return ((sq[:, :, None] * sk[:, None, :] * keep.double()).sum() / (heads * ql.shape[1] * kl.shape[1])).item()


@guarded
def ops_vs_cpu_reference():
    ok = True
    for heads, nq, nk, kq, kk, dtype in [(2, 300, 300, 8, 16, torch.bfloat16), (3, 1000, 777, 16, 64, torch.float16),
                                         (1, 257, 1500, 4, 32, torch.bfloat16)]:
        q, k, v = (randn(heads, n, 128, seed=s, dtype=dtype, scale=1.5) for s, n in ((1, nq), (2, nk), (3, nk)))
        prof = torch.full((heads,), 0.15, dtype=torch.float64, device="cuda")
        ql, kl, keep = st.plan(q, k, prof, kq=kq, kk=kk, top_p=0.7, floor_lo=0.1, floor_hi=0.2)
        cq, ck, cv = (x.cpu() for x in (q, k, v))
        cql, ckl, ckeep = st.plan(cq.float(), ck.float(), prof.cpu(), kq=kq, kk=kk, top_p=0.7, floor_lo=0.1,
                                  floor_hi=0.2)
        agree_q = (ql.cpu() == cql).double().mean().item()
        agree_k = (kl.cpu() == ckl).double().mean().item()
        gpu = st.sparse_attention(q, k, v, ql, kl, keep)
        cpu = st.sparse_attention(cq.float(), ck.float(), cv.float(), ql.cpu(), kl.cpu(), keep.cpu())
        dense_gpu = st.dense_attention(q, k, v)
        dense_cpu = st.dense_attention(cq.float(), ck.float(), cv.float())
        all_kept = st.sparse_attention(q, k, v, ql, kl, torch.ones_like(keep))
        e_sparse, e_dense, e_all = rel(gpu.cpu(), cpu), rel(dense_gpu.cpu(), dense_cpu), rel(all_kept, dense_gpu)
        # The label agreement with the CPU plan is reported, not checked: the GPU assignment runs on
        # bf16/f16-rounded projected centroids, so near-ties flip and the flips compound over the
        # iterations on random data (the planner's labels are checked against the spec formula step
        # by step in tests/gpu/gpu_check.cpp). What is checked here: the kernels on the same plan.
        good = e_sparse < 5e-3 and e_dense < 5e-3 and e_all < 2e-3
        ok &= report(f"ops_vs_cpu_reference[{heads}x{nq}x{nk} kq{kq} kk{kk} {str(dtype)[6:]}]", good,
                     rel_sparse_vs_cpu=e_sparse, rel_dense_vs_cpu=e_dense, rel_keepall_vs_dense=e_all,
                     q_label_agreement_with_cpu_plan=agree_q, k_label_agreement=agree_k,
                     block_density=block_density(ql, kl, keep))
    return ok


@guarded
def ops_vs_fp32_torch():
    heads, n, kq, kk = 4, 8192, 64, 256
    q, k, v = (randn(heads, n, 128, seed=10 + s) for s in range(3))
    prof = torch.tensor([0.05, 0.1, 0.15, 0.2], dtype=torch.float64, device="cuda")
    ql, kl, keep = st.plan(q, k, prof, kq=kq, kk=kk, top_p=0.9, floor_lo=0.0, floor_hi=1.0)
    out = st.sparse_attention(q, k, v, ql, kl, keep)
    ref = masked_reference(q, k, v, ql, kl, keep)
    dense = st.dense_attention(q, k, v)
    dref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    e_s, e_d = rel(out, ref), rel(dense, dref)
    report(f"ops_vs_fp32_torch[{heads}x{n} kq{kq} kk{kk}]", e_s < 1e-2 and e_d < 1e-2, rel_sparse=e_s, rel_dense=e_d,
           block_density=block_density(ql, kl, keep), finite=bool(torch.isfinite(out).all()))


@guarded
def plan_align_queries():
    """st.plan(align=128) on the GPU: fewer empty rows in 128-row items, keys untouched, and the
    sparse output right for its mask."""
    heads, n, kq, kk = 4, 20000, 64, 256
    q, k, v = (randn(heads, n, 128, seed=30 + s) for s in range(3))
    prof = torch.full((heads,), 0.15, dtype=torch.float64, device="cuda")
    plain = st.plan(q, k, prof, kq=kq, kk=kk)
    ql, kl, keep = st.plan(q, k, prof, kq=kq, kk=kk, align=128)

    def empty(labels):
        sizes = torch.stack([torch.bincount(labels[h].long(), minlength=kq) for h in range(heads)])
        return ((128 - sizes % 128) % 128).sum().item() / labels.numel()

    moved = (ql != plain[0]).double().mean().item()
    out = st.sparse_attention(q, k, v, ql, kl, keep)
    e = rel(out[:, :2048], masked_reference(q[:, :2048], k, v, ql[:, :2048], kl, keep))  # the first 2048 rows
    report(f"plan_align_queries[{heads}x{n} kq{kq} kk{kk}]",
           empty(ql) < empty(plain[0]) / 2 and 0 < moved < 0.2 and torch.equal(kl, plain[1]) and e < 1e-2,
           empty_rows_plain=empty(plain[0]), empty_rows_aligned=empty(ql), rows_moved=moved, rel_sparse=e)


@guarded
def clustering_save_load():
    heads, n, kq, kk = 2, 2000, 16, 64
    q1, k1, v1, q2, k2 = (randn(heads, n, 128, seed=20 + s) for s in range(5))
    prof = torch.full((heads,), 0.15, dtype=torch.float64, device="cuda")
    p = st.planner("cuda", heads, n, n, kq, kk)
    s = torch.cuda.current_stream().cuda_stream
    buf = torch.empty(p.clustering_bytes, dtype=torch.uint8, device="cuda")
    lab = lambda: (torch.empty(heads, n, dtype=torch.int32, device="cuda"), torch.empty(heads, n, dtype=torch.int32,
                   device="cuda"), torch.empty(heads, kq, kk, dtype=torch.uint8, device="cuda"))
    p.cluster(q1, k1, 2, 0, "coclustering", s)
    p.save_clustering(buf, s)
    p.select_device(0.9, 0.15, 0.2, None, "released", prof, s)
    a = lab()
    p.copy_plan(*a, s)
    out_a = torch.empty_like(q1)
    p.sparse_attention(q1, k1, v1, out_a, s)
    p.cluster(q2, k2, 2, 0, "coclustering", s)  # another clustering in the workspace
    p.load_clustering(buf, s)                    # back to the first
    p.select_device(0.9, 0.15, 0.2, None, "released", prof, s)
    b = lab()
    p.copy_plan(*b, s)
    out_b = torch.empty_like(q1)
    p.sparse_attention(q1, k1, v1, out_b, s)
    same = all(torch.equal(x, y) for x, y in zip(a, b)) and torch.equal(out_a, out_b)
    via_ops = st.sparse_attention(q1, k1, v1, *a)  # the layout rebuilt from labels gives the same output
    # the same through page-locked host memory (the default clustering cache of svoo.diffusers)
    host = torch.empty(p.clustering_bytes, dtype=torch.uint8, pin_memory=True)
    p.cluster(q1, k1, 2, 0, "coclustering", s)
    p.save_clustering(host, s)
    p.cluster(q2, k2, 2, 0, "coclustering", s)
    p.load_clustering(host, s)
    p.select_device(0.9, 0.15, 0.2, None, "released", prof, s)
    c = lab()
    p.copy_plan(*c, s)
    torch.cuda.synchronize()
    via_host = all(torch.equal(x, y) for x, y in zip(a, c)) and torch.equal(host.cuda(), buf)
    refusal = ""
    try:  # pageable host memory is refused by name
        p.save_clustering(torch.empty(p.clustering_bytes, dtype=torch.uint8), s)
    except Exception as e:  # noqa: BLE001 (the message is what is checked)
        refusal = str(e)
    refused = "pageable" in refusal
    report("clustering_save_load_and_load_plan", same and torch.equal(via_ops, out_a) and via_host and refused,
           bytes=p.clustering_bytes, identical_after_reload=same, ops_bitwise_equal=torch.equal(via_ops, out_a),
           identical_through_pinned_host=via_host, pageable_refused=refused)


def _step(q, k, v, prof):
    ql, kl, keep = st.plan(q, k, prof, kq=16, kk=64)
    return st.sparse_attention(q * 1.0, k, v, ql, kl, keep) + st.dense_attention(q, k, v)


@guarded
def torch_compile_fullgraph():
    q, k, v = (randn(4, 1500, 128, seed=30 + s) for s in range(3))
    prof = torch.full((4,), 0.15, dtype=torch.float64, device="cuda")
    eager = _step(q, k, v, prof)
    compiled = torch.compile(_step, fullgraph=True)
    t0 = time.perf_counter()
    out = compiled(q, k, v, prof)
    t1 = time.perf_counter()
    report("torch_compile_fullgraph_inductor", rel(out, eager) < 1e-3, rel_vs_eager=rel(out, eager),
           compile_s=t1 - t0)


@guarded
def cuda_graph_and_streams():
    heads, n = 4, 4096
    q, k, v = (randn(heads, n, 128, seed=40 + s) for s in range(3))
    prof = torch.full((heads,), 0.15, dtype=torch.float64, device="cuda")
    sq, sk, sv = q.clone(), k.clone(), v.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm-up builds the planners (their only allocation) outside the capture
            _step(sq, sk, sv, prof)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        gout = _step(sq, sk, sv, prof)
    results = {}
    for seed in (41, 42):
        nq, nk, nv = (randn(heads, n, 128, seed=seed * 10 + s) for s in range(3))
        sq.copy_(nq), sk.copy_(nk), sv.copy_(nv)
        graph.replay()
        eager = _step(nq, nk, nv, prof)
        results[seed] = (gout - eager).abs().max().item()
    with torch.cuda.stream(side):  # the ops follow torch's current stream
        on_side = _step(q, k, v, prof)
    torch.cuda.current_stream().wait_stream(side)
    d_side = (on_side - _step(q, k, v, prof)).abs().max().item()
    report("cuda_graph_replay_equals_eager", max(results.values()) == 0.0 and d_side == 0.0,
           max_abs_diff_replay1=results[41], max_abs_diff_replay2=results[42], side_stream_max_abs_diff=d_side)


@guarded
def gpu_tau_density_and_profile():
    """The GPU density kernel from Python against the CPU one on the same rows, and
    svoo.diffusers.profile measuring a CUDA model on the GPU."""
    import svoo.diffusers as sd
    from svoo import _svoo
    q, k = randn(3, 3000, 128, seed=60, scale=1.5), randn(3, 3000, 128, seed=61, scale=1.5)
    stream = torch.cuda.current_stream().cuda_stream
    worst = 0.0
    for rows, tau in ((0, 0.95), (256, 0.9)):
        gpu = _svoo.cuda_tau_density(svoo.torch._dl(q), svoo.torch._dl(k), tau, rows, 3, stream)
        cpu = svoo.tau_density(q.float().cpu(), k.float().cpu(), tau=tau, rows=rows, seed=3)
        worst = max(worst, max(abs(a - b) for a, b in zip(gpu, cpu)))
    model, x = tiny_wan(), wan_inputs()

    class Pipe:  # the smallest pipeline profile() drives: two denoising steps, one branch
        transformer = model

        def __call__(self, prompt, generator, **kw):
            for t in (900, 800):
                run(model, x, t)

    import tempfile
    with tempfile.TemporaryDirectory() as d:
        out = sd.profile(Pipe(), prompts=["a"], seeds=[0], out=os.path.join(d, "p.csv"), rows=0)
        with open(out + ".json") as f:
            side = json.load(f)
        prof = svoo.load_profile(out)
        n = sum(1 for _ in open(out)) - 1
    ok = worst < 3e-3 and side["gpu_measurements"] == 4 and n == 2 * 2 * 2
    report("gpu_tau_density_vs_cpu_and_profile_on_gpu", ok, max_abs_density_diff=worst,
           gpu_measurements=side["gpu_measurements"], profile_entries=n, profile_steps=getattr(prof, "steps", "-"))


def tiny_wan(layers=2):
    from diffusers import WanTransformer3DModel
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=16,
                                  out_channels=16, text_dim=64, freq_dim=256, ffn_dim=512, num_layers=layers,
                                  rope_max_seq_len=1024)
    return m.to(torch.bfloat16).eval()


def wan_inputs(frames=3, h=16, w=16, text=12, text_dim=64, seed=1):
    return dict(hidden_states=randn(1, 16, frames, h, w, seed=seed), encoder_hidden_states=randn(1, text, text_dim,
                                                                                                seed=seed + 1))


def run(model, x, t):
    with torch.no_grad():
        return model(timestep=torch.tensor([t], device="cuda"), return_dict=False, **x)[0]


@guarded
def enable_keep_all_equals_dense():
    import svoo.diffusers as sd
    model, x = tiny_wan(), wan_inputs()
    ref = run(model, x, 900)
    state = sd.enable(model, num_inference_steps=4, warmup_steps=0, kq=8, kk=16, top_p=1.0, floor_lo=1.0,
                      floor_hi=1.0)
    out = run(model, x, 900)
    modes = {m for *_, m in state.log}
    e = rel(out, ref)
    slots = list(state.clusterings.entries.values())
    # the default cache: page-locked host buffers, none on the device
    pinned = len(slots) > 0 and all(not v[1].is_cuda and v[1].is_pinned() for v in slots)
    sd.disable(model)
    report("enable_wan_keep_all_equals_dense", modes == {"recluster"} and e < 2e-2 and pinned, rel_vs_original=e,
           modes=",".join(sorted(modes)), cache_slots_pinned_host=pinned, tokens=3 * 8 * 8)


@guarded
def warmup_and_dense_layers_run_dense():
    import svoo.diffusers as sd
    model, x = tiny_wan(layers=3), wan_inputs()
    refs = [run(model, x, t) for t in (900, 800, 700)]
    state = sd.enable(model, num_inference_steps=4, warmup_steps=1, dense_layers=1, kq=8, kk=16)
    outs = [run(model, x, t) for t in (900, 800, 700)]
    sd.disable(model)
    modes = {(s, layer): m for s, b, e, layer, m in state.log}
    want = {(1, 0): "dense", (1, 1): "dense", (1, 2): "dense", (2, 0): "dense", (2, 1): "recluster",
            (2, 2): "recluster", (3, 0): "dense", (3, 1): "reuse", (3, 2): "reuse"}
    e_warm = rel(outs[0], refs[0])
    e_sparse = rel(outs[1], refs[1])
    # On compute capability 9.0 the dense calls run svoo's dense kernel, elsewhere torch's SDPA.
    probe = torch.empty(1, 1, 2, 128, device="cuda", dtype=torch.bfloat16)
    on_svoo = state.dense_on_svoo(probe)
    route_ok = on_svoo == (torch.cuda.get_device_capability() == (9, 0))
    ok = modes == want and e_warm < 1e-2 and 0 < e_sparse < 0.5 and torch.isfinite(outs[2]).all().item() and route_ok
    report("warmup_and_dense_layers_run_dense", ok, warmup_rel_vs_original=e_warm, sparse_step_rel=e_sparse,
           schedule_as_expected=modes == want, dense_calls_on_svoo_kernel=on_svoo)


@guarded
def enable_hunyuan_keep_all():
    import svoo.diffusers as sd
    from diffusers import HunyuanVideoTransformer3DModel
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = HunyuanVideoTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2,
                                               attention_head_dim=128, num_layers=1, num_single_layers=2,
                                               num_refiner_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1,
                                               qk_norm="rms_norm", guidance_embeds=True, text_embed_dim=64,
                                               pooled_projection_dim=32, rope_axes_dim=(16, 56, 56))
    model = model.to(torch.bfloat16).eval()
    mask = torch.tensor([[1] * 10 + [0] * 6], device="cuda")
    x = dict(hidden_states=randn(1, 4, 3, 16, 16, seed=5), encoder_hidden_states=randn(1, 16, 64, seed=6),
             encoder_attention_mask=mask, pooled_projections=randn(1, 32, seed=7),
             guidance=torch.tensor([3.5], device="cuda"))
    ref = run(model, x, 900)
    state = sd.enable(model, preset="hunyuan-t2v", num_inference_steps=4, warmup_steps=0, dense_layers=0, kq=8,
                      kk=16, top_p=1.0, floor_lo=1.0, floor_hi=1.0)
    out = run(model, x, 900)
    modes = {m for *_, m in state.log}
    sd.disable(model)
    sd.enable(model, preset="hunyuan-t2v", num_inference_steps=4, warmup_steps=0, dense_layers=0, kq=8, kk=16)
    sparse = run(model, x, 900)
    sd.disable(model)
    e, e_sparse = rel(out, ref), rel(sparse, ref)
    report("enable_hunyuan_keep_all_equals_dense", modes == {"recluster"} and e < 2e-2 and 0 < e_sparse < 0.5,
           rel_vs_original=e, sparse_rel=e_sparse)


class OpsProcessor:
    """Wan self-attention computed with the svoo.torch ops directly (plan + sparse_attention)."""

    def __init__(self, layer, controller, opts, step):
        self.layer, self.controller, self.opts, self.step = layer, controller, opts, step

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        import svoo.diffusers as sd
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))
        if rotary_emb is not None:
            query, key = sd._apply_rotary(query, *rotary_emb), sd._apply_rotary(key, *rotary_emb)
        mode, density = self.controller.decide(self.step, self.layer, 0, 0, None)
        assert mode == "recluster", mode
        prof = torch.tensor(density, dtype=torch.float64, device=query.device)
        o = self.opts
        outs = []
        for b in range(query.shape[0]):
            q, k, v = (x[b].transpose(0, 1) for x in (query, key, value))
            ql, kl, keep = st.plan(q, k, prof, o["kq"], o["kk"], o["iterations"], o["seed"], o["top_p"], o["floor_lo"],
                                   o["floor_hi"], o["align"])  # enable()'s query alignment (128 by default)
            outs.append(st.sparse_attention(q, k, v, ql, kl, keep).transpose(0, 1))
        out = torch.stack(outs).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def timed(fn, *args):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn(*args)
    torch.cuda.synchronize()
    return out, (time.perf_counter() - t0) * 1e3


@guarded
def wan_1_3b_480p_step():
    import svoo.diffusers as sd
    from diffusers import WanTransformer3DModel
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device("cuda"):
        model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128,
                                      in_channels=16, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960,
                                      num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
                                      rope_max_seq_len=1024)
    model = model.to(torch.bfloat16).eval()
    print(f"  Wan2.1-1.3B config built in {time.perf_counter() - t0:.1f} s, "
          f"{sum(p.numel() for p in model.parameters()) / 1e9:.3f} B parameters", flush=True)
    cond = dict(hidden_states=randn(1, 16, 21, 60, 104, seed=50), encoder_hidden_states=randn(1, 512, 4096, seed=51))
    uncond = dict(cond, encoder_hidden_states=torch.zeros_like(cond["encoder_hidden_states"]))
    run(model, cond, 999)  # warm-up of torch's kernels
    dense, t_dense = timed(run, model, cond, 999)
    state = sd.enable(model, preset="wan2.1-t2v-1.3b", num_inference_steps=50, warmup_steps=0)
    svoo_cond, t_first = timed(run, model, cond, 999)       # step 1, conditional: recluster (builds the planner)
    svoo_uncond, t_uncond = timed(run, model, uncond, 999)  # step 1, unconditional branch: recluster, own cache
    reuse_host = {}
    for t in (979, 959):  # steps 2 and 3: reuse of the step-1 clustering (from step 3 on, each slot prefetched)
        for name, x in (("cond", cond), ("uncond", uncond)):
            reuse_host[(t, name)] = timed(run, model, x, t)
    t_reuse = min(reuse_host[(959, "cond")][1], reuse_host[(959, "uncond")][1])
    host_slots = list(state.clusterings.entries.values())
    cache_host_mb, cache_dev_host_mode = state.clusterings.host_bytes() / 2**20, state.clusterings.device_bytes()
    modes = {}
    for s, b, e, layer, m in state.log:
        modes.setdefault((s, b), set()).add(m)
    opts = dict(state.options["gpu"])
    controller = state.controller
    sd.disable(model)
    # The same calls with every slot on the device: bitwise the same outputs
    state_dev = sd.enable(model, preset="wan2.1-t2v-1.3b", num_inference_steps=50, warmup_steps=0,
                          clustering_cache="device")
    dev_cond, dev_uncond = run(model, cond, 999), run(model, uncond, 999)
    reuse_dev = {}
    for t in (979, 959):
        for name, x in (("cond", cond), ("uncond", uncond)):
            reuse_dev[(t, name)] = timed(run, model, x, t)
    t_reuse_dev = min(reuse_dev[(959, "cond")][1], reuse_dev[(959, "uncond")][1])
    cache_dev_mb = state_dev.clusterings.device_bytes() / 2**20
    sd.disable(model)
    host_equals_device = (torch.equal(dev_cond, svoo_cond) and torch.equal(dev_uncond, svoo_uncond) and
                          all(torch.equal(reuse_dev[key][0], reuse_host[key][0]) for key in reuse_host))
    for layer, block in enumerate(model.blocks):
        block.attn1.set_processor(OpsProcessor(layer, controller, opts, step=1))
    ops_cond, t_ops = timed(run, model, cond, 999)
    ops_uncond = run(model, uncond, 999)
    bitwise = torch.equal(ops_cond, svoo_cond) and torch.equal(ops_uncond, svoo_uncond)
    e_ops = max(rel(svoo_cond, ops_cond), rel(svoo_uncond, ops_uncond))
    schedule_ok = modes == {(1, 0): {"recluster"}, (1, 1): {"recluster"}, (2, 0): {"reuse"}, (2, 1): {"reuse"},
                            (3, 0): {"reuse"}, (3, 1): {"reuse"}}
    pinned = len(host_slots) == 60 and all(v[1].is_pinned() for v in host_slots) and cache_dev_host_mode == 0
    ok = e_ops < 1e-3 and schedule_ok and torch.isfinite(svoo_cond).all().item() and host_equals_device and pinned
    report("wan2.1_1.3b_480p_81f_step_enable_vs_ops", ok, tokens=21 * 30 * 52, rel_enable_vs_ops=e_ops,
           bitwise_equal=bitwise, rel_sparse_vs_dense_model=rel(svoo_cond, dense), schedule_ok=schedule_ok,
           dense_forward_ms=t_dense, svoo_first_forward_ms=t_first, svoo_recluster_forward_ms=t_uncond,
           svoo_reuse_forward_ms=t_reuse, svoo_reuse_forward_ms_device_cache=t_reuse_dev, ops_forward_ms=t_ops,
           host_cache_bitwise_equal_device_cache=host_equals_device, cache_slots=len(host_slots),
           host_cache_slots_pinned=pinned, host_cache_mb=cache_host_mb, device_cache_mb=cache_dev_mb)
    wan_step_compiled_and_graphed(model, cond)


def _static_run(model, x, timestep):
    with torch.no_grad():
        return model(timestep=timestep, return_dict=False, **x)[0]


@guarded
def wan_step_compiled_and_graphed(model, cond):
    """The whole Wan2.1-1.3B 480p denoising step through `enable`, as eager, under torch.compile
    and as CUDA graphs (one per kind of step: recluster and reuse; svoo.diffusers.set_step
    names the step, since a captured step cannot read its CUDA timestep)."""
    import svoo.diffusers as sd
    sd.enable(model, preset="wan2.1-t2v-1.3b", num_inference_steps=50, warmup_steps=0, reuse_interval=20)
    x = {k: v.clone() for k, v in cond.items()}  # static inputs for the graphs
    ts = torch.tensor([999], device="cuda")
    eager = {}
    for step in (1, 2):  # 1: recluster, 2: reuse of step 1's clustering
        sd.set_step(model, step)
        eager[step], _ = timed(_static_run, model, x, ts)
    sd.set_step(model, 2)
    _, t_eager_reuse = timed(_static_run, model, x, ts)
    # torch.compile: the svoo processors are opaque to dynamo (graph breaks around them); the rest is inductor's
    compiled = torch.compile(model)
    t0 = time.perf_counter()
    sd.set_step(model, 1)
    c1 = _static_run(compiled, x, ts)
    sd.set_step(model, 2)
    c2 = _static_run(compiled, x, ts)
    torch.cuda.synchronize()
    t_compile = time.perf_counter() - t0
    sd.set_step(model, 2)
    _, t_compiled_reuse = timed(_static_run, compiled, x, ts)
    e_compile = max(rel(c1, eager[1]), rel(c2, eager[2]))
    # CUDA graphs of the eager model: warm up on a side stream, capture, replay
    graphs, outs = {}, {}
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for step in (1, 2):
            sd.set_step(model, step)
            _static_run(model, x, ts)
    torch.cuda.current_stream().wait_stream(side)
    for step in (1, 2):
        graphs[step] = torch.cuda.CUDAGraph()
        sd.set_step(model, step)
        with torch.cuda.graph(graphs[step]):
            outs[step] = _static_run(model, x, ts)
    graphs[1].replay()
    g1 = outs[1].clone()
    graphs[2].replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    graphs[2].replay()
    torch.cuda.synchronize()
    t_graph_reuse = (time.perf_counter() - t0) * 1e3
    e_graph = max(rel(g1, eager[1]), rel(outs[2], eager[2]))
    refusal = ""
    sd.set_step(model, None)  # capturing while the step is learned from the CUDA timestep must refuse clearly
    try:
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            _static_run(model, x, ts)
    except Exception as e:  # noqa: BLE001 (the message is what is checked)
        refusal = str(e)
    refused = "set_step" in refusal
    sd.disable(model)
    ok = e_compile < 2e-2 and e_graph < 1e-3 and refused and torch.isfinite(g1).all().item()
    report("wan2.1_1.3b_480p_step_compile_and_cuda_graph", ok, rel_compiled_vs_eager=e_compile,
           rel_graph_vs_eager=e_graph, capture_without_set_step_refused=refused, compile_s=t_compile,
           eager_reuse_forward_ms=t_eager_reuse, compiled_reuse_forward_ms=t_compiled_reuse,
           graph_reuse_replay_ms=t_graph_reuse)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-wan", action="store_true", help="skip the Wan2.1-1.3B 480p step")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if not torch.cuda.is_available() or not svoo.has_cuda:
        print(f"FAIL setup: CUDA available {torch.cuda.is_available()}, svoo CUDA backend {svoo.has_cuda}")
        return 2
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, svoo {svoo.__file__}", flush=True)
    try:
        import diffusers
        print(f"diffusers {diffusers.__version__}")
    except ImportError:
        diffusers = None
        report("diffusers_import", False, error="diffusers is not installed: the enable checks cannot run")
    ops_vs_cpu_reference()
    ops_vs_fp32_torch()
    plan_align_queries()
    clustering_save_load()
    torch_compile_fullgraph()
    cuda_graph_and_streams()
    if diffusers is not None:
        enable_keep_all_equals_dense()
        warmup_and_dense_layers_run_dense()
        enable_hunyuan_keep_all()
        gpu_tau_density_and_profile()
        if not args.skip_wan:
            wan_1_3b_480p_step()
    failed = [r["check"] for r in RESULTS if not r["pass"]]
    print(f"{len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": RESULTS}, f,
                      indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
