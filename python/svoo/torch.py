"""svoo as PyTorch operators (`torch.library` custom ops with fake implementations), so that
`torch.compile(fullgraph=True)` can trace through them. Tensors are [heads, tokens, head_dim].

    import torch, svoo.torch as st
    out = st.dense_attention(q, k, v)
    q_labels, k_labels, keep = st.plan(q, k, profiled, kq=256, kk=1024)
    out = st.sparse_attention(q, k, v, q_labels, k_labels, keep)

The same three ops run on CPU tensors (the C++ CPU backend; float32, float16 or bfloat16, any
head_dim) and on CUDA tensors (the CUDA backend; float16 or bfloat16, head_dim 128, rows on
16-byte boundaries: strides multiples of 8, the last one 1, so [B, S, H, D] activations can be
passed as [H, S, D] views without a copy). On CUDA:

- every kernel runs on torch's current CUDA stream and nothing waits for the device, so the ops
  can be captured in a CUDA graph (warm up once outside the capture: the first call of a shape
  builds its planner);
- `plan` co-clusters, selects and lays out on the device through one `svoo.CudaPlanner` per
  (device, heads, q_tokens, k_tokens, kq, kk), built on the first call and reused afterwards
  (`planner()`; its workspace is the only allocation besides the ops' outputs). `profiled` must
  be a tensor on q's device (float64, or converted there): no host copy per call;
- `sparse_attention` rebuilds the layout from the labels and keep on the device (a stable sort
  of the labels, the same permutation the planner's own clustering produced) and runs the
  variable-block kernel. Labels outside [0, kq) / [0, kk) are clamped, not reported (a check
  would need a host synchronisation; the CPU path reports them). NaN inputs are not checked.
- A planner is shared by every call of its shape: calls of one shape on different streams at
  the same time would race. Keep them on one stream (as a diffusers pipeline does).
"""
from __future__ import annotations

import atexit
from typing import Any, Dict, Tuple

import torch

from . import _svoo

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
_GPU_FLOATS = (torch.float16, torch.bfloat16)
_planners: Dict[Tuple[int, int, int, int, int, int], Any] = {}


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
    if q.device.type not in ("cpu", "cuda"):
        raise ValueError(f"svoo runs on CPU and CUDA tensors, got {q.device}")
    if q.device.type == "cuda":
        _check_cuda(q, k, v)


def _check_cuda(*tensors: torch.Tensor) -> None:
    """What the CUDA kernels need of q, k (and v): float16/bfloat16, head_dim 128, one dtype,
    rows on 16-byte boundaries."""
    for name, t in zip("qkv", tensors):
        if t.dtype not in _GPU_FLOATS:
            raise ValueError(f"{name}: the CUDA path takes float16 or bfloat16, got {t.dtype}")
        if t.shape[-1] != 128:
            raise ValueError(f"{name}: the CUDA path is built for head_dim 128, got {t.shape[-1]}")
        if t.stride(0) % 8 or t.stride(1) % 8 or t.data_ptr() % 16:
            raise ValueError(f"{name}: rows must start on 16-byte boundaries on CUDA (strides {t.stride()} must be "
                             f"multiples of 8, data 16-byte aligned); pass a contiguous tensor")
    if any(t.dtype != tensors[0].dtype for t in tensors):
        raise ValueError(f"q, k, v must share one dtype on CUDA, got {[t.dtype for t in tensors]}")
    if tensors[1].shape[0] != tensors[0].shape[0]:
        raise ValueError(f"q and k must have the same number of heads, got {tensors[0].shape[0]} and {tensors[1].shape[0]}")
    if len(tensors) == 3 and tensors[2].shape != tensors[1].shape:
        raise ValueError(f"v must have k's shape {tuple(tensors[1].shape)}, got {tuple(tensors[2].shape)}")


