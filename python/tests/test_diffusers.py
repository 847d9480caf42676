"""svoo.diffusers on a tiny random-weight WanTransformer3DModel (no download), on the CPU."""
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from diffusers import WanTransformer3DModel  # noqa: E402

import svoo.diffusers as sd  # noqa: E402


def tiny_wan(layers=3):
    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=4,
                                 out_channels=4, text_dim=16, freq_dim=16, ffn_dim=64, num_layers=layers,
                                 rope_max_seq_len=64).eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    return dict(hidden_states=torch.randn(1, 4, 3, 12, 12, generator=g),  # 3 x 6 x 6 = 108 tokens
                encoder_hidden_states=torch.randn(1, 5, 16, generator=g))


def run(model, x, timestep):
    with torch.no_grad():
        return model(timestep=torch.tensor([timestep]), return_dict=False, **x)[0]


def test_keeping_every_cluster_equals_the_original_model():
    model, x = tiny_wan(), inputs()
    ref = run(model, x, 900)
    state = sd.enable(model, preset="wan2.1-t2v-1.3b", num_inference_steps=4, warmup_steps=0, kq=4, kk=12,
                      top_p=1.0, floor_lo=1.0, floor_hi=1.0)
    out = run(model, x, 900)
    assert {m for *_, m in state.log} == {"recluster"}
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    sd.disable(model)


def test_schedule_warmup_reuse_and_branches():
    model, x = tiny_wan(layers=2), inputs()
    originals = [b.attn1.processor for b in model.blocks]
    state = sd.enable(model, preset="wan2.1-t2v-1.3b", num_inference_steps=10, kq=4, kk=12, reuse_interval=3)
    assert state.controller.warmup_steps == 2  # floor(0.2 * 10)
    for step in range(10):
        t = 1000 - 100 * step
        cond = run(model, x, t)
        x_uncond = dict(x, encoder_hidden_states=torch.zeros_like(x["encoder_hidden_states"]))
        uncond = run(model, x_uncond, t)
        assert torch.isfinite(cond).all() and torch.isfinite(uncond).all()
    modes = {(s, b, layer): m for s, b, e, layer, m in state.log}
    for b in (0, 1):
        for layer in (0, 1):
            got = [modes[(s, b, layer)] for s in range(1, 11)]
            # dense warm-up (2 steps), recluster at 3, 6, 9, reuse in between, for each branch
            assert got == ["dense", "dense", "recluster", "reuse", "reuse", "recluster", "reuse", "reuse",
                           "recluster", "reuse"], (b, layer, got)
    # one cache per branch: the unconditional pass did not overwrite the conditional clustering
    assert (0, 0, 0, 0) in state.cache and (1, 0, 0, 0) in state.cache
    assert state.cache[(0, 0, 0, 0)][1] is not state.cache[(1, 0, 0, 0)][1]
    sd.disable(model)
    assert [b.attn1.processor for b in model.blocks] == originals
    assert not any(isinstance(b.attn2.processor, sd.SvooWanSelfAttnProcessor) for b in model.blocks)


def test_set_step_drives_the_schedule_without_reading_the_timestep():
    model, x = tiny_wan(layers=1), inputs()
    with pytest.raises(ValueError, match="not enabled"):
        sd.set_step(model, 1)
    state = sd.enable(model, preset="wan2.1-t2v-1.3b", num_inference_steps=10, kq=4, kk=12, reuse_interval=3)
    x_uncond = dict(x, encoder_hidden_states=torch.zeros_like(x["encoder_hidden_states"]))
    # the timestep stays the same: only set_step moves the step (as inside a CUDA graph capture)
    for step in (1, 3, 4, 6):
        sd.set_step(model, step)
        run(model, x, 500)
        run(model, x_uncond, 500)
    got = [(s, b, m) for s, b, e, layer, m in state.log]
    assert got == [(1, 0, "dense"), (1, 1, "dense"), (3, 0, "recluster"), (3, 1, "recluster"), (4, 0, "reuse"),
                   (4, 1, "reuse"), (6, 0, "recluster"), (6, 1, "recluster")], got
    with pytest.raises(ValueError, match="1-based"):
        sd.set_step(model, 0)
    sd.set_step(model, None)  # back to learning the step from the timestep: a new timestep, a new step
    run(model, x, 400)
    assert state.log[-1][:2] == (7, 0)
    sd.disable(model)


