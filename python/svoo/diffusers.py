"""svoo in diffusers pipelines: `enable(pipe, preset=...)` replaces the video self-attention of
WanTransformer3DModel (Wan2.1; both experts of Wan2.2) and the joint attention of
HunyuanVideoTransformer3DModel (video tokens co-clustered, the text slots as prompt and padding
pseudo-clusters) by svoo's sparse attention, applying the released warm-up, dense-layer and
reuse rules with one clustering cache per CFG branch, and `disable(pipe)` restores the original
processors. Wan's cross-attention stays dense.

The step and the CFG branch are learned from the calls: a new `timestep` starts a new step, and
the calls within one step are the branches in order (conditional first, as the Wan pipelines
call them).

CPU tensors run the C++ CPU backend. CUDA tensors (float16/bfloat16, head_dim 128, as Wan and
HunyuanVideo run) run the CUDA backend on torch's current stream: one shared `svoo.CudaPlanner`
per shape clusters, selects and lays out on the device, and `sparse_attention` reads q, k, v
through [H, S, D] views of the [B, S, H, D] activations (no copies). Each (branch, expert, layer,
batch element) keeps its clustering (`CudaPlanner.clustering_bytes`: centroids, sizes, offsets
and permutations, the labels rebuilt on load; about 11 MB per slot at Wan2.1-1.3B 480p, 15 MB at
720p) for the reuse steps, in page-locked host memory by default, each slot uploaded on a side
stream while the layer before it runs (`enable(clustering_cache="device")` keeps every slot on the
device instead; clustering_cache.py).
HunyuanVideo's text pseudo-clusters on CUDA: the video tokens are planned on the device, the two
text clusters are appended to the labels and keep there, and the kernel runs on the layout
rebuilt from them (one extra sort per call). Wan's dense calls (warm-up steps, dense layers) run
svoo's dense kernel on Hopper (compute capability 9.0: 5-10 % faster than cuDNN there) and torch's
scaled_dot_product_attention elsewhere (`enable(dense_kernel="sdpa")` forces SDPA);
HunyuanVideo's dense calls keep the model's own (masked) attention. CUDA tensors the kernels cannot take (float32, another
head_dim, a build without CUDA) run dense, with a warning once per reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import json
import os
import struct
import warnings

import torch
import torch.nn.functional as F

import svoo
import svoo.torch  # noqa: F401  (the CUDA planners)
from svoo.torch import _dl

from . import _svoo
from .clustering_cache import ClusteringCache

__all__ = ["enable", "disable", "set_step", "profile", "save_capture", "SvooState"]


class _StepRule:
    """How the denoising step and the CFG branch are learned from the transformer calls (a new
    timestep starts a step; the calls within it are the branches in order), or set with
    set_step(). Subclasses hold step, branch, last_timestep and manual."""

    def on_transformer_call(self, timestep: torch.Tensor) -> None:
        if self.manual:
            self.branch += 1
            return
        if torch.is_tensor(timestep) and timestep.is_cuda and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                "svoo: the transformer is being captured in a CUDA graph, where its CUDA timestep cannot be "
                "read to learn the denoising step: call svoo.diffusers.set_step(pipe, step) before each "
                "captured or replayed step")
        t = float(timestep.flatten()[0]) if torch.is_tensor(timestep) else float(timestep)
        if self.last_timestep is None or t != self.last_timestep:
            self.step += 1
            self.branch = 0
            self.last_timestep = t
        else:
            self.branch += 1


def _rows_aligned(x: torch.Tensor) -> bool:
    """Whether every row of x [B, S, H, D] (each batch element's [H, S, D] view) is what the CUDA
    kernels address: contiguous in D, strides multiples of 8 elements, data 16-byte aligned."""
    return x.stride(-1) == 1 and all(s % 8 == 0 for s in x.stride()[:-1]) and x.data_ptr() % 16 == 0


def _addressable(x: torch.Tensor) -> torch.Tensor:
    """x itself when the CUDA kernels can address its rows, else a contiguous copy (a layout they
    cannot address then costs a copy, not an error)."""
    return x if _rows_aligned(x) else x.contiguous()


@dataclass
class SvooState(_StepRule):
    """Shared by every layer of every expert of one pipeline."""
    controller: Any
    preset: dict
    options: dict
    step: int = 0
    branch: int = -1
    last_timestep: Optional[float] = None
    # (branch, expert, layer, batch element) -> (step of the clustering, CpuPlan or CUDA buffer[, shape])
    cache: Dict[Tuple[int, int, int, int], Tuple[Any, ...]] = field(default_factory=dict)  # the CPU path's plans
    # the CUDA path's clusterings, same keys (in page-locked host memory by default: clustering_cache.py)
    clusterings: ClusteringCache = field(default_factory=ClusteringCache)
    log: List[Tuple[int, int, int, int, str]] = field(default_factory=list)  # (step, branch, expert, layer, mode)
    densities: Dict[Tuple[str, Tuple[float, ...]], torch.Tensor] = field(default_factory=dict)
    warned: set = field(default_factory=set)
    dense_kernel: str = "auto"  # Wan's dense calls: "auto" (svoo's on compute capability 9.0), "svoo", "sdpa"

    manual: bool = False  # the step is set with set_step(); the timestep is not read

    def device_density(self, density, device) -> torch.Tensor:
        """The per-head densities as a float64 tensor on `device`, made once per distinct value."""
        key = (str(device), tuple(float(d) for d in density))
        t = self.densities.get(key)
        if t is None:
            t = torch.tensor(key[1], dtype=torch.float64, device=device)
            self.densities[key] = t
        return t

    def dense_on_svoo(self, query: torch.Tensor, *others: torch.Tensor) -> bool:
        """Whether a dense call on `query` (and key, value) [B, S, H, D] runs svoo's dense kernel
        instead of SDPA: CUDA, float16/bfloat16 of one dtype, head_dim 128, rows the kernel can
        address (anything else stays on SDPA, which takes any layout)."""
        if self.dense_kernel == "sdpa" or query.device.type != "cuda" or not svoo.has_cuda:
            return False
        if query.dtype not in (torch.float16, torch.bfloat16) or query.shape[-1] != 128:
            return False
        if not all(t.dtype == query.dtype and t.shape[-1] == 128 and _rows_aligned(t) for t in (query, *others)):
            return False
        return self.dense_kernel == "svoo" or torch.cuda.get_device_capability(query.device) == (9, 0)

    def gpu_unsupported(self, query: torch.Tensor) -> Optional[str]:
        """Why the CUDA sparse path cannot take these activations [B, S, H, D] (None if it can);
        the reason is warned about once."""
        reason = None
        if query.device.type != "cuda":
            reason = f"svoo's sparse kernels run on CPU and CUDA tensors, not {query.device.type}"
        elif not svoo.has_cuda:
            reason = "this svoo was built without the CUDA backend"
        elif query.dtype not in (torch.float16, torch.bfloat16):
            reason = f"the CUDA kernels take float16/bfloat16 activations, the model runs {query.dtype}"
        elif query.shape[-1] != 128:
            reason = f"the CUDA kernels are built for head_dim 128, the model has {query.shape[-1]}"
        if reason is not None and reason not in self.warned:
            self.warned.add(reason)
            warnings.warn(f"svoo: {reason}; these attention calls run dense", RuntimeWarning, stacklevel=3)
        return reason

    def cuda_plan(self, planner, q, k, mode: str, slot, step: int, density, stream: int) -> str:
        """The device plan of one slot on `planner`: cluster (keeping the clustering in the
        slot's device buffer) or, on reuse, load the slot's clustering back; then select with
        this step's densities. Returns the mode that ran (a cached clustering of another shape
        is reclustered)."""
        o = self.options["gpu"]
        shape = (planner.heads, planner.q_tokens, planner.k_tokens, planner.kq, planner.kk)
        if mode == "reuse" and not self.clusterings.usable(slot, shape):
            mode = "recluster"
        if mode == "reuse":
            self.clusterings.load(slot, planner, q.device, stream)
        else:
            planner.cluster(_dl(q), _dl(k), o["iterations"], o["seed"], "coclustering", stream, o["align"])
            self.clusterings.save(slot, step, planner, shape, q.device, stream)
        planner.select_device(o["top_p"], o["floor_lo"], o["floor_hi"], None, "released",
                              _dl(self.device_density(density, q.device)), stream)
        return mode

    def cached_at(self, keys) -> Optional[int]:
        """The step of the oldest cached clustering among `keys` (None if any is missing)."""
        steps = []
        for k in keys:
            s = self.clusterings.step_of(k)
            if s is None and k in self.cache:
                s = self.cache[k][0]
            if s is None:
                return None
            steps.append(s)
        return min(steps)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # As diffusers' WanAttnProcessor: consecutive pairs rotated by the frequencies.
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class SvooWanSelfAttnProcessor:
    """Replaces WanAttnProcessor on a block's self-attention (attn1)."""

    def __init__(self, state: SvooState, layer: int, expert: int, original: Any):
        self.state, self.layer, self.expert, self.original = state, layer, expert, original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if encoder_hidden_states is not None or attention_mask is not None or attn.add_k_proj is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        st = self.state
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))  # [B, S, H, D]
        if rotary_emb is not None:
            query, key = _apply_rotary(query, *rotary_emb), _apply_rotary(key, *rotary_emb)
        step = min(max(st.step, 1), st.controller.steps)
        branch = max(st.branch, 0)
        keys = [(branch, self.expert, self.layer, b) for b in range(query.shape[0])]
        mode, density = st.controller.decide(step, self.layer, branch, self.expert, st.cached_at(keys))
        if mode != "dense" and query.device.type != "cpu" and st.gpu_unsupported(query) is not None:
            mode = "dense"
        if mode == "dense":
            st.log.append((step, branch, self.expert, self.layer, mode))
            if st.dense_on_svoo(query, key, value):  # per batch element, through [H, S, D] views
                outs = [svoo.torch.dense_attention(*(x[b].transpose(0, 1) for x in (query, key, value))).transpose(0, 1)
                        for b in range(query.shape[0])]
                out = outs[0].unsqueeze(0) if len(outs) == 1 else torch.stack(outs)  # one element: no copy
            else:
                out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
                out = out.transpose(1, 2)
        elif query.device.type == "cuda":
            out, ran = self._cuda(query, key, value, keys, mode, step, density)
            st.log.append((step, branch, self.expert, self.layer, ran))
        else:
            st.log.append((step, branch, self.expert, self.layer, mode))
            outs = []
            for b, ck in enumerate(keys):
                q, k, v = (x[b].transpose(0, 1) for x in (query, key, value))  # [H, S, D] views
                reuse = st.cache[ck][1] if mode == "reuse" else None
                plan = svoo.plan(q.detach(), k.detach(), profiled=density, preset=st.preset["name"], reuse=reuse,
                                 **st.options["plan"])
                if mode == "recluster":
                    st.cache[ck] = (step, plan)
                outs.append(svoo.sparse_attention(q.detach(), k.detach(), v.detach(), plan).transpose(0, 1))
            out = torch.stack(outs)
        hidden_states = out.flatten(2, 3).type_as(query)
        hidden_states = attn.to_out[0](hidden_states)
        return attn.to_out[1](hidden_states)


    # torch.compile runs this eagerly (a graph break): the planner's DLPack calls cannot be traced.
    @torch.compiler.disable
    def _cuda(self, query, key, value, keys, mode, step, density):
        """Plan (or reuse) and run the sparse attention of every batch element on the device;
        returns the output [B, S, H, D] and the mode that ran."""
        st, o = self.state, self.state.options["gpu"]
        _, tokens, heads, _ = query.shape
        planner = svoo.torch.planner(query.device, heads, tokens, tokens, o["kq"], o["kk"], o["align"])
        out = torch.empty_like(query)
        ran = mode
        with torch.cuda.device(query.device):
            stream = torch.cuda.current_stream(query.device).cuda_stream
            for b, ck in enumerate(keys):
                q, k, v = (_addressable(x[b].detach().transpose(0, 1)) for x in (query, key, value))  # [H, S, D]
                ran = st.cuda_plan(planner, q, k, mode, ck, step, density, stream)
                planner.sparse_attention(_dl(q), _dl(k), _dl(v), _dl(out[b].transpose(0, 1)), stream)
        return out, ran


