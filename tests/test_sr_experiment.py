"""Tests of the super-resolution experiment (thesislib.experiments.super_resolution): tiny models, tiny images."""

from __future__ import annotations

import pytest
import torch

from thesislib.data.sr import SRImages, SRPatches, bicubic_lr
from thesislib.metrics import psnr, ssim
from thesislib.models import edsr
from thesislib.experiments.super_resolution import METHODS as SR_METHODS
from thesislib.experiments.super_resolution import SETTINGS as SR_SETTINGS
from thesislib.experiments.super_resolution import (Bicubic, center_crop, compress, compress_all, eval_pairs,
                                                    evaluate_sr, quantize, summary_rows, train_sr)
from thesislib.experiments.super_resolution import settings as sr_settings
from thesislib.results import ratio_key


def _photo(seed: int, size: int = 48) -> torch.Tensor:
    """A smooth random RGB image (low-resolution noise upsampled), so SR is learnable."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size // 8, size // 8, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
    return quantize(smooth)  # on 8-bit levels, like a decoded photo


def _tiny_edsr(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return edsr(scale=2, n_feats=8, n_blocks=1)


def test_settings_cover_every_scale_and_reject_unknown() -> None:
    assert set(SR_SETTINGS) == {"smoke", "cpu", "gpu"}
    assert sr_settings("cpu").upscale == 2
    with pytest.raises(ValueError, match="smoke"):
        sr_settings("huge")


def test_center_crop_is_central_and_bounded() -> None:
    x = torch.arange(6 * 8.0).view(1, 6, 8)
    crop = center_crop(x, 4)
    assert crop.shape == (1, 4, 4)
    assert torch.equal(crop, x[:, 1:5, 2:6])
    assert torch.equal(center_crop(x, 100), x)
    assert center_crop(x, None) is x
    with pytest.raises(ValueError, match="positive int"):
        center_crop(x, 0)


def test_eval_pairs_are_cropped_test_photos() -> None:
    pairs = eval_pairs(2, 40, 2)
    assert len(pairs) == 2
    lr, hr = pairs[0]
    assert hr.shape == (3, 40, 40) and lr.shape == (3, 20, 20)
    with pytest.raises(ValueError, match="n_test"):
        eval_pairs(2, 40, 9)


def test_training_lowers_the_loss_and_is_deterministic() -> None:
    patches = SRPatches([_photo(i) for i in range(3)], 2, 16, 16, seed=0)
    runs = []
    for _ in range(2):
        model = _tiny_edsr()
        runs.append(train_sr(model, patches, steps=60, batch_size=8, lr=3e-3, seed=0))
    losses = runs[0]
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    assert runs[0] == runs[1]
    with pytest.raises(ValueError, match="steps"):
        train_sr(_tiny_edsr(), patches, steps=0, batch_size=8)


def test_evaluation_equals_metrics_on_y_with_border_crop() -> None:
    hr = _photo(7, 40)
    pairs = SRImages([hr], 2)
    lr, hr = pairs[0]
    got = evaluate_sr(Bicubic(2), pairs, 2)
    up = quantize(torch.nn.functional.interpolate(lr[None], scale_factor=2, mode="bicubic", align_corners=False)[0])
    assert got["psnr"] == pytest.approx(psnr(up, hr, crop=2, y_channel=True), abs=1e-12)
    assert got["ssim"] == pytest.approx(ssim(up, hr, crop=2, y_channel=True), abs=1e-12)
    # the crop matters: a model that breaks only the border is not penalised
    class BorderBroken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = hr[None].clone()
            out[..., :2, :] = 0
            return out

    assert evaluate_sr(BorderBroken(), pairs, 2)["psnr"] == float("inf")
    with pytest.raises(ValueError, match="does not match"):
        evaluate_sr(Bicubic(3), pairs, 2)


def test_quantize_gives_8_bit_levels() -> None:
    q = quantize(torch.tensor([-0.2, 0.5, 0.3001, 1.7]))
    assert torch.equal(q * 255, (q * 255).round())
    assert q.min() >= 0 and q.max() <= 1


def test_compress_full_width_keeps_the_function() -> None:
    model = _tiny_edsr().eval()
    x = bicubic_lr(_photo(3, 32), 2)[None]
    for method in SR_METHODS:
        small = compress(model, method, 1.0, x)
        assert torch.allclose(small(x), model(x), atol=1e-4), method
    with pytest.raises(ValueError, match="continuous_naive"):
        compress(model, "magic", 0.5, x)


def test_antialias_choice_changes_the_continuous_result() -> None:
    model = _tiny_edsr().eval()
    x = bicubic_lr(_photo(4, 32), 2)[None]
    a = compress(model, "continuous", 0.5, x)(x)
    b = compress(model, "continuous_naive", 0.5, x)(x)
    assert not torch.allclose(a, b)


def test_sweep_returns_every_method_and_ratio_with_decreasing_macs() -> None:
    model = _tiny_edsr().eval()
    pairs = SRImages([_photo(5, 40), _photo(6, 40)], 2)
    ratios = (1.0, 0.5, 0.25)
    result = compress_all(model, pairs, 2, ratios=ratios, macs_lr_size=16, keep=lambda m, r: r == 0.5)
    full = evaluate_sr(model, pairs, 2)["psnr"]
    for key in ("psnr", "ssim", "macs"):
        assert set(result[key]) == set(SR_METHODS)
        for method in SR_METHODS:
            assert list(result[key][method]) == [ratio_key(r) for r in ratios]
    for method in SR_METHODS:
        macs = [result["macs"][method][ratio_key(r)] for r in ratios]
        assert macs[0] > macs[1] > macs[2] > 0, method
        assert result["psnr"][method][ratio_key(1.0)] == pytest.approx(full, abs=0.05)
    assert set(result["models"]) == {(m, 0.5) for m in SR_METHODS}
    rows = summary_rows(result)
    assert len(rows) == len(SR_METHODS) * len(ratios)
    assert set(rows[0]) == {"method", "ratio", "psnr", "ssim", "macs"}