def test_sparse_output_is_close_to_dense_and_errors_are_clear():
    model, x = tiny_wan(), inputs()
    ref = run(model, x, 500)
    state = sd.enable(model, preset="wan2.1-t2v-14b", num_inference_steps=2, warmup_steps=0, dense_layers=0, kq=4,
                      kk=12, align_queries=0)  # the spec's clustering exactly
    assert "align" not in state.options["plan"] and state.options["gpu"]["align"] == 0
    out = run(model, x, 500)
    rel = ((out - ref).norm() / ref.norm()).item()
    assert 0 < rel < 0.5
    with pytest.raises(ValueError, match="already enabled"):
        sd.enable(model)
    sd.disable(model)
    with pytest.raises(ValueError, match="unknown preset"):
        sd.enable(model, preset="nope")
    with pytest.raises(ValueError, match="dense_kernel must be"):
        sd.enable(model, dense_kernel="cudnn")
    with pytest.raises(ValueError, match="align_queries must be"):
        sd.enable(model, align_queries=1)
    with pytest.raises(ValueError, match="clustering_cache must be"):
        sd.enable(model, clustering_cache="disk")
    # Aligned query clusters: still close to dense, and not the same plan as without.
    state = sd.enable(model, preset="wan2.1-t2v-14b", num_inference_steps=2, warmup_steps=0, dense_layers=0, kq=4,
                      kk=12, align_queries=16)
    aligned = run(model, x, 500)
    assert 0 < ((aligned - ref).norm() / ref.norm()).item() < 0.5
    assert state.options["plan"]["align"] == 16 and state.options["gpu"]["align"] == 16
    sd.disable(model)
    # The default aligns to the sparse kernel's 128-row items.
    state = sd.enable(model, preset="wan2.1-t2v-14b", num_inference_steps=2, warmup_steps=0, dense_layers=0, kq=4,
                      kk=12)
    assert state.options["plan"]["align"] == 128 and state.options["gpu"]["align"] == 128
    assert 0 < ((run(model, x, 500) - ref).norm() / ref.norm()).item() < 0.5
    sd.disable(model)


def test_dense_calls_on_cpu_stay_on_sdpa():
    # svoo's dense kernel takes Wan's dense calls only on CUDA bf16/f16 activations of head_dim 128
    # (and, with "auto", on compute capability 9.0); a CPU model's warm-up equals the original.
    model, x = tiny_wan(layers=1), inputs()
    ref = run(model, x, 900)
    state = sd.enable(model, num_inference_steps=2, warmup_steps=1, dense_kernel="svoo")
    assert not state.dense_on_svoo(torch.zeros(1, 4, 2, 128))
    out = run(model, x, 900)
    sd.disable(model)
    assert torch.equal(out, ref)


def test_dense_kernel_takes_only_rows_it_can_address():
    # Layouts the CUDA kernels cannot address (misaligned data, odd strides) stay on SDPA.
    base = torch.zeros(2, 4, 2, 128 + 8)
    assert sd._rows_aligned(torch.zeros(2, 4, 2, 128))
    assert sd._rows_aligned(base[..., :128])                     # row pitch 136: a multiple of 8
    assert not sd._rows_aligned(base[..., 1:129])                # data 4 bytes past a 16-byte boundary
    assert not sd._rows_aligned(torch.zeros(2, 4, 2, 131)[..., :128])  # strides not multiples of 8
    assert not sd._rows_aligned(torch.zeros(2, 4, 128, 2).transpose(-1, -2))  # not contiguous in head_dim


def test_sparse_cuda_path_copies_rows_it_cannot_address():
    # The CUDA sparse path hands the kernels [H, S, D] views; one they cannot address is copied.
    base = torch.randn(4, 2, 128 + 8)
    good = base[..., :128]
    assert sd._addressable(good) is good                           # addressable: the view itself
    for bad in (base[..., 1:129], torch.randn(4, 2, 131)[..., :128], torch.randn(4, 128, 2).transpose(-1, -2)):
        fixed = sd._addressable(bad)
        assert fixed is not bad and sd._rows_aligned(fixed) and torch.equal(fixed, bad)


class _FakePlanner:
    """The part of svoo.CudaPlanner the clustering cache calls, on CPU tensors: its clustering is
    a byte string that save/load copy."""

    def __init__(self, nbytes=64):
        self.clustering_bytes, self.state = nbytes, torch.zeros(nbytes, dtype=torch.uint8)

    def save_clustering(self, buf, stream):
        torch.from_dlpack(buf).copy_(self.state)

    def load_clustering(self, buf, stream):
        self.state.copy_(torch.from_dlpack(buf))


