"""svoo in diffusers pipelines: `enable(pipe, preset=...)` replaces the video self-attention of
WanTransformer3DModel (Wan2.1; both experts of Wan2.2) by svoo's sparse attention, applying the
released warm-up, dense-layer and reuse rules with one clustering cache per CFG branch, and
`disable(pipe)` restores the original processors. Cross-attention stays dense.

The step and the CFG branch are learned from the calls: a new `timestep` starts a new step, and
the calls within one step are the branches in order (conditional first, as the Wan pipelines
call them). Current limits: the sparse path runs on CPU tensors (GPU tensors run dense through
torch until the GPU plan is wired in here), and HunyuanVideo's joint attention is not handled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

import svoo

from . import _svoo

__all__ = ["enable", "disable", "SvooState"]


@dataclass
class SvooState:
    """Shared by every layer of every expert of one pipeline."""
    controller: Any
    preset: dict
    options: dict
    step: int = 0
    branch: int = -1
    last_timestep: Optional[float] = None
    cache: Dict[Tuple[int, int, int, int], Tuple[int, Any]] = field(default_factory=dict)
    log: List[Tuple[int, int, int, int, str]] = field(default_factory=list)  # (step, branch, expert, layer, mode)

    def on_transformer_call(self, timestep: torch.Tensor) -> None:
        t = float(timestep.flatten()[0]) if torch.is_tensor(timestep) else float(timestep)
        if self.last_timestep is None or t != self.last_timestep:
            self.step += 1
            self.branch = 0
            self.last_timestep = t
        else:
            self.branch += 1

    def last_scheduled(self) -> int:
        w = self.controller.warmup_steps
        r = self.options["reuse_interval"]
        return w + 1 + max(0, (self.step - (w + 1)) // r) * r


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
        cached = all(k in st.cache and st.last_scheduled() <= st.cache[k][0] <= step for k in keys)
        mode, density = st.controller.decide(step, self.layer, branch, self.expert, cached)
        if mode != "dense" and query.device.type != "cpu":
            mode = "dense"  # the GPU plan is not wired into this integration yet
        st.log.append((step, branch, self.expert, self.layer, mode))
        if mode == "dense":
            out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
            out = out.transpose(1, 2)
        else:
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


def _transformers(pipe_or_model) -> List[torch.nn.Module]:
    if hasattr(pipe_or_model, "blocks"):
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
           reuse_interval: Optional[int] = None) -> SvooState:
    """Makes the video self-attention of `pipe` (or of one WanTransformer3DModel) sparse.
    `profile`: a profile CSV path, or None for the preset's fallback density. Unset options take
    the preset's released defaults; `num_inference_steps` rescales the warm-up to the steps you
    run. Returns the shared state (its `log` records every decision)."""
    d = svoo.preset(preset)
    models = _transformers(pipe)
    cfg = models[0].config
    controller = _svoo.Controller(preset, steps=num_inference_steps, profile=profile, warmup_steps=warmup_steps,
                                  dense_layers=dense_layers, reuse_interval=reuse_interval,
                                  layers=len(models[0].blocks), heads=cfg.num_attention_heads)
    plan_opts = {k: v for k, v in dict(kq=kq, kk=kk, top_p=top_p, floor_lo=floor_lo, floor_hi=floor_hi).items()
                 if v is not None}
    state = SvooState(controller, d, {"reuse_interval": reuse_interval or d["reuse_interval"], "plan": plan_opts})
    for expert, model in enumerate(models):
        if getattr(model, "_svoo_state", None) is not None:
            raise ValueError("svoo is already enabled on this model; call svoo.diffusers.disable first")
        for layer, block in enumerate(model.blocks):
            block.attn1.set_processor(SvooWanSelfAttnProcessor(state, layer, expert, block.attn1.processor))
        model._svoo_hook = model.register_forward_pre_hook(
            lambda module, args, kwargs: state.on_transformer_call(kwargs.get("timestep", args[1] if len(args) > 1 else 0)),
            with_kwargs=True)
        model._svoo_state = state
    return state


def disable(pipe) -> None:
    """Restores the processors `enable` replaced."""
    for model in _transformers(pipe):
        if getattr(model, "_svoo_state", None) is None:
            continue
        for block in model.blocks:
            proc = block.attn1.processor
            if isinstance(proc, SvooWanSelfAttnProcessor):
                block.attn1.set_processor(proc.original)
        model._svoo_hook.remove()
        model._svoo_state = None
