"""Fashion-MNIST (Xiao, Rasul, Vollgraf, 2017), read from the original IDX files.

Where the files are looked for, in order:

1. ``data/fashion-mnist/`` in the repository (or the ``root`` argument);
2. ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``,
   which ``make`` installs where apt exists);
3. a torchvision download into ``data/fashion-mnist/`` where a network exists.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from thesislib.config import check_scale

REPO_DATA = Path(__file__).resolve().parent.parent.parent / "data" / "fashion-mnist"
SYSTEM_DATA = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic ``0x00 0x00 0x08 ndim``, big-endian sizes, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {data.size}")
    return data.reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem, folder / "raw" / f"{stem}.gz", folder / "raw" / stem):
        if candidate.is_file():
            return candidate
    return None


def _download(folder: Path) -> bool:
    """Try torchvision's download into ``folder``; False when there is no network."""
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(folder.parent / "_torchvision"), download=True)
    except Exception:  # no network, or the mirror refused
        return False
    raw = folder.parent / "_torchvision" / "FashionMNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    for file in raw.glob("*.gz"):
        (folder / file.name).write_bytes(file.read_bytes())
    return True


def locate(root: str | Path | None = None, download: bool = True) -> Path:
    """The folder holding the four Fashion-MNIST IDX files, or a FileNotFoundError naming the three ways to get them."""
    folders = [Path(root)] if root is not None else [REPO_DATA, SYSTEM_DATA]
    for folder in folders:
        if all(_find(folder, stem) for pair in FILES.values() for stem in pair):
            return folder
    if root is None and download and _download(REPO_DATA):
        return REPO_DATA
    raise FileNotFoundError(
        "Fashion-MNIST not found in " + ", ".join(str(f) for f in folders) + ". Get it one of three ways: "
        f"(1) put the four IDX files (train-images-idx3-ubyte.gz, ...) into {REPO_DATA}; "
        "(2) on Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (files land in "
        f"{SYSTEM_DATA}); (3) on a machine with internet, run again and torchvision downloads it."
    )


def fashion_mnist(train: bool, root: str | Path | None = None) -> TensorDataset:
    """The Fashion-MNIST split as tensors: images float32 in [0, 1] of shape [N, 1, 28, 28], labels int64."""
    folder = locate(root)
    images_stem, labels_stem = FILES[bool(train)]
    images = read_idx(_find(folder, images_stem))
    labels = read_idx(_find(folder, labels_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{folder}: images {images.shape} and labels {labels.shape} do not match")
    x = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return TensorDataset(x, y)


@dataclass(frozen=True)
class FashionScale:
    """How much of Fashion-MNIST an experiment of one scale uses."""

    train_size: int | None  # None: all 60 000
    calib_size: int  # held out of the training subset: BatchNorm recalibration, pruning scores
    test_size: int | None  # None: all 10 000
    batch_size: int


FASHION_SCALES: dict[str, FashionScale] = {
    "smoke": FashionScale(train_size=1024, calib_size=256, test_size=512, batch_size=128),
    "cpu": FashionScale(train_size=20000, calib_size=1280, test_size=5000, batch_size=128),
    "gpu": FashionScale(train_size=None, calib_size=5120, test_size=None, batch_size=256),
}


@dataclass
class FashionLoaders:
    """Train, calibration and test loaders of one scale (calibration images are never test images)."""

    train: DataLoader
    calib: DataLoader
    test: DataLoader


def fashion_loaders(scale: str, seed: int = 0, batch_size: int | None = None,
                    root: str | Path | None = None) -> FashionLoaders:
    """Loaders sized by ``scale``: a seeded random subset of the training split, a disjoint
    calibration subset of it, and the first ``test_size`` test images."""
    spec = FASHION_SCALES[check_scale(scale)]
    bs = batch_size or spec.batch_size
    train_full, test_full = fashion_mnist(True, root), fashion_mnist(False, root)
    order = torch.randperm(len(train_full), generator=torch.Generator().manual_seed(seed))
    n_train = spec.train_size or (len(train_full) - spec.calib_size)
    train_idx = order[:n_train]
    calib_idx = order[n_train:n_train + spec.calib_size]
    test_idx = torch.arange(spec.test_size or len(test_full))
    shuffle_gen = torch.Generator().manual_seed(seed + 1)
    return FashionLoaders(
        train=DataLoader(Subset(train_full, train_idx.tolist()), batch_size=bs, shuffle=True,
                         generator=shuffle_gen, drop_last=True),
        calib=DataLoader(Subset(train_full, calib_idx.tolist()), batch_size=bs, shuffle=False),
        test=DataLoader(Subset(test_full, test_idx.tolist()), batch_size=512, shuffle=False),
    )
