"""svoo as PyTorch operators (`torch.library` custom ops with fake implementations), so that
`torch.compile` can trace through them. Tensors are [heads, tokens, head_dim].

    import torch, svoo.torch as st
    out = st.dense_attention(q, k, v)                       # CPU, or GPU for CUDA tensors
    q_labels, k_labels, keep = st.plan(q, k, profiled, kq=256, kk=1024)   # CPU
    out = st.sparse_attention(q, k, v, q_labels, k_labels, keep)          # CPU

The GPU planner is `svoo.CudaPlanner` (GPU builds); its plan lives on the device, outside
torch's op registry, for now.
"""
from __future__ import annotations

from typing import Tuple

import torch

from . import _svoo

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name} must have shape [heads, tokens, head_dim], got {tuple(t.shape)}")
        if t.dtype not in _FLOATS:
            raise ValueError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in head_dim (stride {t.stride()})")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")


@torch.library.custom_op("svoo::dense_attention", mutates_args=())
def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Dense softmax attention (scale 1/sqrt(head_dim)), fp32 accumulation."""
    _check_qkv(q, k, v)
    out = torch.empty_like(q)
    _svoo.dense_attention(q.detach(), k.detach(), v.detach(), out)
    return out


@dense_attention.register_fake
def _(q, k, v):
    return torch.empty_like(q)


@torch.library.custom_op("svoo::plan", mutates_args=())
def plan(q: torch.Tensor, k: torch.Tensor, profiled: torch.Tensor, kq: int, kk: int, iterations: int = 2,
         seed: int = 0, top_p: float = 0.9, floor_lo: float = 0.15,
         floor_hi: float = 0.2) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Co-clustering, released selection rule and layout labels on the CPU. `profiled`: one
    density per head (float). Returns q_labels [heads, q_tokens] int32, k_labels [heads,
    k_tokens] int32 and keep [heads, kq, kk] uint8."""
    if q.device.type != "cpu" or k.device.type != "cpu":
        raise NotImplementedError("svoo::plan runs on CPU tensors; use svoo.CudaPlanner on the GPU")
    if profiled.dim() != 1 or profiled.numel() != q.shape[0]:
        raise ValueError(f"profiled must hold one density per head ({q.shape[0]}), got shape {tuple(profiled.shape)}")
    p = _svoo.cpu_plan(q.detach(), k.detach(), kq, kk, iterations, seed, "coclustering", top_p, floor_lo, floor_hi,
                       None, "released", [float(x) for x in profiled.tolist()], None)
    return (torch.from_numpy(p.q_labels), torch.from_numpy(p.k_labels), torch.from_numpy(p.keep))


@plan.register_fake
def _(q, k, profiled, kq, kk, iterations=2, seed=0, top_p=0.9, floor_lo=0.15, floor_hi=0.2):
    h = q.shape[0]
    return (q.new_empty((h, q.shape[1]), dtype=torch.int32), q.new_empty((h, k.shape[1]), dtype=torch.int32),
            q.new_empty((h, kq, kk), dtype=torch.uint8))


@torch.library.custom_op("svoo::sparse_attention", mutates_args=())
def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_labels: torch.Tensor,
                     k_labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Each query attends to the keys of the key clusters its query cluster keeps (CPU)."""
    _check_qkv(q, k, v)
    if q.device.type != "cpu":
        raise NotImplementedError("svoo::sparse_attention on tensors runs on the CPU; use svoo.CudaPlanner on the GPU")
    out = torch.empty_like(q)
    _svoo.cpu_sparse_attention_labels(q.detach(), k.detach(), v.detach(), q_labels.to(torch.int32).contiguous(),
                                      k_labels.to(torch.int32).contiguous(), keep.to(torch.uint8).contiguous(), out)
    return out


@sparse_attention.register_fake
def _(q, k, v, q_labels, k_labels, keep):
    return torch.empty_like(q)
