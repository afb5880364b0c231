"""Tests of thesislib.metrics: exact MAC/parameter counts, latency contract, accuracy, PSNR/SSIM against references."""

from __future__ import annotations

import math

import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from thesislib.metrics import accuracy, count_macs, count_params, measure_latency, psnr, rgb_to_y, ssim


def test_macs_and_params_are_exact_for_conv_and_linear() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 5 * 5, 4))
    x = torch.randn(2, 3, 5, 5)
    conv = 2 * 8 * 5 * 5 * 3 * 3 * 3  # batch 2: out elements x (in x k x k)
    linear = 2 * 4 * 200
    assert count_macs(net, x) == conv + linear
    assert count_params(net) == 8 * 3 * 9 + 8 + 200 * 4 + 4


def test_macs_halve_with_half_the_channels() -> None:
    x = torch.randn(1, 4, 6, 6)
    wide, narrow = nn.Conv2d(4, 8, 3), nn.Conv2d(4, 4, 3)
    assert count_macs(wide, x) == 2 * count_macs(narrow, x)


def test_shared_parameters_count_once() -> None:
    lin = nn.Linear(3, 3)
    assert count_params(nn.Sequential(lin, lin)) == 12


def test_latency_is_a_positive_median_and_restores_threads() -> None:
    threads = torch.get_num_threads()
    seconds = measure_latency(nn.Linear(16, 16), torch.randn(4, 16), repeats=5, warmup=1, threads=1)
    assert seconds > 0 and torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(nn.Linear(2, 2), torch.randn(1, 2), repeats=0)


def test_accuracy_counts_correct_predictions() -> None:
    x = torch.eye(4)
    y = torch.tensor([0, 1, 2, 0])
    net = nn.Identity()  # predicts argmax = 0, 1, 2, 3
    assert accuracy(net, DataLoader(TensorDataset(x, y), batch_size=3)) == 0.75


def _pair(seed: int = 0, shape=(3, 32, 32)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=gen, dtype=torch.float64)
    pred = (target + 0.05 * torch.randn(shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    return pred, target


def test_psnr_matches_skimage_and_crops() -> None:
    pred, target = _pair()
    ref = peak_signal_noise_ratio(target.numpy(), pred.numpy(), data_range=1.0)
    assert psnr(pred, target) == pytest.approx(ref, rel=1e-10)
    cropped = peak_signal_noise_ratio(target[:, 2:-2, 2:-2].numpy(), pred[:, 2:-2, 2:-2].numpy(), data_range=1.0)
    assert psnr(pred, target, crop=2) == pytest.approx(cropped, rel=1e-10)
    assert psnr(target, target) == math.inf


def test_y_channel_is_bt601() -> None:
    white, black = torch.ones(3, 1, 1), torch.zeros(3, 1, 1)
    assert rgb_to_y(white).item() == pytest.approx(235 / 255)
    assert rgb_to_y(black).item() == pytest.approx(16 / 255)
    pred, target = _pair()
    y_ref = peak_signal_noise_ratio(rgb_to_y(target).numpy(), rgb_to_y(pred).numpy(), data_range=1.0)
    assert psnr(pred, target, y_channel=True) == pytest.approx(y_ref, rel=1e-10)


def test_ssim_matches_skimage_gaussian_window() -> None:
    pred, target = _pair(shape=(1, 40, 40))
    ref = structural_similarity(target[0].numpy(), pred[0].numpy(), data_range=1.0, gaussian_weights=True,
                                sigma=1.5, use_sample_covariance=False)
    assert ssim(pred, target) == pytest.approx(ref, abs=1e-6)
    assert ssim(target, target) == pytest.approx(1.0)


def test_image_metrics_refuse_bad_input() -> None:
    pred, target = _pair()
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(pred, target[:, :8])
    with pytest.raises(ValueError, match="crop"):
        ssim(pred, target, crop=16)
    with pytest.raises(ValueError, match="window"):
        ssim(pred[:, :8, :8], target[:, :8, :8])
    with pytest.raises(ValueError, match="3 channels"):
        psnr(pred[:1], target[:1], y_channel=True)
