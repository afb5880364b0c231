"""Super-resolution data: built-in photos, bicubic degradation, datasets, folder layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from thesislib.data.sr import (
    SR_PHOTOS_TEST,
    SR_PHOTOS_TRAIN,
    SRImages,
    SRPatches,
    bicubic_lr,
    load_image,
    modcrop,
    sr_folder,
    sr_photo,
    sr_photos,
)


def test_photo_split_is_disjoint_and_loads() -> None:
    assert not set(SR_PHOTOS_TRAIN) & set(SR_PHOTOS_TEST)
    assert len(SR_PHOTOS_TRAIN) >= 8 and len(SR_PHOTOS_TEST) >= 5
    test = sr_photos("test")
    assert len(test) == len(SR_PHOTOS_TEST)
    for x in test:
        assert x.dtype == torch.float32 and x.dim() == 3 and x.shape[0] == 3
        assert min(x.shape[1:]) >= 256 and 0 <= x.min() and x.max() <= 1
        assert x.std() > 0.05  # a real photo, not a constant
    # no test photo is (a crop of) a train photo: compare downscaled thumbnails
    thumbs = {n: F.interpolate(sr_photo(n)[None], size=(16, 16), mode="area") for n in SR_PHOTOS_TRAIN + SR_PHOTOS_TEST}
    for a in SR_PHOTOS_TRAIN:
        for b in SR_PHOTOS_TEST:
            assert (thumbs[a] - thumbs[b]).abs().mean() > 0.02, (a, b)


def test_grey_photo_becomes_three_equal_channels() -> None:
    camera = sr_photo("camera")
    assert camera.shape == (3, 512, 512)
    assert torch.equal(camera[0], camera[1]) and torch.equal(camera[1], camera[2])
    with pytest.raises(ValueError, match="astronaut"):
        sr_photo("lena")
    with pytest.raises(ValueError, match="train"):
        sr_photos("val")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_lr_crops_then_downscales(scale: int) -> None:
    torch.manual_seed(0)
    hr = torch.rand(3, 37, 50)
    lr = bicubic_lr(hr, scale)
    assert lr.shape == (3, 37 // scale, 50 // scale)
    assert modcrop(hr, scale).shape == (3, 37 // scale * scale, 50 // scale * scale)
    # the crop keeps the top-left corner: pixels outside it do not influence the LR image
    changed = hr.clone()
    changed[:, 37 // scale * scale:, :] = 0
    changed[:, :, 50 // scale * scale:] = 1
    assert torch.equal(bicubic_lr(changed, scale), lr)
    # 8-bit quantisation and range; batches give the same result as single images
    assert torch.equal((lr * 255).round(), lr * 255) and lr.min() >= 0 and lr.max() <= 1
    assert torch.equal(bicubic_lr(hr[None].repeat(2, 1, 1, 1), scale)[1], lr)


def test_bicubic_lr_properties() -> None:
    # a constant image stays constant; a smooth ramp is reproduced at pixel centres
    flat = torch.full((3, 12, 12), 0.4)
    torch.testing.assert_close(bicubic_lr(flat, 2, quantize=False), torch.full((3, 6, 6), 0.4))
    ramp = torch.arange(16.0).div(32).expand(1, 16, 16).contiguous()
    lr = bicubic_lr(ramp, 2, quantize=False)
    # LR pixel j covers HR pixels 2j, 2j+1: a linear ramp averages to their mean (away from borders)
    torch.testing.assert_close(lr[0, 0, 2:-2], (ramp[0, 0, 4:-4:2] + ramp[0, 0, 5:-3:2]) / 2)
    # close to PIL's bicubic (the usual reference implementation) on a real photo
    hr = sr_photo("chelsea")[:, :120, :160]
    pil = Image.fromarray((hr * 255).round().byte().permute(1, 2, 0).numpy()).resize((80, 60), Image.BICUBIC)
    ours = bicubic_lr(hr, 2).mul(255).permute(1, 2, 0).numpy()
    assert np.abs(np.asarray(pil, dtype=np.float64) - ours).mean() < 0.5
    with pytest.raises(ValueError, match="scale"):
        bicubic_lr(hr, 0)
    with pytest.raises(ValueError, match="float"):
        bicubic_lr(hr.byte(), 2)


def test_to_y_bt601() -> None:
    from thesislib.metrics import rgb_to_y as to_y

    rgb = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]).T.reshape(3, 1, 3)
    y = to_y(rgb)
    assert y.shape == (1, 1, 3)
    torch.testing.assert_close(y.flatten(), torch.tensor([16.0, 235.0, 16.0 + 65.481]) / 255)
    assert to_y(torch.rand(2, 3, 4, 5)).shape == (2, 1, 4, 5)
    with pytest.raises(ValueError, match="RGB"):
        to_y(torch.rand(1, 1, 4, 4))


def test_sr_patches_aligned_and_deterministic() -> None:
    torch.manual_seed(0)
    images = [torch.rand(3, 40, 30), torch.rand(3, 25, 33)]
    a = SRPatches(images, scale=3, patch_size=12, patches_per_image=5, seed=7)
    b = SRPatches(images, scale=3, patch_size=12, patches_per_image=5, seed=7)
    c = SRPatches(images, scale=3, patch_size=12, patches_per_image=5, seed=8)
    assert len(a) == 10
    for i in range(len(a)):
        (la, ha), (lb, hb) = a[i], b[i]
        assert la.shape == (3, 4, 4) and ha.shape == (3, 12, 12)
        assert torch.equal(la, lb) and torch.equal(ha, hb)
    assert any(not torch.equal(a[i][1], c[i][1]) for i in range(len(a)))
    # alignment: without augmentation each LR patch is the bicubic LR of the full image at the same place
    plain = SRPatches(images, scale=3, patch_size=12, patches_per_image=5, seed=7, augment=False)
    full_lr = bicubic_lr(images[1], 3)
    for i in range(5, 10):
        lr, hr = plain[i]
        y, x = int(plain.y[i]), int(plain.x[i])
        assert torch.equal(hr, images[1][:, 3 * y:3 * y + 12, 3 * x:3 * x + 12])
        assert torch.equal(lr, full_lr[:, y:y + 4, x:x + 4])
    # augmentation applies the same flip/rotation to LR and HR
    for i in range(len(a)):
        lr, hr = a[i]
        lr_plain, hr_plain = plain[i]
        k = int(a.transform[i])
        flip = (lambda t: t.flip(-1)) if k >= 4 else (lambda t: t)
        assert torch.equal(hr, torch.rot90(flip(hr_plain), k % 4, dims=(-2, -1)))
        assert torch.equal(lr, torch.rot90(flip(lr_plain), k % 4, dims=(-2, -1)))


def test_sr_patches_bad_arguments() -> None:
    images = [torch.rand(3, 20, 20)]
    with pytest.raises(ValueError, match="multiple of scale"):
        SRPatches(images, scale=3, patch_size=10, patches_per_image=1)
    with pytest.raises(ValueError, match="smaller than patch_size"):
        SRPatches(images, scale=2, patch_size=24, patches_per_image=1)
    with pytest.raises(ValueError, match="patches_per_image"):
        SRPatches(images, scale=2, patch_size=8, patches_per_image=0)


def write_pngs(folder: Path, sizes: list[tuple[int, int]], grey_first: bool = False) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = []
    for i, (h, w) in enumerate(sizes):
        shape = (h, w) if grey_first and i == 0 else (h, w, 3)
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:03d}.png")
        arrays.append(pixels if pixels.ndim == 3 else np.repeat(pixels[:, :, None], 3, axis=2))
    return arrays


@pytest.mark.parametrize("layout", ["flat", "HR", "DIV2K_valid_HR"])
def test_sr_folder_layouts_round_trip(tmp_path: Path, layout: str) -> None:
    folder = tmp_path if layout == "flat" else tmp_path / layout
    arrays = write_pngs(folder, [(13, 17), (12, 9)], grey_first=True)
    data = sr_folder(tmp_path, scale=3)
    assert isinstance(data, SRImages) and len(data) == 2 and data.names == ["img_000", "img_001"]
    for (lr, hr), pixels in zip(data, arrays):
        h, w = pixels.shape[0] // 3 * 3, pixels.shape[1] // 3 * 3
        assert torch.equal(hr, torch.from_numpy(pixels[:h, :w]).permute(2, 0, 1).float() / 255)
        assert torch.equal(lr, bicubic_lr(hr, 3))


def test_sr_folder_huang_layout_picks_hr_of_the_scale(tmp_path: Path) -> None:
    write_pngs(tmp_path / "image_SRF_2", [(8, 8)])
    (tmp_path / "image_SRF_2" / "img_000.png").rename(tmp_path / "image_SRF_2" / "baby_HR.png")
    write_pngs(tmp_path / "image_SRF_2", [(4, 4)])
    (tmp_path / "image_SRF_2" / "img_000.png").rename(tmp_path / "image_SRF_2" / "baby_LR.png")
    data = sr_folder(tmp_path, scale=2)
    assert data.names == ["baby_HR"] and data[0][1].shape == (3, 8, 8)


def test_sr_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sr_folder(tmp_path / "Set5", scale=2)
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="no images"):
        sr_folder(tmp_path, scale=2)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        load_image(tmp_path / "broken.png")
