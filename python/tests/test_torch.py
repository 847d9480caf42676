"""svoo.torch: the custom ops against torch's own attention, their errors and torch.compile."""
import pytest

torch = pytest.importorskip("torch")
import svoo.torch as st  # noqa: E402


def reference(q, k, v, mask=None):
    s = torch.einsum("hnd,hmd->hnm", q.double(), k.double()) / q.shape[-1] ** 0.5
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.einsum("hnm,hmd->hnd", s.softmax(-1), v.double())


@pytest.fixture
def qkv():
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(2, 150, 32, generator=g) * 1.5 for _ in range(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dense_matches_reference(qkv, dtype):
    q, k, v = (x.to(dtype) for x in qkv)
    out = st.dense_attention(q, k, v)
    assert out.dtype == dtype and out.shape == q.shape
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.double(), reference(q, k, v), atol=tol, rtol=tol)


def test_plan_and_sparse_follow_the_mask(qkv):
    q, k, v = qkv
    ql, kl, keep = st.plan(q, k, torch.tensor([0.1, 0.2], dtype=torch.float64), kq=5, kk=10, top_p=0.5,
                           floor_lo=0.0, floor_hi=0.3)
    assert ql.dtype == torch.int32 and ql.shape == (2, 150) and keep.shape == (2, 5, 10)
    out = st.sparse_attention(q, k, v, ql, kl, keep)
    mask = torch.stack([keep[h][ql[h].long()][:, kl[h].long()].bool() for h in range(2)])
    torch.testing.assert_close(out.double(), reference(q, k, v, mask), atol=1e-5, rtol=1e-5)
    keep_all = torch.ones_like(keep)
    torch.testing.assert_close(st.sparse_attention(q, k, v, ql, kl, keep_all), st.dense_attention(q, k, v),
                               atol=1e-5, rtol=1e-5)


def test_plan_align_fills_query_clusters():
    g = torch.Generator().manual_seed(3)
    q, k = (torch.randn(2, 1200, 32, generator=g) for _ in range(2))
    prof = torch.tensor([0.1, 0.2], dtype=torch.float64)
    plain = st.plan(q, k, prof, kq=12, kk=24)
    aligned = st.plan(q, k, prof, kq=12, kk=24, align=32)

    def empty_rows(labels):
        sizes = torch.stack([torch.bincount(labels[h].long(), minlength=12) for h in range(2)])
        return int(((32 - sizes % 32) % 32).sum())

    assert empty_rows(aligned[0]) < empty_rows(plain[0])
    moved = (aligned[0] != plain[0]).float().mean().item()
    assert 0 < moved < 0.2
    assert torch.equal(aligned[1], plain[1])  # keys untouched
    with pytest.raises(Exception, match="align"):
        st.plan(q, k, prof, kq=12, kk=24, align=1000)


def test_torch_compile_traces_through_the_ops(qkv):
    q, k, v = qkv

    def step(q, k, v):
        ql, kl, keep = st.plan(q, k, torch.full((2,), 0.2, dtype=torch.float64), kq=4, kk=8)
        return st.sparse_attention(q * 1.0, k, v, ql, kl, keep) + st.dense_attention(q, k, v)

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), step(q, k, v))


def test_errors_name_the_problem(qkv):
    q, k, v = qkv
    with pytest.raises(ValueError, match="q must have shape"):
        st.dense_attention(q[0], k, v)
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        st.dense_attention(q.double(), k, v)
    with pytest.raises(ValueError, match="contiguous in head_dim"):
        st.dense_attention(q.transpose(1, 2), k, v)
    with pytest.raises(ValueError, match="one density per head"):
        st.plan(q, k, torch.tensor([0.1]), kq=4, kk=8)
    with pytest.raises(ValueError, match="NaN or infinite"):
        bad = q.clone()
        bad[0, 3, 1] = float("nan")
        st.dense_attention(bad, k, v)


def test_sparse_rejects_labels_that_do_not_fit(qkv):
    q, k, v = qkv
    ql, kl, keep = st.plan(q, k, torch.full((2,), 0.2, dtype=torch.float64), kq=4, kk=8)
    bad = ql.clone()
    bad[0, 5] = 4  # kq = 4
    with pytest.raises(ValueError, match="q_labels holds a label outside"):
        st.sparse_attention(q, k, v, bad, kl, keep)
    with pytest.raises(ValueError, match="same number of heads"):
        st.sparse_attention(q, k, v, ql, kl, keep[:1])
    with pytest.raises(ValueError, match="layout is for"):
        st.sparse_attention(q[:, :100], k, v, ql, kl, keep)
    with pytest.raises((TypeError, RuntimeError), match="Tensor"):  # torch's own op-schema check
        st.sparse_attention(q, k, v, ql.float().numpy(), kl, keep)


def test_cuda_requirements_are_checked_before_the_kernels(qkv):
    # The CUDA path's argument checks are plain Python: exercised here on CPU tensors.
    q = torch.zeros(2, 64, 128, dtype=torch.bfloat16)
    st._check_cuda(q, q, q)  # what the kernels take
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        st._check_cuda(q.float(), q, q)
    with pytest.raises(ValueError, match="head_dim 128"):
        st._check_cuda(q[..., :64], q[..., :64], q[..., :64])
    with pytest.raises(ValueError, match="16-byte boundaries"):
        big = torch.zeros(2, 64, 130, dtype=torch.bfloat16)[..., 1:129]  # rows 2 bytes off
        st._check_cuda(big, q, q)
    with pytest.raises(ValueError, match="share one dtype"):
        st._check_cuda(q, q.half(), q)
    with pytest.raises(ValueError, match="same number of heads"):
        st._check_cuda(q, q[:1], q[:1])
    with pytest.raises(ValueError, match="v must have k's shape"):
        st._check_cuda(q, q, q[:, :10])
    # [B, S, H, D] activations as [H, S, D] views pass without a copy
    act = torch.zeros(1, 64, 4, 128, dtype=torch.bfloat16)
    st._check_cuda(*(act[0].transpose(0, 1),) * 3)


def test_profiled_must_be_a_tensor(qkv):
    q, k, v = qkv
    with pytest.raises((ValueError, TypeError, RuntimeError)):  # torch's op-schema check
        st.plan(q, k, [0.1, 0.2], kq=4, kk=8)


def test_planner_cache_needs_a_cuda_build():
    import svoo
    if svoo.has_cuda:
        pytest.skip("CUDA build: planner() is exercised by python/tests/gpu/check_cuda.py on a GPU")
    with pytest.raises(NotImplementedError, match="without the CUDA backend"):
        st.planner("cuda:0", 2, 128, 128, 4, 8)


def test_gpu_density_rejects_host_tensors():
    # the GPU tau-density binding refuses tensors that are not on a CUDA device, before any CUDA call
    import svoo
    from svoo import _svoo
    if not svoo.has_cuda:
        pytest.skip("a build without the CUDA backend has no GPU density")
    q = torch.zeros(2, 64, 128, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="CUDA tensors"):
        _svoo.cuda_tau_density(q, q, 0.95, 0, 0, 0)
