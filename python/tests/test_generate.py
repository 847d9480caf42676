"""svoo.generate: the quality measures and the command's errors (no model weights here)."""
import numpy as np
import pytest

from svoo.generate import main, psnr, ssim


def test_psnr_known_values():
    a = np.zeros((2, 8, 8, 3))
    assert psnr(a, a) == float("inf")
    b = a + 255.0 / 10  # mse = 25.5^2 -> 20 dB
    assert psnr(a, b) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(a, a[:1])


def test_ssim_is_one_for_identical_and_drops_with_noise():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, size=(2, 32, 32, 3)).astype(np.float64)
    assert ssim(video, video) == pytest.approx(1.0)
    noisy = np.clip(video + rng.normal(0, 40, video.shape), 0, 255)
    worse = np.clip(video + rng.normal(0, 120, video.shape), 0, 255)
    assert 0 < ssim(video, worse) < ssim(video, noisy) < 1


def test_missing_model_folder_is_a_clear_error(capsys, tmp_path):
    code = main(["--model", str(tmp_path / "nope"), "--prompt", "x", "--output", str(tmp_path / "o.mp4")])
    assert code == 1
    assert "does not exist" in capsys.readouterr().err