def test_clustering_cache_keeps_each_slot_and_its_step():
    from svoo.clustering_cache import ClusteringCache
    with pytest.raises(ValueError, match="clustering_cache must be one of"):
        ClusteringCache("disk")
    cache, p, cpu = ClusteringCache("device"), _FakePlanner(), torch.device("cpu")
    shape = (2, 108, 108, 4, 12)
    for slot, fill in (("a", 1), ("b", 2)):
        p.state.fill_(fill)
        cache.save(slot, 3, p, shape, cpu, 0)
    p.state.fill_(5)
    cache.save("a", 6, p, shape, cpu, 0)  # a recluster overwrites its slot in place
    assert cache.step_of("a") == 6 and cache.step_of("b") == 3 and cache.step_of("c") is None
    assert cache.usable("a", shape) and not cache.usable("a", (2, 108, 108, 4, 16)) and not cache.usable("c", shape)
    cache.load("b", p, cpu, 0)
    assert torch.equal(p.state, torch.full((64,), 2, dtype=torch.uint8))
    cache.load("a", p, cpu, 0)
    assert torch.equal(p.state, torch.full((64,), 5, dtype=torch.uint8))
    assert len(cache.entries) == 2 and cache.host_bytes() == 128 and cache.device_bytes() == 0  # CPU tensors here


def tiny_hunyuan():
    from diffusers import HunyuanVideoTransformer3DModel
    torch.manual_seed(0)
    return HunyuanVideoTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=32,
                                          num_layers=1, num_single_layers=2, num_refiner_layers=1, mlp_ratio=2.0,
                                          patch_size=2, patch_size_t=1, qk_norm="rms_norm", guidance_embeds=True,
                                          text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(8, 12, 12)).eval()


def hunyuan_inputs():
    g = torch.Generator().manual_seed(2)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])  # 4 prompt slots, 2 padding
    return dict(hidden_states=torch.randn(1, 4, 3, 12, 12, generator=g), encoder_hidden_states=torch.randn(1, 6, 16, generator=g),
                encoder_attention_mask=mask, pooled_projections=torch.randn(1, 8, generator=g),
                guidance=torch.tensor([3.5]))


def test_hunyuan_joint_attention_with_text_pseudo_clusters():
    model, x = tiny_hunyuan(), hunyuan_inputs()
    ref = run(model, x, 900)
    state = sd.enable(model, preset="hunyuan-t2v", num_inference_steps=4, warmup_steps=0, dense_layers=0, kq=4,
                      kk=12, top_p=1.0, floor_lo=1.0, floor_hi=1.0)
    out = run(model, x, 900)
    # every video cluster kept: only the padding slots' own outputs change, which no video token sees
    assert {m for *_, m in state.log} == {"recluster"} and len(state.log) == 3  # 1 double + 2 single blocks
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    sd.disable(model)
    sd.enable(model, preset="hunyuan-t2v", num_inference_steps=4, warmup_steps=0, dense_layers=0, kq=4, kk=12)
    sparse = run(model, x, 900)
    rel = ((sparse - ref).norm() / ref.norm()).item()
    assert torch.isfinite(sparse).all() and 0 < rel < 0.5
    sd.disable(model)
    torch.testing.assert_close(run(model, x, 900), ref)


class TinyPipeline:
    """Stands in for WanPipeline: a few denoising steps, conditional and unconditional calls."""

    def __init__(self, model, steps=3):
        self.transformer, self.steps = model, steps

    def __call__(self, prompt, generator, num_inference_steps=None):
        g = torch.Generator().manual_seed(hash(prompt) % 1000 + int(generator.initial_seed()))
        x = dict(hidden_states=torch.randn(1, 4, 3, 12, 12, generator=g), encoder_hidden_states=torch.randn(1, 5, 16, generator=g))
        for step in range(num_inference_steps or self.steps):
            t = 1000 - 300 * step
            run(self.transformer, x, t)
            run(self.transformer, dict(x, encoder_hidden_states=torch.zeros_like(x["encoder_hidden_states"])), t)


def test_profile_from_a_pipeline(tmp_path):
    import svoo
    model = tiny_wan(layers=2)
    ref = run(model, inputs(), 100)
    out = sd.profile(TinyPipeline(model), prompts=["a", "b"], seeds=[0, 1], out=str(tmp_path / "p.csv"), rows=0,
                     num_inference_steps=3)
    d = svoo.load_profile(out)
    assert d.shape == (3, 2, 2) and ((d > 0) & (d <= 1)).all()
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "Step,Layer,Head,Sparsity,Count,Mean,Std,Min,Max"
    assert all(line.split(",")[4] == "4" for line in lines[1:])  # 2 prompts x 2 seeds
    # the processors are restored: the model computes what it did before
    torch.testing.assert_close(run(model, inputs(), 100), ref)
    with pytest.raises(ValueError, match="aggregate"):
        sd.profile(TinyPipeline(model), ["a"], [0], str(tmp_path / "q.csv"), aggregate="median")


