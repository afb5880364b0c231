"""The data of the gpu-scale training runs (:mod:`thesislib.train`): what they need, transforms, loaders.

* :data:`GPU_DATA` names, per experiment, the folder a run reads and its expected layout;
  :func:`require_data` checks it and, when something is missing, raises one ``FileNotFoundError`` that
  names everything the run needs and where to get it (``data/README.md``).
* :func:`cifar10_transforms` / :func:`imagenet_transforms`: the standard augmentation of He et al. 2016
  (CIFAR: 4-pixel padding + random 32×32 crop + horizontal flip; ImageNet: random-resized 224 crop + flip,
  evaluation on the 224 centre crop of the 256 resize), normalised with the data sets' channel statistics.
* :class:`SRFilePatches`: aligned ``(LR, HR)`` training patches cut from HR image *files* on demand
  (DIV2K's 800 2K images do not fit in memory as tensors), positions and flips drawn from ``(seed, index)``.
* :func:`loader_options`: worker processes and pinned memory for a device.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .fashion import REPO_DATA
from .sr import IMAGE_SUFFIXES, SR_FOLDER_LAYOUTS, _dihedral, bicubic_lr, load_image, sr_folder_images
from .vision import CIFAR10_FOLDER, CIFAR10_META_FILE, CIFAR10_TEST_FILES, CIFAR10_TRAIN_FILES

__all__ = ["DATA_ROOT", "GPU_DATA", "SR_EVAL_SETS", "default_root", "require_data", "cifar10_transforms",
           "imagenet_transforms", "SRFilePatches", "loader_options", "CIFAR10_MEAN", "CIFAR10_STD",
           "IMAGENET_MEAN", "IMAGENET_STD"]

#: ``data/`` in the repository: the default parent of every data folder
DATA_ROOT = REPO_DATA.parent
SR_EVAL_SETS = ("Set5", "Set14", "B100")
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: experiment → (default folder under ``data/``, expected layout, where to get it)
GPU_DATA: dict[str, tuple[str, str, str]] = {
    "cifar10": ("cifar10", f"<root>/{CIFAR10_FOLDER}/{{data_batch_1..5, test_batch, batches.meta}}",
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extracted into <root>"),
    "imagenet": ("imagenet", "<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG (1000 class folders each)",
                 "ILSVRC-2012 from https://image-net.org/download.php, validation sorted into class folders"),
    "sr": ("sr", "<root>/DIV2K_train_HR/*.png (800 HR training images) and <root>/Set5, <root>/Set14, "
                 "<root>/B100, each in one of the layouts " + " | ".join(SR_FOLDER_LAYOUTS),
           "DIV2K_train_HR.zip from https://data.vision.ee.ethz.ch/cvl/DIV2K/, the benchmark sets from "
           "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"),
}


def default_root(kind: str) -> Path:
    """``data/<folder>`` of :data:`GPU_DATA` ``kind`` (``THESISLIB_DATA`` moves ``data/``)."""
    if kind not in GPU_DATA:
        raise ValueError(f"unknown data kind {kind!r}: one of {', '.join(GPU_DATA)}")
    return Path(os.environ.get("THESISLIB_DATA", DATA_ROOT)) / GPU_DATA[kind][0]


def _missing(kind: str, root: Path) -> list[str]:
    if kind == "cifar10":
        folder = root if (root / CIFAR10_META_FILE).is_file() else root / CIFAR10_FOLDER
        files = (*CIFAR10_TRAIN_FILES, *CIFAR10_TEST_FILES, CIFAR10_META_FILE)
        return [str(folder / f) for f in files if not (folder / f).is_file()]
    if kind == "imagenet":
        out = []
        for split in ("train", "val"):
            folder = root / split
            if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
                out.append(f"{folder}/<wnid>/ class folders")
        return out
    out = []
    div2k = root / "DIV2K_train_HR"
    if not div2k.is_dir() or not any(p.suffix.lower() in IMAGE_SUFFIXES for p in div2k.iterdir()):
        out.append(f"{div2k}/*.png")
    for name in SR_EVAL_SETS:
        try:
            sr_folder_images(root / name, 2)
        except FileNotFoundError:
            out.append(f"{root / name} (HR images)")
    return out


def require_data(kind: str, root: str | Path | None = None) -> Path:
    """The data folder of ``kind`` (``cifar10``, ``imagenet``, ``sr``), checked; when anything is missing
    one ``FileNotFoundError`` lists what, the expected layout and where to get it."""
    folder = Path(root).expanduser() if root is not None else default_root(kind)
    missing = _missing(kind, folder)
    if missing:
        _, layout, source = GPU_DATA[kind]
        raise FileNotFoundError(
            f"the {kind} data this run needs are not in {folder}: missing {', '.join(missing)}. Expected layout: "
            f"{layout}. Get them from {source}; pass the folder with --data (see data/README.md). "
            "Nothing is downloaded silently.")
    return folder


def cifar10_transforms(train: bool) -> Any:
    """CIFAR-10 augmentation of He et al. 2016 (pad 4, random crop 32, flip) and normalisation."""
    from torchvision import transforms as T

    steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
    return T.Compose([*steps, T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)])


def imagenet_transforms(train: bool, size: int = 224) -> Any:
    """ImageNet: random-resized ``size`` crop + flip for training, resize ``size·8/7`` + centre crop for evaluation."""
    from torchvision import transforms as T

    if train:
        steps = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(int(round(size * 8 / 7))), T.CenterCrop(size)]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class SRFilePatches(torch.utils.data.Dataset):
    """``length`` aligned ``(LR, HR)`` patches of HR image files, read when asked for.

    Item ``i`` reads image ``i mod len(files)``, cuts an HR window of ``patch_size`` pixels (a multiple
    of ``scale``) at a position drawn from ``(seed, i)``, degrades it with
    :func:`thesislib.data.sr.bicubic_lr` and applies one of the 8 flips/rotations (EDSR, Lim et al. 2017).
    Degrading the window instead of the whole image differs from the whole-image LR only within the
    bicubic kernel's reach of the window's border.
    """

    def __init__(self, files: Sequence[str | Path], scale: int, patch_size: int, length: int, seed: int = 0,
                 augment: bool = True) -> None:
        if not files:
            raise ValueError("SRFilePatches needs at least one image file")
        if not isinstance(patch_size, int) or patch_size < scale or patch_size % scale:
            raise ValueError(f"patch_size (HR pixels) must be a positive multiple of scale={scale}, got {patch_size!r}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.files, self.scale, self.patch_size = [Path(f) for f in files], scale, patch_size
        self.length, self.seed, self.augment = length, seed, augment

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} patches")
        hr = load_image(self.files[index % len(self.files)])
        h, w, p = hr.shape[-2], hr.shape[-1], self.patch_size
        if min(h, w) < p:
            raise ValueError(f"{self.files[index % len(self.files)]} ({h}×{w}) is smaller than patch_size={p}")
        rng = np.random.default_rng([self.seed, index])
        s = self.scale
        y = int(rng.integers(0, (h - p) // s + 1)) * s
        x = int(rng.integers(0, (w - p) // s + 1)) * s
        k = int(rng.integers(0, 8)) if self.augment else 0
        patch = hr[:, y:y + p, x:x + p]
        return _dihedral(bicubic_lr(patch, s), k), _dihedral(patch, k)


def loader_options(device: torch.device | str, workers: int | None = None) -> dict[str, Any]:
    """``DataLoader`` keyword arguments for ``device``: ``workers`` processes (default: 4 per CUDA process,
    capped by the CPUs; 0 on CPU, where the training itself uses the cores) and pinned memory on CUDA."""
    cuda = torch.device(device).type == "cuda"
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if cuda else 0
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    return {"num_workers": workers, "pin_memory": cuda, "persistent_workers": False}
