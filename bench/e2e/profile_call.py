#!/usr/bin/env python3
"""Where one transformer call's GPU time goes: the dense call (cuDNN attention) and svoo's sparse
(reuse) call of bench/e2e/run.py's models, each under torch.profiler, with the kernels grouped
(svoo's attention, svoo's planning, cuDNN attention, everything else) and every sparse layer's
measured token density (kept query-key pairs / all pairs, from the plan's labels and keep), which
is what the sparse attention's time follows (the policy counts kept key clusters, not tokens).

    python3 bench/e2e/profile_call.py --model wan1.3b --res 720p --out DIR

Writes DIR/profile_<model>_<res>.json and prints the top kernels of both calls. Needs a CUDA
build of svoo, diffusers and the reference profiles (as run.py).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as e2e  # noqa: E402  (the suite's model, input and policy helpers)
from plan_density import measure_token_density  # noqa: E402

GROUPS = (  # first match wins; names as the profiler reports kernels
    ("svoo attention", ("attention_hopper", "attention_kernel", "sparse_attention")),
    ("svoo planning", ("select", "ranges_kernel", "tiles_kernel", "softmax", "gemm_kernel", "labels_from",
                       "svoo::cuda", "cub::")),
    ("cuDNN attention", ("cudnn", "fmha", "flash")),
)


def group_of(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS:
        if any(k.lower() in low for k in keys):
            return group
    return "other"


def profile(torch, fn, iters: int = 2):
    from torch.profiler import ProfilerActivity, profile as tprofile
    fn()
    torch.cuda.synchronize()
    with tprofile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    kernels = {}
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", None)
        if t is None:
            t = getattr(e, "self_cuda_time_total", 0.0)
        if t and t > 0:
            kernels[e.key] = {"ms_per_call": t / 1e3 / iters, "count_per_call": e.count / iters}
    groups = {}
    for name, k in kernels.items():
        g = group_of(name)
        groups[g] = groups.get(g, 0.0) + k["ms_per_call"]
    return kernels, groups


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="wan1.3b", choices=["wan1.3b", "wan14b"],
                    help="a Wan model (HunyuanVideo's joint attention plans video and text tokens together)")
    ap.add_argument("--res", default="720p", choices=["480p", "720p"])
    ap.add_argument("--out", default="e2e-out")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    import torch
    import svoo
    import svoo.diffusers as sd
    if not torch.cuda.is_available() or not svoo.has_cuda:
        raise SystemExit("profile_call.py needs a CUDA device and a CUDA build of svoo")
    dev = e2e.Device(torch, "cuda")
    profiles = e2e.find_profiles(None)
    pol = e2e.model_policy(args.model, profiles, False)
    dens = e2e.densities_for(args.model, pol)
    net = e2e.build_model(args.model, dev)
    inp = e2e.model_inputs(args.model, args.res, dev)
    result = {"model": args.model, "res": args.res, "gpu": torch.cuda.get_device_name(),
              "reuse_step": dens["reuse_step"], "recluster_step": dens["recluster_step"]}
    with e2e.dense_ctx(torch, dev):
        result["dense_kernels"], result["dense_groups"] = profile(
            torch, lambda: e2e.forward(net, inp, 999.0, dev))
    state = sd.enable(net, **pol["enable"])
    try:
        def reuse():
            e2e.goto_step(state, dens["reuse_step"])
            e2e.forward(net, inp, 400.0, dev)
        with e2e.dense_ctx(torch, dev):
            e2e.goto_step(state, dens["recluster_step"])
            e2e.forward(net, inp, 500.0, dev)  # fills the clustering cache the reuse step reads
            result["sparse_kernels"], result["sparse_groups"] = profile(torch, reuse)
            with measure_token_density(torch) as m:  # every sparse layer's plan, outside the profiled calls
                reuse()
        result["token_density"] = m.summary()
        result["kept_fraction_reuse_step"] = dens["per_step"][dens["reuse_step"] - 1]["kept_fraction_sparse_layers"]
    finally:
        sd.disable(net)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"profile_{args.model}_{args.res}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    for which in ("dense", "sparse"):
        print(f"== {which} call: GPU ms per call by group:",
              ", ".join(f"{g} {v:.1f}" for g, v in sorted(result[f"{which}_groups"].items(), key=lambda x: -x[1])))
        top = sorted(result[f"{which}_kernels"].items(), key=lambda x: -x[1]["ms_per_call"])[:args.top]
        for name, k in top:
            print(f"  {k['ms_per_call']:9.2f} ms  x{k['count_per_call']:6.0f}  {name[:110]}")
    td = result["token_density"]
    if td is None:  # every layer ran dense at the reuse step (no plan to measure)
        print("reuse step: no sparse layer ran, no token density")
        print(f"wrote {path}")
        return 0
    print(f"reuse step, {len(td['per_layer_mean_over_heads'])} sparse layers: token density (kept query-key pairs / "
          f"all) mean {td['mean']:.4f}, heads {td['min_head']:.3f}..{td['max_head']:.3f}; kept fraction of key "
          f"clusters (the policy's count) {result['kept_fraction_reuse_step']:.4f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