def test_gpu_fallbacks_are_explicit_and_warned_once():
    import warnings
    model = tiny_wan(layers=1)
    state = sd.enable(model, num_inference_steps=4, warmup_steps=0, kq=4, kk=12)
    assert state.options["gpu"]["kq"] == 4 and state.options["gpu"]["kk"] == 12
    assert state.options["gpu"]["top_p"] == 0.9 and state.options["gpu"]["iterations"] == 2  # the preset's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reason = state.gpu_unsupported(torch.empty(1, 8, 2, 128, device="meta"))
        assert state.gpu_unsupported(torch.empty(1, 8, 2, 128, device="meta")) == reason
    assert "not meta" in reason and len(caught) == 1 and "run dense" in str(caught[0].message)
    if torch.cuda.is_available():
        assert "float16/bfloat16" in state.gpu_unsupported(torch.empty(1, 8, 2, 128, device="cuda"))
    # the per-head densities become one device tensor per distinct value
    a = state.device_density([0.1, 0.2], "cpu")
    assert a.dtype == torch.float64 and a.tolist() == [0.1, 0.2] and state.device_density((0.1, 0.2), "cpu") is a
    sd.disable(model)


def read_safetensors(path):
    import json
    import struct
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    dtypes = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        buf = bytearray(raw[8 + n + a:8 + n + b])
        out[name] = torch.frombuffer(buf, dtype=dtypes[h["dtype"]]).reshape(h["shape"])
    return out, meta


def test_profile_captures_qk_in_the_capture_format(tmp_path):
    model = tiny_wan(layers=2)
    cap = tmp_path / "cap"
    out = sd.profile(TinyPipeline(model), prompts=["a", "b"], seeds=[3], out=None, capture=[(1, 0), (2, 1)],
                     capture_path=str(cap), num_inference_steps=2)
    assert out is None
    files = sorted(p.name for p in cap.iterdir())
    assert files == ["p0_s3.safetensors", "p1_s3.safetensors"]
    tensors, meta = read_safetensors(cap / "p0_s3.safetensors")
    assert sorted(tensors) == ["k.s1.l0", "k.s2.l1", "q.s1.l0", "q.s2.l1"]
    assert meta == {"model": "WanTransformer3DModel"}
    assert all(t.shape == (2, 108, 32) and t.dtype == torch.float32 for t in tensors.values())
    # Q as attention reads it: QK-norm and RoPE applied (RMS-normed rows, not the raw projection)
    assert torch.isfinite(tensors["q.s1.l0"]).all() and tensors["q.s1.l0"].std() > 0
    # densities and capture in one pass
    csv = sd.profile(TinyPipeline(model), ["a"], [0], str(tmp_path / "p.csv"), rows=0, capture=[(1, 1)],
                     capture_path=str(cap), num_inference_steps=2)
    assert csv.endswith("p.csv") and (cap / "p0_s0.safetensors").exists()


def test_capture_errors_are_clear(tmp_path):
    model = tiny_wan(layers=2)
    with pytest.raises(ValueError, match="capture_path"):
        sd.profile(TinyPipeline(model), ["a"], [0], None, capture=[(1, 0)])
    with pytest.raises(ValueError, match="1-based"):
        sd.profile(TinyPipeline(model), ["a"], [0], None, capture=[(0, 0)], capture_path=str(tmp_path))
    with pytest.raises(ValueError, match="out"):
        sd.profile(TinyPipeline(model), ["a"], [0], None)
    with pytest.raises(ValueError, match="did not occur"):
        sd.profile(TinyPipeline(model), ["a"], [0], None, capture=[(9, 0)], capture_path=str(tmp_path),
                   num_inference_steps=2)
    with pytest.raises(ValueError, match="bfloat16, float16 or float32"):
        sd.save_capture(str(tmp_path / "x.safetensors"), {"q.s1.l0": torch.zeros(1, 2, 2, dtype=torch.float64)})


def test_enabled_model_under_torch_compile_matches_eager():
    # The processors' host-side decisions run between compiled graphs (graph breaks); the
    # decisions and the outputs must be those of eager mode.
    steps = [1000, 900, 800]  # dense warm-up, recluster, reuse
    model, x = tiny_wan(layers=2), inputs()
    opts = dict(preset="wan2.1-t2v-1.3b", num_inference_steps=3, warmup_steps=1, kq=4, kk=12, reuse_interval=2)
    state = sd.enable(model, **opts)
    eager = [run(model, x, t) for t in steps]
    eager_log = list(state.log)
    sd.disable(model)
    state = sd.enable(model, **opts)
    compiled = torch.compile(model)
    for t, ref in zip(steps, eager):
        with torch.no_grad():
            out = compiled(timestep=torch.tensor([t]), return_dict=False, **x)[0]
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert list(state.log) == eager_log
    assert {m for *_, m in eager_log} == {"dense", "recluster", "reuse"}
    sd.disable(model)
