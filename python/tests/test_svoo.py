"""Tests of the Python package on the CPU (numpy arrays through DLPack)."""
import math

import numpy as np
import pytest

import svoo


def attention_reference(q, k, v, mask=None):
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    s = np.einsum("hnd,hmd->hnm", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("hnm,hmd->hnd", p, v)


@pytest.fixture
def qkv():
    rng = np.random.default_rng(0)
    return tuple((rng.standard_normal((3, 200, 32)) * 1.5).astype(np.float32) for _ in range(3))


def test_dense_attention_matches_reference(qkv):
    q, k, v = qkv
    out = svoo.dense_attention(q, k, v)
    assert out.shape == q.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, attention_reference(q, k, v), rtol=1e-4, atol=1e-5)


def test_sparse_attention_follows_the_plan(qkv):
    q, k, v = qkv
    plan = svoo.plan(q, k, profiled=[0.1, 0.2, 0.3], kq=6, kk=12, top_p=0.5, floor_lo=0.0, floor_hi=0.3)
    out = svoo.sparse_attention(q, k, v, plan)
    ql, kl, keep = plan.q_labels, plan.k_labels, plan.keep
    mask = np.stack([keep[h][ql[h]][:, kl[h]] for h in range(3)]).astype(bool)
    np.testing.assert_allclose(out, attention_reference(q, k, v, mask), rtol=1e-4, atol=1e-5)
    density = plan.block_density
    assert all(0 < d < 1 for d in density)
    recall = attention_recall(q, k, plan)
    assert all(0 < r <= 1 for r in recall)


def attention_recall(q, k, plan):
    return svoo.attention_recall(q, k, plan, rows=0)


def test_keeping_everything_equals_dense(qkv):
    q, k, v = qkv
    plan = svoo.plan(q, k, profiled=[1.0] * 3, kq=4, kk=8, top_p=1.0, floor_lo=1.0, floor_hi=1.0)
    assert plan.block_density == pytest.approx([1.0] * 3)
    np.testing.assert_allclose(svoo.sparse_attention(q, k, v, plan), svoo.dense_attention(q, k, v), atol=1e-5)


def test_reuse_keeps_the_clustering(qkv):
    q, k, v = qkv
    first = svoo.plan(q, k, profiled=[0.1] * 3, kq=4, kk=8)
    again = svoo.plan(q * 1.01, k, profiled=[0.1] * 3, kq=4, kk=8, reuse=first)
    np.testing.assert_array_equal(first.k_labels, again.k_labels)


def test_float16_inputs_and_strided_views(qkv):
    q, k, v = (x.astype(np.float16) for x in qkv)
    out = svoo.dense_attention(q, k, v)
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), attention_reference(q, k, v), rtol=2e-2, atol=2e-2)
    # [tokens, heads, dim] storage viewed as [heads, tokens, dim]: read in place
    qt = np.ascontiguousarray(qkv[0].transpose(1, 0, 2)).transpose(1, 0, 2)
    np.testing.assert_allclose(svoo.dense_attention(qt, *qkv[1:]), svoo.dense_attention(*qkv), atol=1e-6)


def test_errors_name_the_problem(qkv):
    q, k, v = qkv
    with pytest.raises(ValueError, match="same number of heads"):
        svoo.dense_attention(q, k[:2], v[:2])
    with pytest.raises(ValueError, match="NaN or infinite"):
        bad = q.copy()
        bad[1, 7, 3] = np.nan
        svoo.dense_attention(bad, k, v)
    with pytest.raises(ValueError, match="unsupported dtype"):
        svoo.dense_attention(q.astype(np.float64), k, v)
    with pytest.raises(ValueError, match="one profiled density per head"):
        svoo.plan(q, k, profiled=[0.1], kq=4, kk=8)
    with pytest.raises(ValueError, match="unknown preset"):
        svoo.plan(q, k, profiled=[0.1] * 3, preset="nope")
    with pytest.raises(OSError):
        svoo.load_profile("/nonexistent/profile.csv")


def test_presets_and_profiles(tmp_path):
    names = [p["name"] for p in svoo.presets()]
    assert "wan2.1-t2v-1.3b" in names and len(names) == 7
    assert svoo.preset("wan2.1-t2v-14b")["layers"] == 40
    path = tmp_path / "p.csv"
    path.write_text("Step,Layer,Head,Sparsity\n1,0,0,0.25\n2,1,1,0.5\n")
    d = svoo.load_profile(str(path))
    assert d.shape == (2, 2, 2)
    assert d[0, 0, 0] == 0.25 and d[1, 1, 1] == 0.5 and math.isnan(d[0, 1, 0])


def test_tau_density_is_a_fraction(qkv):
    q, k, _ = qkv
    d = svoo.tau_density(q, k, tau=0.95)
    assert len(d) == 3 and all(0 < x <= 1 for x in d)


def test_save_profile_writes_statistics(tmp_path):
    path = str(tmp_path / "p.csv")
    svoo._svoo.save_profile(path, [(1, 0, 0, [0.1, 0.3]), (2, 0, 1, [0.2])], "max")
    lines = open(path).read().splitlines()
    assert lines[0] == "Step,Layer,Head,Sparsity,Count,Mean,Std,Min,Max"
    step, layer, head, value, count, mean, std, lo, hi = lines[1].split(",")
    assert (value, count, float(mean), lo, hi) == ("0.3", "2", 0.2, "0.1", "0.3")
    assert float(std) == pytest.approx(0.1414213562, rel=1e-6)  # sample std
    with pytest.raises(ValueError, match="aggregate"):
        svoo._svoo.save_profile(path, [(1, 0, 0, [0.1])], "median")
    with pytest.raises(ValueError, match="density"):
        svoo._svoo.save_profile(path, [(1, 0, 0, [1.5])], "max")
