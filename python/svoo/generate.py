"""Generate a video with a local diffusers pipeline, dense or with svoo, and compare it with a
reference video.

    python -m svoo.generate --model /models/Wan2.1-T2V-1.3B-Diffusers --prompt "a cat surfing" \\
        --svoo --preset wan2.1-t2v-1.3b --steps 50 --output svoo.mp4 --reference dense.mp4

Prints the generation time and, given --reference, PSNR and SSIM against it (frame means).
Model weights are read from the local folder only.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of two videos (same shape); inf when identical."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"videos differ in shape: {a.shape} vs {b.shape}")
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak * peak / mse))


def _blur(x: np.ndarray, sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    t = np.arange(-radius, radius + 1)
    g = np.exp(-t * t / (2 * sigma * sigma))
    g /= g.sum()
    x = np.apply_along_axis(lambda r: np.convolve(r, g, mode="valid"), -2, x)
    return np.apply_along_axis(lambda r: np.convolve(r, g, mode="valid"), -1, x)


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Mean structural similarity (Gaussian window 11, sigma 1.5) of two videos [frames, H, W, C]
    or images [H, W, C], computed per channel on the luminance scale of `peak`."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"videos differ in shape: {a.shape} vs {b.shape}")
    if a.ndim == 3:
        a, b = a[None], b[None]
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    a, b = np.moveaxis(a, -1, 1), np.moveaxis(b, -1, 1)  # [frames, C, H, W]
    mu_a, mu_b = _blur(a), _blur(b)
    saa, sbb, sab = _blur(a * a) - mu_a ** 2, _blur(b * b) - mu_b ** 2, _blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return float(s.mean())


def _frames_uint8(frames) -> np.ndarray:
    x = np.asarray(frames)
    return x if x.dtype == np.uint8 else np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m svoo.generate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="local diffusers model folder (Wan or HunyuanVideo)")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--negative-prompt", default=None)
    ap.add_argument("--svoo", action="store_true", help="sparse attention with svoo (default: dense)")
    ap.add_argument("--preset", default="wan2.1-t2v-1.3b")
    ap.add_argument("--profile", default=None, help="profile CSV for the per-head floors")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["bf16", "f16", "f32"], default="bf16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--fps", type=int, default=16)
    ap.add_argument("--output", required=True, help="MP4 to write")
    ap.add_argument("--reference", default=None, help="a video to compare with (PSNR, SSIM)")
    args = ap.parse_args(argv)

    import os

    if not os.path.isdir(args.model):
        print(f"svoo.generate: model folder {args.model!r} does not exist (weights are read locally only)",
              file=sys.stderr)
        return 1
    import torch
    from diffusers import DiffusionPipeline
    from diffusers.utils import export_to_video

    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    pipe = DiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype, local_files_only=True).to(args.device)
    if args.svoo:
        import svoo.diffusers
        svoo.diffusers.enable(pipe, preset=args.preset, profile=args.profile, num_inference_steps=args.steps)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    kwargs = dict(prompt=args.prompt, num_inference_steps=args.steps, num_frames=args.frames, height=args.height,
                  width=args.width, generator=generator)
    if args.negative_prompt is not None:
        kwargs["negative_prompt"] = args.negative_prompt
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    frames = pipe(**kwargs).frames[0]
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    export_to_video(frames, args.output, fps=args.fps)
    print(f"{'svoo' if args.svoo else 'dense'}: {seconds:.1f} s for {args.steps} steps; wrote {args.output}")
    if args.reference:
        import imageio.v3 as iio
        ref = iio.imread(args.reference)
        ours = _frames_uint8(frames)
        print(f"vs {args.reference}: PSNR {psnr(ours, ref):.2f} dB, SSIM {ssim(ours, ref):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
