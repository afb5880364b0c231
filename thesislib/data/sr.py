"""Super-resolution data: built-in real photos, the bicubic degradation, patch and image datasets.

**Built-in photos** (offline, shipped inside the installed packages): scikit-image's
``skimage.data`` photographs, scikit-learn's ``load_sample_image`` photos and matplotlib's
``grace_hopper.jpg``. They are split once, by image, into :data:`SR_PHOTOS_TRAIN` and
:data:`SR_PHOTOS_TEST` (no image in both; the right view of skimage's stereo motorcycle pair is
left out because it shows the same scene as the left one). The test set has five varied photos,
in the spirit of Set5.

**Degradation**: the standard protocol of the SR benchmarks (SRCNN, EDSR, ...): crop the HR image
to a multiple of the scale ("modcrop", keeping the top-left corner), then bicubic downscaling with
an anti-aliasing kernel -- MATLAB's ``imresize``. :func:`bicubic_lr` uses
``torch.nn.functional.interpolate(mode="bicubic", antialias=True)``: the same Keys kernel (a = -0.5)
stretched by the scale factor as MATLAB and PIL's ``BICUBIC``; on ``skimage.data.astronaut`` it
differs from PIL by 0.1-0.13 grey levels on average (max 3-6 of 255, PIL works in fixed point).
It is chosen over PIL because it works on float tensors of any channel count, in batches, on the
GPU. By default the result is rounded to 8-bit levels, as the benchmarks store LR images as PNG.

**Evaluation**: PSNR/SSIM on the luminance channel Y of ITU-R BT.601 (:func:`thesislib.metrics.rgb_to_y`), as in the SR
literature.

**Folders** (:func:`sr_folder`): Set5 / Set14 / B100 / Urban100 / DIV2K, see ``data/README.md``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm")


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _motorcycle_left() -> np.ndarray:
    import skimage.data

    return skimage.data.stereo_motorcycle()[0]


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        return np.asarray(image.convert("RGB"))


# name -> loader of an HxW or HxWx3 uint8 array. Every one is a photograph of a real scene.
_PHOTO_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    # train
    "camera": _skimage("camera"),
    "coins": _skimage("coins"),
    "moon": _skimage("moon"),
    "brick": _skimage("brick"),
    "grass": _skimage("grass"),
    "gravel": _skimage("gravel"),
    "rocket": _skimage("rocket"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "motorcycle_left": _motorcycle_left,
    "china": _sklearn("china.jpg"),
    # test
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _grace_hopper,
}
SR_PHOTOS_TRAIN: tuple[str, ...] = (
    "camera", "coins", "moon", "brick", "grass", "gravel", "rocket",
    "hubble_deep_field", "immunohistochemistry", "motorcycle_left", "china",
)
SR_PHOTOS_TEST: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "flower", "grace_hopper")
SR_SPLITS = ("train", "test")


def array_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``HxW`` or ``HxWxC`` array -> float CHW RGB tensor in [0, 1] (grey -> 3 equal channels)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")
    return torch.from_numpy(np.array(image[:, :, :3])).permute(2, 0, 1).float().div(255)


@lru_cache(maxsize=None)
def _photo_array(name: str) -> np.ndarray:
    array = _PHOTO_LOADERS[name]()
    array.setflags(write=False)
    return array


def sr_photo(name: str) -> torch.Tensor:
    """One built-in photo as a float CHW RGB tensor in [0, 1]."""
    if name not in _PHOTO_LOADERS:
        raise ValueError(f"unknown photo {name!r}; valid: {', '.join(SR_PHOTOS_TRAIN + SR_PHOTOS_TEST)}")
    return array_to_tensor(_photo_array(name))


def sr_photos(split: Literal["train", "test"]) -> list[torch.Tensor]:
    """The HR photos of ``split`` (:data:`SR_PHOTOS_TRAIN` or :data:`SR_PHOTOS_TEST`), in that order."""
    if split not in SR_SPLITS:
        raise ValueError(f"split must be one of {SR_SPLITS}, got {split!r}")
    return [sr_photo(name) for name in (SR_PHOTOS_TRAIN if split == "train" else SR_PHOTOS_TEST)]


def _check_scale(scale: int) -> None:
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale must be a positive int (2, 3 or 4 in the SR benchmarks), got {scale!r}")


def modcrop(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop ``[..., H, W]`` to the largest multiple of ``scale`` in each dimension (top-left kept)."""
    _check_scale(scale)
    h, w = hr.shape[-2] - hr.shape[-2] % scale, hr.shape[-1] - hr.shape[-1] % scale
    if h == 0 or w == 0:
        raise ValueError(f"image of size {tuple(hr.shape[-2:])} is smaller than the scale {scale}")
    return hr[..., :h, :w]


