"""svoo: sparse attention for video diffusion transformers (offline sparsity profiling and
online QK co-clustering, arXiv 2603.18636).

Arrays are exchanged by DLPack without copies: numpy arrays and torch tensors (CPU; CUDA when the
extension was built with nvcc) of shape [heads, tokens, head_dim]. The CPU path accepts float32,
float16 and bfloat16; the GPU path bfloat16 and float16 with head_dim 128.

    import numpy as np, svoo
    q, k, v = (np.random.randn(12, 4096, 128).astype(np.float32) for _ in range(3))
    plan = svoo.plan(q, k, preset="wan2.1-t2v-1.3b", profiled=[0.1] * 12, kq=16, kk=64)
    out = svoo.sparse_attention(q, k, v, plan)
"""
from __future__ import annotations

from typing import Optional, Sequence

from . import _svoo
from ._svoo import CpuPlan, attention_recall, load_profile, presets, tau_density

has_cuda: bool = _svoo.has_cuda

__all__ = ["plan", "sparse_attention", "dense_attention", "attention_recall", "tau_density", "presets",
           "load_profile", "preset", "has_cuda", "CpuPlan"]


def preset(name: str) -> dict:
    """The released defaults of a model (see `svoo.presets()` for the names)."""
    for p in presets():
        if p["name"] == name:
            return p
    raise ValueError(f"unknown preset {name!r}; known: {', '.join(p['name'] for p in presets())}")


def _empty_like(x):
    """An uninitialised array like x, of x's own framework (torch tensors have new_empty)."""
    if hasattr(x, "new_empty"):
        return x.new_empty(x.shape)
    import numpy as np
    return np.empty_like(x)


def plan(q, k, *, profiled: Sequence[float], preset: str = "wan2.1-t2v-1.3b", kq: Optional[int] = None,
         kk: Optional[int] = None, iterations: Optional[int] = None, seed: int = 0, method: str = "coclustering",
         top_p: Optional[float] = None, floor_lo: Optional[float] = None, floor_hi: Optional[float] = None,
         cap: Optional[float] = None, rule: str = "released", reuse: Optional[CpuPlan] = None,
         align: int = 0) -> CpuPlan:
    """Clusters q and k (or reuses `reuse`'s clustering), selects blocks and builds the layout on
    the CPU. `profiled`: one profile density per head (the floor before clipping). Unset options
    take the preset's released defaults. `align` > 1 moves a few query rows so that query clusters
    hold multiples of that many rows (128 suits the GPU kernel; 0 is the spec's clustering)."""
    d = globals()["preset"](preset)
    return _svoo.cpu_plan(q, k, kq or d["kq"], kk or d["kk"], iterations or d["iterations"], seed, method,
                          d["top_p"] if top_p is None else top_p, d["floor_lo"] if floor_lo is None else floor_lo,
                          d["floor_hi"] if floor_hi is None else floor_hi, cap, rule, list(profiled), reuse, align)


def sparse_attention(q, k, v, plan: CpuPlan, out=None):
    """Attention of every query over the key clusters its cluster keeps (the plan's layout)."""
    out = _empty_like(q) if out is None else out
    _svoo.cpu_sparse_attention(q, k, v, plan, out)
    return out


def dense_attention(q, k, v, out=None):
    """Dense attention, on the CPU or (for CUDA tensors) the GPU."""
    out = _empty_like(q) if out is None else out
    _svoo.dense_attention(q, k, v, out)
    return out


if has_cuda:
    from ._svoo import CudaPlanner  # noqa: F401
    __all__.append("CudaPlanner")