def _dl(t: torch.Tensor):
    """t for the extension: on CUDA a DLPack capsule made without stream synchronisation (stream=-1;
    the kernels run on torch's current stream, which already orders them after t's producers). The
    plain `__dlpack__()` that nanobind would call may make the default stream wait on the current
    one, which is illegal while a CUDA graph is being captured."""
    return t.__dlpack__(stream=-1) if t.is_cuda else t


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def planner(device, heads: int, q_tokens: int, k_tokens: int, kq: int, kk: int, align: int = 0):
    """The cached `svoo.CudaPlanner` of one (device, shape, kq, kk, align), built on first use (its
    workspace is allocated then, once). `align` > 1 reserves the query-cluster alignment's scratch
    (about 10 bytes a query token a head)."""
    if not _svoo.has_cuda:
        raise NotImplementedError("this svoo was built without the CUDA backend (no nvcc at build time)")
    device = torch.device(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = (index, int(heads), int(q_tokens), int(k_tokens), int(kq), int(kk), int(align))
    p = _planners.get(key)
    if p is None:
        with torch.cuda.device(index):
            p = _svoo.CudaPlanner(int(heads), int(q_tokens), int(k_tokens), 128, int(kq), int(kk), int(align))
        _planners[key] = p
    return p


def clear_planners() -> None:
    """Drops the cached planners (their device workspaces are freed)."""
    _planners.clear()


atexit.register(clear_planners)  # free the workspaces before the interpreter (and nanobind) shut down


@torch.library.custom_op("svoo::dense_attention", mutates_args=())
def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Dense softmax attention (scale 1/sqrt(head_dim)), fp32 accumulation."""
    _check_qkv(q, k, v)
    q, k, v = q.detach(), k.detach(), v.detach()
    out = torch.empty_like(q)
    if q.device.type == "cuda":
        with torch.cuda.device(q.device):
            _svoo.dense_attention(_dl(q), _dl(k), _dl(v), _dl(out), _stream(q.device))
    else:
        _svoo.dense_attention(q, k, v, out)
    return out


@dense_attention.register_fake
def _(q, k, v):
    return torch.empty_like(q)


@torch.library.custom_op("svoo::plan", mutates_args=())
def plan(q: torch.Tensor, k: torch.Tensor, profiled: torch.Tensor, kq: int, kk: int, iterations: int = 2,
         seed: int = 0, top_p: float = 0.9, floor_lo: float = 0.15,
         floor_hi: float = 0.2, align: int = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Co-clustering, released selection rule and layout labels, on q's device. `profiled`: one
    density per head (on CUDA: a tensor on q's device). `align` > 1: query clusters moved to
    multiples of that many rows (ClusterConfig::query_align; 128 suits the sparse kernel; 0, the
    default, is the spec's clustering). Returns q_labels [heads, q_tokens] int32, k_labels
    [heads, k_tokens] int32 and keep [heads, kq, kk] uint8, on q's device."""
    if not isinstance(profiled, torch.Tensor) or profiled.dim() != 1 or profiled.numel() != q.shape[0]:
        shape = tuple(profiled.shape) if isinstance(profiled, torch.Tensor) else type(profiled).__name__
        raise ValueError(f"profiled must hold one density per head ({q.shape[0]}), got shape {shape}")
    if q.device != k.device:
        raise ValueError(f"q and k must be on one device, got {q.device}, {k.device}")
    if q.device.type == "cuda":
        for name, t in (("q", q), ("k", k)):
            if t.dim() != 3:
                raise ValueError(f"{name} must have shape [heads, tokens, head_dim], got {tuple(t.shape)}")
            if t.stride(-1) != 1:
                raise ValueError(f"{name} must be contiguous in head_dim (stride {t.stride()})")
        _check_cuda(q, k)
        if profiled.device != q.device:
            raise ValueError(f"profiled must be on q's device ({q.device}), got {profiled.device}: move it there "
                             f"once (profiled.to(q.device)); a host tensor would need a copy in every call")
        if not profiled.is_floating_point():
            raise ValueError(f"profiled must be a floating tensor, got {profiled.dtype}")
        prof = profiled.detach().to(torch.float64).contiguous()
        heads = q.shape[0]
        p = planner(q.device, heads, q.shape[1], k.shape[1], kq, kk, align)
        q_labels = torch.empty((heads, q.shape[1]), dtype=torch.int32, device=q.device)
        k_labels = torch.empty((heads, k.shape[1]), dtype=torch.int32, device=q.device)
        keep = torch.empty((heads, kq, kk), dtype=torch.uint8, device=q.device)
        with torch.cuda.device(q.device):
            s = _stream(q.device)
            p.cluster(_dl(q.detach()), _dl(k.detach()), iterations, seed, "coclustering", s, align)
            p.select_device(top_p, floor_lo, floor_hi, None, "released", _dl(prof), s)
            p.copy_plan(_dl(q_labels), _dl(k_labels), _dl(keep), s)
        return q_labels, k_labels, keep
    if q.device.type != "cpu":
        raise ValueError(f"svoo runs on CPU and CUDA tensors, got {q.device}")
    p = _svoo.cpu_plan(q.detach(), k.detach(), kq, kk, iterations, seed, "coclustering", top_p, floor_lo, floor_hi,
                       None, "released", [float(x) for x in profiled.tolist()], None, align)
    return (torch.from_numpy(p.q_labels), torch.from_numpy(p.k_labels), torch.from_numpy(p.keep))


@plan.register_fake
def _(q, k, profiled, kq, kk, iterations=2, seed=0, top_p=0.9, floor_lo=0.15, floor_hi=0.2, align=0):
    h = q.shape[0]
    return (q.new_empty((h, q.shape[1]), dtype=torch.int32), q.new_empty((h, k.shape[1]), dtype=torch.int32),
            q.new_empty((h, kq, kk), dtype=torch.uint8))


@torch.library.custom_op("svoo::sparse_attention", mutates_args=())
def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_labels: torch.Tensor,
                     k_labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Each query attends to the keys of the key clusters its query cluster keeps: query token n
    of head h sees key m iff keep[h, q_labels[h, n], k_labels[h, m]]."""
    _check_qkv(q, k, v)
    for name, t in (("q_labels", q_labels), ("k_labels", k_labels), ("keep", keep)):
        if t.device != q.device:
            raise ValueError(f"{name} must be on q's device ({q.device}), got {t.device}")
    out = torch.empty_like(q)
    if q.device.type != "cuda":
        _svoo.cpu_sparse_attention_labels(q.detach(), k.detach(), v.detach(), q_labels.to(torch.int32).contiguous(),
                                          k_labels.to(torch.int32).contiguous(), keep.to(torch.uint8).contiguous(),
                                          out)
        return out
    heads = q.shape[0]
    if q_labels.dim() != 2 or k_labels.dim() != 2 or keep.dim() != 3:
        raise ValueError(f"q_labels, k_labels must be [heads, tokens] and keep [heads, kq, kk], got "
                         f"{tuple(q_labels.shape)}, {tuple(k_labels.shape)}, {tuple(keep.shape)}")
    if not (q_labels.shape[0] == k_labels.shape[0] == keep.shape[0] == heads):
        raise ValueError("q_labels, k_labels and keep must have the same number of heads (and q's)")
    if q_labels.shape[1] != q.shape[1] or k_labels.shape[1] != k.shape[1]:
        raise ValueError(f"the layout is for {q_labels.shape[1]} query and {k_labels.shape[1]} key tokens, got "
                         f"{q.shape[1]} and {k.shape[1]}")
    if q_labels.is_floating_point() or k_labels.is_floating_point():
        raise ValueError("q_labels and k_labels must be integer tensors")
    kq, kk = keep.shape[1], keep.shape[2]
    p = planner(q.device, heads, q.shape[1], k.shape[1], kq, kk)
    with torch.cuda.device(q.device):
        s = _stream(q.device)
        p.load_plan(_dl(q_labels.to(torch.int32).contiguous()), _dl(k_labels.to(torch.int32).contiguous()),
                    _dl(keep.to(torch.uint8).contiguous()), s)
        p.sparse_attention(_dl(q.detach()), _dl(k.detach()), _dl(v.detach()), _dl(out), s)
    return out


@sparse_attention.register_fake
def _(q, k, v, q_labels, k_labels, keep):
    return torch.empty_like(q)
