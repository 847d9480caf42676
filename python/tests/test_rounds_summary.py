"""bench/rounds_summary.py on hand-made rounds whose summary is known."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "bench")))
import rounds_summary  # noqa: E402


def bench_rows(rates_ms):
    return [{"target_density": d, "effective_tflops": t, "sparse_ms": ms} for d, (t, ms) in rates_ms.items()]


def write(directory, name, rows):
    with open(os.path.join(directory, name), "w") as f:
        json.dump(rows, f)


def test_summary_against_cudnn_mean_and_base(tmp_path):
    d = str(tmp_path)
    # Two rounds; cuDNN 500 and 700 (mean 600). new: 540 and 540 at 10 % -> 90.0 % of the mean,
    # round by round 108.0 % and 77.1 %; its median time 1.0 ms against base's 1.25 ms: -20.0 %.
    write(d, "ab_base_1.json", bench_rows({0.1: (400.0, 1.2)}))
    write(d, "ab_base_2.json", bench_rows({0.1: (420.0, 1.3)}))
    write(d, "ab_new_1.json", bench_rows({0.1: (540.0, 1.0)}))
    write(d, "ab_new_2.json", bench_rows({0.1: (540.0, 1.0)}))
    write(d, "ab_dense_1.json", [{"backend": "CUDNN_ATTENTION", "tflops": 500.0}, {"backend": "FLASH_ATTENTION", "tflops": 300.0}])
    write(d, "ab_dense_2.json", [{"backend": "CUDNN_ATTENTION", "tflops": 700.0}])
    lines = rounds_summary.summarise(*rounds_summary.load_rounds(d))
    assert lines[0] == "cuDNN per round: 500.0 / 700.0, mean 600.0 TFLOP/s"
    new = lines[lines.index("new") + 1]
    assert "540.0-540.0 TFLOP/s, mean 540.0, median 1.000 ms" in new
    assert "90.0 % of cuDNN's mean, round by round 77.1-108.0 %" in new
    base = lines[lines.index("base") + 1]
    assert "68.3 % of cuDNN's mean" in base  # 410 / 600
    assert lines[-1] == "kernel time of new against base (medians): 0.10 -20.0 %"
    flipped = rounds_summary.summarise(*rounds_summary.load_rounds(d), base="new")
    assert flipped[-1] == "kernel time of base against new (medians): 0.10 +25.0 %"
    with pytest.raises(ValueError, match="--base old: no rounds of that binary"):
        rounds_summary.summarise(*rounds_summary.load_rounds(d), base="old")


def test_rounds_without_cudnn_and_bad_dense_file(tmp_path):
    d = str(tmp_path)
    write(d, "ab_only_1.json", bench_rows({0.2: (600.0, 2.0)}))
    lines = rounds_summary.summarise(*rounds_summary.load_rounds(d))
    assert lines == ["only", "  0.20: 600.0-600.0 TFLOP/s, mean 600.0, median 2.000 ms"]
    write(d, "ab_dense_1.json", [{"backend": "FLASH_ATTENTION", "tflops": 300.0}])
    with pytest.raises(ValueError, match="expected one cuDNN row"):
        rounds_summary.load_rounds(d)
    assert rounds_summary.main([str(tmp_path / "empty")]) == 1


def test_corrupt_or_incomplete_files_are_named(tmp_path):
    d = str(tmp_path)
    with open(os.path.join(d, "ab_cut_1.json"), "w") as f:
        f.write('[{"target_density": 0.1, ')  # a round killed mid-write
    with pytest.raises(ValueError, match=r"ab_cut_1\.json: not JSON"):
        rounds_summary.load_rounds(d)
    os.remove(os.path.join(d, "ab_cut_1.json"))
    write(d, "ab_old_1.json", [{"target_density": 0.1, "effective_tflops": 500.0}])
    with pytest.raises(ValueError, match=r"ab_old_1\.json: a row lacks sparse_ms"):
        rounds_summary.load_rounds(d)
    write(d, "ab_old_1.json", {"target_density": 0.1})
    with pytest.raises(ValueError, match="expected a list of result rows"):
        rounds_summary.load_rounds(d)
    assert rounds_summary.main([d]) == 1


def test_flash_attention_yardstick(tmp_path):
    # The portable kernel's target is FlashAttention-2's dense rate: 300 and 360 (mean 330); the
    # binary's 330 at 10 % is 100.0 % of it, round by round 91.7-110.0 %.
    d = str(tmp_path)
    write(d, "ab_sm80_1.json", bench_rows({0.1: (330.0, 1.0)}))
    write(d, "ab_sm80_2.json", bench_rows({0.1: (330.0, 1.0)}))
    write(d, "ab_dense_1.json", [{"backend": "CUDNN_ATTENTION", "tflops": 600.0}, {"backend": "FLASH_ATTENTION", "tflops": 300.0}])
    write(d, "ab_dense_2.json", [{"backend": "CUDNN_ATTENTION", "tflops": 600.0}, {"backend": "FLASH_ATTENTION", "tflops": 360.0}])
    lines = rounds_summary.summarise(*rounds_summary.load_rounds(d, "flash"))
    assert lines[0] == "FlashAttention-2 per round: 300.0 / 360.0, mean 330.0 TFLOP/s"
    assert "100.0 % of FlashAttention-2's mean, round by round 91.7-110.0 %" in lines[2]
    write(d, "ab_dense_2.json", [{"backend": "CUDNN_ATTENTION", "tflops": 600.0}])
    with pytest.raises(ValueError, match="expected one FlashAttention-2 row"):
        rounds_summary.load_rounds(d, "flash")


def test_unknown_yardstick_is_named(tmp_path):
    with pytest.raises(ValueError, match="yardstick 'sdpa': expected one of cudnn, flash"):
        rounds_summary.load_rounds(str(tmp_path), "sdpa")