def bicubic_lr(hr: torch.Tensor, scale: int, quantize: bool = True) -> torch.Tensor:
    """Low-resolution image of ``hr`` (``[C, H, W]`` or ``[B, C, H, W]``, float in [0, 1]).

    ``modcrop(hr, scale)`` then anti-aliased bicubic downscaling by ``scale``: the result is
    ``[..., H // scale, W // scale]``, clamped to [0, 1] and (``quantize=True``) rounded to
    multiples of 1/255 as when the LR image is saved as an 8-bit PNG.
    """
    if hr.dim() not in (3, 4) or not hr.is_floating_point():
        raise ValueError(f"hr must be a float [C, H, W] or [B, C, H, W] tensor, got {hr.dtype} {tuple(hr.shape)}")
    hr = modcrop(hr, scale)
    batch = hr if hr.dim() == 4 else hr[None]
    size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
    lr = F.interpolate(batch, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    if quantize:
        lr = lr.mul(255).round().div(255)
    return lr if hr.dim() == 4 else lr[0]


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as a float CHW RGB tensor in [0, 1] (grey and palette images -> RGB)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error
    return array_to_tensor(array)


ImageSource = torch.Tensor | str | Path


def _hr(source: ImageSource) -> torch.Tensor:
    return load_image(source) if isinstance(source, (str, Path)) else source


class SRImages(torch.utils.data.Dataset):
    """Whole test images: item ``i`` is ``(bicubic_lr(hr, scale), modcrop(hr, scale))``.

    ``images`` are CHW float tensors or image file paths (read when the item is asked for, so a
    folder of 2K images does not sit in memory).
    """

    def __init__(self, images: Sequence[ImageSource], scale: int, names: Sequence[str] | None = None) -> None:
        _check_scale(scale)
        if len(images) == 0:
            raise ValueError("SRImages needs at least one image")
        self.images = list(images)
        self.scale = scale
        self.names = list(names) if names is not None else [
            Path(s).stem if isinstance(s, (str, Path)) else str(i) for i, s in enumerate(self.images)
        ]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        hr = modcrop(_hr(self.images[index]), self.scale)
        return bicubic_lr(hr, self.scale), hr


class SRPatches(torch.utils.data.Dataset):
    """Random aligned training pairs ``(LR patch, HR patch)`` cut from whole images.

    Each image is degraded once with :func:`bicubic_lr`; a patch is an LR window of
    ``patch_size // scale`` pixels and the HR window exactly above it (``patch_size`` pixels,
    ``patch_size`` must be a multiple of ``scale``). Positions and -- with ``augment`` -- one of the
    8 flips/rotations (as in EDSR) are drawn at construction from ``seed``, so the dataset is the
    same for the same arguments whatever the loader order. Length: ``len(images) * patches_per_image``.
    """

    def __init__(
        self,
        images: Sequence[ImageSource],
        scale: int,
        patch_size: int,
        patches_per_image: int,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        _check_scale(scale)
        if not isinstance(patch_size, int) or patch_size < scale or patch_size % scale:
            raise ValueError(f"patch_size (HR pixels) must be a positive multiple of scale={scale}, got {patch_size!r}")
        if not isinstance(patches_per_image, int) or patches_per_image < 1:
            raise ValueError(f"patches_per_image must be a positive int, got {patches_per_image!r}")
        if len(images) == 0:
            raise ValueError("SRPatches needs at least one image")
        self.scale, self.patch_size, self.patches_per_image = scale, patch_size, patches_per_image
        self.hr = [modcrop(_hr(image), scale) for image in images]
        for i, hr in enumerate(self.hr):
            if min(hr.shape[-2:]) < patch_size:
                raise ValueError(f"image {i} of size {tuple(hr.shape[-2:])} is smaller than patch_size={patch_size}")
        self.lr = [bicubic_lr(hr, scale) for hr in self.hr]
        generator = torch.Generator().manual_seed(seed)
        lr_patch = patch_size // scale
        n = len(self.hr) * patches_per_image
        image_of = torch.arange(n) // patches_per_image
        max_y = torch.tensor([lr.shape[-2] - lr_patch for lr in self.lr])[image_of]
        max_x = torch.tensor([lr.shape[-1] - lr_patch for lr in self.lr])[image_of]
        # positions uniform on 0..max (inclusive), drawn in one go from the seeded generator
        self.y = (torch.rand(n, generator=generator) * (max_y + 1)).long().clamp(max=max_y)
        self.x = (torch.rand(n, generator=generator) * (max_x + 1)).long().clamp(max=max_x)
        self.transform = (torch.randint(0, 8, (n,), generator=generator) if augment
                          else torch.zeros(n, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        index = index % len(self)
        image, s, p = index // self.patches_per_image, self.scale, self.patch_size // self.scale
        y, x = int(self.y[index]), int(self.x[index])
        lr = self.lr[image][:, y:y + p, x:x + p]
        hr = self.hr[image][:, y * s:(y + p) * s, x * s:(x + p) * s]
        return _dihedral(lr, int(self.transform[index])), _dihedral(hr, int(self.transform[index]))


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips/rotations of a square ``[C, P, P]`` patch (k = 0 is the identity)."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1)).contiguous()


def _images_in(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


SR_FOLDER_LAYOUTS = (
    "<root>/*.png (a folder of HR images, e.g. Set5/, DIV2K/DIV2K_valid_HR/)",
    "<root>/HR/*.png (Set5/HR, Set14/HR, B100/HR as in the EDSR benchmark archive)",
    "<root>/DIV2K_valid_HR/*.png (the DIV2K root)",
    "<root>/image_SRF_<scale>/*_HR.png (Huang et al.'s Set5/Set14/BSD100/Urban100 archives)",
)


def sr_folder_images(root: str | Path, scale: int) -> list[Path]:
    """HR image files of an SR benchmark folder; the first layout of :data:`SR_FOLDER_LAYOUTS` that has images."""
    _check_scale(scale)
    root = Path(root).expanduser()
    layouts = "; ".join(SR_FOLDER_LAYOUTS)
    if not root.is_dir():
        raise FileNotFoundError(f"SR image folder {root} does not exist; expected one of: {layouts}. "
                                "See data/README.md for where to get Set5/Set14/B100/DIV2K.")
    candidates = [
        (root / "HR", "*"),
        (root / "DIV2K_valid_HR", "*"),
        (root / f"image_SRF_{scale}", "*_HR.*"),
        (root, "*"),
    ]
    for folder, pattern in candidates:
        if folder.is_dir():
            files = _images_in(folder, pattern)
            if files:
                return files
    raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root}; expected one of: {layouts}")


def sr_folder(root: str | Path, scale: int) -> SRImages:
    """Test pairs of an SR benchmark folder (Set5, Set14, B100, Urban100, DIV2K validation).

    HR images are found as in :func:`sr_folder_images`; LR images are made from them with
    :func:`bicubic_lr` (any LR images shipped with the benchmark are ignored, so every set is
    degraded by the same code).
    """
    files = sr_folder_images(root, scale)
    return SRImages(files, scale, names=[f.stem for f in files])