class SvooHunyuanAttnProcessor:
    """Replaces HunyuanVideoAttnProcessor2_0 in HunyuanVideo's double- and single-stream blocks:
    joint attention over [video tokens | text slots]. The video tokens are co-clustered; the
    text slots become two fixed pseudo-clusters on both sides (spec 2.5): the valid prompt
    (attended by every video and prompt query; prompt queries attend every video and prompt key)
    and the padding (attends only padding; invisible to everything else)."""

    def __init__(self, state: SvooState, layer: int, expert: int, original: Any):
        self.state, self.layer, self.expert, self.original = state, layer, expert, original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        st = self.state
        step = min(max(st.step, 1), st.controller.steps)
        branch = max(st.branch, 0)
        batch = hidden_states.shape[0]
        keys = [(branch, self.expert, self.layer, b) for b in range(batch)]
        mode, density = st.controller.decide(step, self.layer, branch, self.expert, st.cached_at(keys))
        if mode != "dense" and encoder_hidden_states is None:
            mode = "dense"
        if mode != "dense" and hidden_states.device.type != "cpu":
            probe = hidden_states.new_empty((1, 1, attn.heads, attn.to_q.out_features // attn.heads))
            if st.gpu_unsupported(probe) is not None:
                mode = "dense"
        st.log.append((step, branch, self.expert, self.layer, mode))
        if mode == "dense":
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        from diffusers.models.embeddings import apply_rotary_emb

        text = encoder_hidden_states.shape[1]
        single = attn.add_q_proj is None
        if single:
            hidden_states = torch.cat([hidden_states, encoder_hidden_states], dim=1)
        query, key, value = (f(hidden_states).unflatten(2, (attn.heads, -1)) for f in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:
            if single:
                query = torch.cat([apply_rotary_emb(query[:, :-text], image_rotary_emb, sequence_dim=1), query[:, -text:]], 1)
                key = torch.cat([apply_rotary_emb(key[:, :-text], image_rotary_emb, sequence_dim=1), key[:, -text:]], 1)
            else:
                query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
                key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        if not single:
            eq, ek, ev = (f(encoder_hidden_states).unflatten(2, (attn.heads, -1))
                          for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))
            if attn.norm_added_q is not None:
                eq = attn.norm_added_q(eq)
            if attn.norm_added_k is not None:
                ek = attn.norm_added_k(ek)
            query, key, value = torch.cat([query, eq], 1), torch.cat([key, ek], 1), torch.cat([value, ev], 1)
        total = query.shape[1]
        video = total - text
        if query.device.type == "cuda":
            hidden_states = self._cuda(query, key, value, attention_mask, keys, mode, density, step, text)
            return self._finish(attn, hidden_states, text)
        outs = []
        for b, ck in enumerate(keys):
            # valid prompt slots: the key mask over the text part (all valid without a mask)
            valid = (attention_mask[b].reshape(-1)[-text:].bool() if attention_mask is not None
                     else torch.ones(text, dtype=torch.bool))
            q, k, v = (x[b].transpose(0, 1).detach() for x in (query, key, value))  # [H, S, D]
            reuse = st.cache[ck][1] if mode == "reuse" else None
            plan = svoo.plan(q[:, :video], k[:, :video], profiled=density, preset=st.preset["name"], reuse=reuse,
                             **st.options["plan"])
            if mode == "recluster":
                st.cache[ck] = (step, plan)
            ql, kl, keep = _with_text_clusters(*(torch.from_numpy(a) for a in (plan.q_labels, plan.k_labels, plan.keep)),
                                               valid)
            out = torch.empty_like(q)
            _svoo.cpu_sparse_attention_labels(q, k, v, ql, kl, keep, out)
            outs.append(out.transpose(0, 1))
        hidden_states = torch.stack(outs).flatten(2, 3).to(query.dtype)
        return self._finish(attn, hidden_states, text)

    @torch.compiler.disable  # as the Wan processor's: DLPack calls cannot be traced
    def _cuda(self, query, key, value, attention_mask, keys, mode, density, step, text):
        """The joint attention on CUDA: the video tokens planned on the device (cached per slot),
        the text pseudo-clusters appended there, the kernel run on the rebuilt layout."""
        st, o = self.state, self.state.options["gpu"]
        _, total, heads, _ = query.shape
        video, kq, kk = total - text, o["kq"], o["kk"]
        pv = svoo.torch.planner(query.device, heads, video, video, kq, kk, o["align"])
        pf = svoo.torch.planner(query.device, heads, total, total, kq + 2, kk + 2)
        out = torch.empty_like(query)
        with torch.cuda.device(query.device):
            stream = torch.cuda.current_stream(query.device).cuda_stream
            for b, ck in enumerate(keys):
                valid = (attention_mask[b].reshape(-1)[-text:].bool() if attention_mask is not None
                         else torch.ones(text, dtype=torch.bool, device=query.device))
                q, k, v = (_addressable(x[b].detach().transpose(0, 1)) for x in (query, key, value))  # [H, S, D]
                st.cuda_plan(pv, q[:, :video], k[:, :video], mode, ck, step, density, stream)
                ql = torch.empty((heads, video), dtype=torch.int32, device=query.device)
                kl = torch.empty_like(ql)
                keep = torch.empty((heads, kq, kk), dtype=torch.uint8, device=query.device)
                pv.copy_plan(_dl(ql), _dl(kl), _dl(keep), stream)
                ql, kl, keep = _with_text_clusters(ql, kl, keep, valid.to(query.device))
                pf.load_plan(_dl(ql), _dl(kl), _dl(keep), stream)
                pf.sparse_attention(_dl(q), _dl(k), _dl(v), _dl(out[b].transpose(0, 1)), stream)
        return out.flatten(2, 3)

    @staticmethod
    def _finish(attn, hidden_states, text):
        hidden_states, encoder_hidden_states = hidden_states[:, :-text], hidden_states[:, -text:]
        if getattr(attn, "to_out", None) is not None:
            hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if getattr(attn, "to_add_out", None) is not None:
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        return hidden_states, encoder_hidden_states


def _with_text_clusters(ql: torch.Tensor, kl: torch.Tensor, keep: torch.Tensor, valid: torch.Tensor):
    """Labels [heads, video] and keep [heads, kq, kk] of the video tokens extended by the text
    slots (valid: [text] bool) as two pseudo-clusters on each side (spec 2.5): kq / kk is the
    prompt, kq + 1 / kk + 1 the padding. On the tensors' device."""
    heads, kq, kk = keep.shape
    text = valid.shape[0]
    text_q = torch.where(valid, kq, kq + 1).to(torch.int32).expand(heads, text)
    text_k = torch.where(valid, kk, kk + 1).to(torch.int32).expand(heads, text)
    keep2 = torch.zeros(heads, kq + 2, kk + 2, dtype=torch.uint8, device=keep.device)
    keep2[:, :kq, :kk] = keep
    keep2[:, :kq, kk] = 1          # video queries attend the prompt
    keep2[:, kq, :kk + 1] = 1      # prompt queries attend every video and prompt key
    keep2[:, kq + 1, kk + 1] = 1   # padding attends only padding
    return (torch.cat([ql, text_q], 1).contiguous(), torch.cat([kl, text_k], 1).contiguous(), keep2)


def _attention_modules(model) -> List[Tuple[Any, type]]:
    """(attention module, processor class) in profile layer order."""
    if hasattr(model, "blocks"):  # Wan
        return [(block.attn1, SvooWanSelfAttnProcessor) for block in model.blocks]
    if hasattr(model, "transformer_blocks") and hasattr(model, "single_transformer_blocks"):  # HunyuanVideo
        return ([(blk.attn, SvooHunyuanAttnProcessor) for blk in model.transformer_blocks] +
                [(blk.attn, SvooHunyuanAttnProcessor) for blk in model.single_transformer_blocks])
    raise ValueError(f"svoo.diffusers supports WanTransformer3DModel and HunyuanVideoTransformer3DModel, "
                     f"not {type(model).__name__}")


def _transformers(pipe_or_model) -> List[torch.nn.Module]:
    if hasattr(pipe_or_model, "blocks") or hasattr(pipe_or_model, "single_transformer_blocks"):
        return [pipe_or_model]
    models = [getattr(pipe_or_model, "transformer", None), getattr(pipe_or_model, "transformer_2", None)]
    models = [m for m in models if m is not None]
    if not models:
        raise ValueError("enable() needs a diffusers pipeline with a .transformer, or a WanTransformer3DModel")
    return models


def enable(pipe, preset: str = "wan2.1-t2v-1.3b", profile: Optional[str] = None, *,
           num_inference_steps: Optional[int] = None, kq: Optional[int] = None, kk: Optional[int] = None,
           top_p: Optional[float] = None, floor_lo: Optional[float] = None, floor_hi: Optional[float] = None,
           warmup_steps: Optional[int] = None, dense_layers: Optional[int] = None,
           reuse_interval: Optional[int] = None, dense_kernel: str = "auto", align_queries: int = 128,
           clustering_cache: str = "host") -> SvooState:
    """Makes the video self-attention of `pipe` (or of one WanTransformer3DModel) sparse.
    `profile`: a profile CSV path, or None for the preset's fallback density. Unset options take
    the preset's released defaults; `num_inference_steps` rescales the warm-up to the steps you
    run. `dense_kernel`: what Wan's dense calls run, "auto" (svoo's dense kernel on compute
    capability 9.0, torch's SDPA elsewhere), "svoo" or "sdpa". `align_queries`: 128, the default,
    moves a few query rows per cluster after the spec's co-clustering so that query clusters fill
    the sparse kernel's 128-row items, in five passes (about 4 % of the rows at 720p, 11 % at
    480p; the sparse kernel then runs at 100-114 % of cuDNN's throughput at 720p and 90-107 % at
    480p at 10-30 % density on an H200, against 84-98 % and 62-78 % with the spec's clustering,
    at attention recall within 0.1 point at equal density: see the README's "Query-cluster
    alignment"); 0 keeps the spec's clustering exactly. `clustering_cache`: where the CUDA path
    keeps each slot's clustering between its recluster and reuse steps, "host" (the default:
    page-locked host memory, each slot uploaded on a side stream while the layer before it runs,
    so the device holds two slots at a time) or "device" (every slot on the device: ~11-51 MB a
    slot and layer and CFG branch, 15-18 % of a Wan2.1-1.3B generation's peak). Returns the shared
    state (its `log` records every decision)."""
    if not isinstance(align_queries, int) or not (align_queries == 0 or 2 <= align_queries <= 256):
        raise ValueError(f"align_queries must be 0 or in [2, 256], not {align_queries!r}")
    if clustering_cache not in ("host", "device"):
        raise ValueError(f"clustering_cache must be 'host' or 'device', not {clustering_cache!r}")
    if dense_kernel not in ("auto", "svoo", "sdpa"):
        raise ValueError(f"dense_kernel must be 'auto', 'svoo' or 'sdpa', not {dense_kernel!r}")
    d = svoo.preset(preset)
    models = _transformers(pipe)
    cfg = models[0].config
    controller = _svoo.Controller(preset, steps=num_inference_steps, profile=profile, warmup_steps=warmup_steps,
                                  dense_layers=dense_layers, reuse_interval=reuse_interval,
                                  layers=len(_attention_modules(models[0])), heads=cfg.num_attention_heads)
    plan_opts = {k: v for k, v in dict(kq=kq, kk=kk, top_p=top_p, floor_lo=floor_lo, floor_hi=floor_hi).items()
                 if v is not None}
    if align_queries:
        plan_opts["align"] = align_queries
    gpu_opts = dict(kq=d["kq"], kk=d["kk"], iterations=d["iterations"], seed=0, top_p=d["top_p"],
                    floor_lo=d["floor_lo"], floor_hi=d["floor_hi"], align=0)
    gpu_opts.update(plan_opts)
    state = SvooState(controller, d, {"plan": plan_opts, "gpu": gpu_opts}, dense_kernel=dense_kernel,
                      clusterings=ClusteringCache(clustering_cache))
    for expert, model in enumerate(models):
        if getattr(model, "_svoo_state", None) is not None:
            raise ValueError("svoo is already enabled on this model; call svoo.diffusers.disable first")
        for layer, (attn, cls) in enumerate(_attention_modules(model)):
            attn.set_processor(cls(state, layer, expert, attn.processor))
        model._svoo_hook = model.register_forward_pre_hook(
            lambda module, args, kwargs: state.on_transformer_call(kwargs.get("timestep", args[1] if len(args) > 1 else 0)),
            with_kwargs=True)
        model._svoo_state = state
    return state


def set_step(pipe, step: Optional[int]) -> None:
    """Sets the denoising step (1-based) of the next transformer calls, which are that step's CFG
    branches in order, instead of learning it from the timestep. Reading a CUDA timestep waits for
    the device, and cannot happen inside a CUDA graph capture: call this before each step you
    capture or replay (a graph replays the decisions made at its capture, so capture one graph per
    kind of step: dense, recluster, reuse). `step=None` goes back to learning from the timestep."""
    states = {id(s): s for s in (getattr(m, "_svoo_state", None) for m in _transformers(pipe)) if s is not None}
    if not states:
        raise ValueError("svoo is not enabled on this pipeline or model: call svoo.diffusers.enable first")
    for state in states.values():
        if step is None:
            state.manual, state.last_timestep = False, None
            continue
        if int(step) < 1:
            raise ValueError(f"step is 1-based, got {step}")
        state.manual, state.step, state.branch = True, int(step), -1


def disable(pipe) -> None:
    """Restores the processors `enable` replaced."""
    for model in _transformers(pipe):
        if getattr(model, "_svoo_state", None) is None:
            continue
        for attn, _ in _attention_modules(model):
            proc = attn.processor
            if isinstance(proc, (SvooWanSelfAttnProcessor, SvooHunyuanAttnProcessor)):
                attn.set_processor(proc.original)
        model._svoo_hook.remove()
        model._svoo_state = None


class _ProfilingWanProcessor:
    """Dense self-attention that also records the tau-density of every head (spec 1)."""

    def __init__(self, recorder: "_Recorder", layer: int, original: Any):
        self.recorder, self.layer, self.original = recorder, layer, original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        rec = self.recorder
        capture = (rec.step, self.layer) in rec.capture
        if encoder_hidden_states is None and attention_mask is None and rec.branch == 0 and (rec.measure or capture):
            query, key = attn.norm_q(attn.to_q(hidden_states)), attn.norm_k(attn.to_k(hidden_states))
            query, key = (x.unflatten(2, (attn.heads, -1)) for x in (query, key))
            if rotary_emb is not None:
                query, key = _apply_rotary(query, *rotary_emb), _apply_rotary(key, *rotary_emb)
            q, k = (x[0].transpose(0, 1).detach() for x in (query, key))  # first batch element, [H, S, D]
            if capture:  # as attention reads them (after QK-norm and RoPE), in the model's dtype
                rec.captured[f"q.s{rec.step}.l{self.layer}"] = q.to("cpu", copy=True).contiguous()
                rec.captured[f"k.s{rec.step}.l{self.layer}"] = k.to("cpu", copy=True).contiguous()
            if rec.measure:
                rec.record(self.layer, _tau_density(q, k, rec))
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)


def _tau_density(q: torch.Tensor, k: torch.Tensor, rec: "_Recorder") -> List[float]:
    """Per-head tau-density of [H, S, D] q and k: on the GPU where the kernel takes them (CUDA
    bf16/f16, head_dim 128; no copy to the host), else on the CPU in fp32."""
    if q.is_cuda and svoo.has_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] == 128:
        rec.gpu_measurements += 1
        with torch.cuda.device(q.device):
            stream = torch.cuda.current_stream(q.device).cuda_stream
            return list(_svoo.cuda_tau_density(_dl(q), _dl(k), rec.tau, rec.rows, rec.seed, stream))
    return svoo.tau_density(q.float().cpu(), k.float().cpu(), tau=rec.tau, rows=rec.rows, seed=rec.seed)


@dataclass
class _Recorder(_StepRule):
    tau: float
    rows: int
    seed: int
    step: int = 0
    branch: int = -1
    last_timestep: Optional[float] = None
    manual: bool = False  # profiling always learns the step from the timestep
    gpu_measurements: int = 0  # (layer, step) densities measured by the GPU kernel
    values: Dict[Tuple[int, int, int], List[float]] = field(default_factory=dict)  # (step, layer, head) -> inputs
    measure: bool = True
    capture: frozenset = frozenset()  # (step, layer) slots whose Q/K are saved
    captured: Dict[str, torch.Tensor] = field(default_factory=dict)  # of the current input

    def record(self, layer: int, densities: List[float]) -> None:
        for head, d in enumerate(densities):
            self.values.setdefault((self.step, layer, head), []).append(d)


_ST_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


def save_capture(path: str, tensors: Dict[str, torch.Tensor], model: Optional[str] = None) -> str:
    """Writes `tensors` (`q.s{step}.l{layer}` / `k.s{step}.l{layer}`, [heads, tokens, head_dim],
    BF16/F16/F32) as one safetensors file in the capture format of docs/capture-format.md, the
    input of `svoo profile`. Written to a temporary name and renamed (no partial files)."""
    header: Dict[str, Any] = {}
    offset = 0
    items = []
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        if t.dtype not in _ST_DTYPES:
            raise ValueError(f"{name}: capture tensors must be bfloat16, float16 or float32, got {t.dtype}")
        if t.dim() != 3:
            raise ValueError(f"{name}: capture tensors are [heads, tokens, head_dim], got {tuple(t.shape)}")
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
        items.append(t)
    if model is not None:
        header["__metadata__"] = {"model": str(model)}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in items:
            f.write(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    os.replace(tmp, path)
    return path


def profile(pipe, prompts: List[str], seeds: List[int], out: Optional[str], *, tau: float = 0.95, rows: int = 256,
            aggregate: str = "max", capture: Optional[List[Tuple[int, int]]] = None,
            capture_path: Optional[str] = None, **pipe_kwargs) -> Optional[str]:
    """Runs one dense generation per (prompt, seed) and measures the tau-density of every
    (step, layer, head) of the video self-attention on the fly (conditional branch; `rows` sampled
    query rows, 0 = all; no N x N matrix). Writes the profile CSV with the per-entry statistics
    over inputs (`Count,Mean,Std,Min,Max`, sample std) and a JSON sidecar. `aggregate`: "max"
    (released) or "quantile" (mean + 1.645 std). Wan models. CUDA bf16/f16 activations with
    head_dim 128 are measured on the GPU by svoo's density kernel (nothing copied to the host;
    `rows=0` measures every row), others on the CPU (CUDA tensors copied to the host first).

    `capture`: (step, layer) slots (step 1-based, layer 0-based) whose Q and K (conditional
    branch, first batch element, after QK-norm and RoPE, the model's dtype) are saved, one
    safetensors file per input `capture_path/p{prompt index}_s{seed}.safetensors` in the format
    of docs/capture-format.md (`svoo profile` reads them). `out=None` with `capture` only
    captures (no densities). Returns `out`."""
    if aggregate not in ("max", "quantile"):
        raise ValueError(f"aggregate must be 'max' or 'quantile', got {aggregate!r}")
    slots = frozenset()
    if capture is not None:
        try:
            slots = frozenset((int(s), int(layer)) for s, layer in capture)
        except (TypeError, ValueError):
            raise ValueError(f"capture must be a list of (step, layer) pairs, got {capture!r}") from None
        if any(s < 1 or layer < 0 for s, layer in slots):
            raise ValueError(f"capture steps are 1-based and layers 0-based, got {sorted(slots)}")
        if not capture_path:
            raise ValueError("capture needs capture_path (a folder for one safetensors file per input)")
        os.makedirs(capture_path, exist_ok=True)
    if out is None and not slots:
        raise ValueError("profile needs an output path `out`, or `capture` slots (or both)")
    recorder = _Recorder(tau, rows, 0, measure=out is not None, capture=slots)
    models = _transformers(pipe)
    restore = []
    for model in models:
        if not hasattr(model, "blocks"):
            raise ValueError("svoo.diffusers.profile supports Wan transformers for now")
        for layer, block in enumerate(model.blocks):
            restore.append(("processor", block.attn1, block.attn1.processor))
            block.attn1.set_processor(_ProfilingWanProcessor(recorder, layer, block.attn1.processor))
        restore.append(("hook", model, model.register_forward_pre_hook(
            lambda module, args, kwargs: recorder.on_transformer_call(kwargs.get("timestep", args[1] if len(args) > 1 else 0)),
            with_kwargs=True)))
    try:
        for pi, prompt in enumerate(prompts):
            for seed in seeds:
                recorder.step, recorder.branch, recorder.last_timestep = 0, -1, None
                recorder.captured = {}
                generator = torch.Generator().manual_seed(seed)
                pipe(prompt=prompt, generator=generator, **pipe_kwargs)
                if slots:
                    missing = sorted(s for s in slots if f"q.s{s[0]}.l{s[1]}" not in recorder.captured)
                    if missing:
                        raise ValueError(f"capture slots {missing} did not occur (steps run: {recorder.step}, "
                                         f"layers: {len(models[0].blocks)})")
                    save_capture(os.path.join(capture_path, f"p{pi}_s{seed}.safetensors"), recorder.captured,
                                 model=type(models[0]).__name__)
                    recorder.captured = {}
    finally:
        for kind, obj, saved in reversed(restore):
            if kind == "hook":
                saved.remove()
            else:
                obj.set_processor(saved)
    inputs = len(prompts) * len(seeds)
    if out is None:
        return None
    entries = [(step, layer, head, vals) for (step, layer, head), vals in sorted(recorder.values.items())]
    _svoo.save_profile(out, entries, aggregate)  # the statistics and the CSV of `svoo profile`
    with open(out + ".json", "w") as f:
        json.dump({"tau": tau, "rows": rows, "inputs": inputs, "prompts": list(prompts), "seeds": list(seeds),
                   "aggregate": aggregate, "std": "sample (n-1)", "branch": "conditional",
                   "gpu_measurements": recorder.gpu_measurements}, f, indent=1)
    return out
