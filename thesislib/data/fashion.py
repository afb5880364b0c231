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
from torch.utils.data import DataLoader, Subset, TensorDataset, default_collate

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
    "cpu": FashionScale(train_size=None, calib_size=1280, test_size=None, batch_size=128),
    "gpu": FashionScale(train_size=None, calib_size=5120, test_size=None, batch_size=256),
}


class RandomCropFlip:
    """Light augmentation of a batch of images ``[B, C, H, W]``: a random crop of the zero-padded image
    (``padding`` pixels on each side, i.e. a shift by up to ``padding`` pixels) and a horizontal flip
    with probability ``flip`` — the standard light augmentation of CIFAR/Fashion-MNIST (He et al. 2016,
    Sec. 4.2). Draws come from its own seeded generator, so they never shift other random streams.

    Used as a ``collate_fn`` (``__call__`` collates ``(image, label)`` samples, then augments the
    images) or on a tensor batch directly (:meth:`augment`).
    """

    def __init__(self, padding: int = 2, flip: float = 0.5, seed: int = 0) -> None:
        if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise ValueError(f"padding must be an int >= 0 (pixels), got {padding!r}")
        if not 0.0 <= float(flip) <= 1.0:
            raise ValueError(f"flip is a probability in [0, 1], got {flip!r}")
        self.padding, self.flip = padding, float(flip)
        self.generator = torch.Generator().manual_seed(seed)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """The augmented copy of ``images`` (``[B, C, H, W]``); same shape and dtype."""
        if images.ndim != 4:
            raise ValueError(f"RandomCropFlip expects images [B, C, H, W], got shape {tuple(images.shape)}")
        b, _, h, w = images.shape
        p = self.padding
        dy = torch.randint(0, 2 * p + 1, (b,), generator=self.generator)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=self.generator)
        flips = torch.rand(b, generator=self.generator) < self.flip
        padded = torch.nn.functional.pad(images, (p, p, p, p)) if p else images
        rows = dy[:, None] + torch.arange(h)[None, :]  # [B, H]
        cols = dx[:, None] + torch.arange(w)[None, :]  # [B, W]
        cols = torch.where(flips[:, None], cols.flip(1), cols)
        batch = torch.arange(b)[:, None, None, None]
        channel = torch.arange(images.shape[1])[None, :, None, None]
        return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]

    def __call__(self, samples: list) -> list:
        images, labels = default_collate(samples)
        return [self.augment(images), labels]


@dataclass
class FashionLoaders:
    """Train, calibration and test loaders of one scale (calibration images are never test images)."""

    train: DataLoader
    calib: DataLoader
    test: DataLoader


def fashion_loaders(scale: str, seed: int = 0, batch_size: int | None = None,
                    root: str | Path | None = None, augment: RandomCropFlip | None = None) -> FashionLoaders:
    """Loaders sized by ``scale``: a seeded random subset of the training split, a disjoint
    calibration subset of it, and the first ``test_size`` test images. ``augment`` (e.g.
    :class:`RandomCropFlip`) augments the training batches only."""
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
                         generator=shuffle_gen, drop_last=True, collate_fn=augment),
        calib=DataLoader(Subset(train_full, calib_idx.tolist()), batch_size=bs, shuffle=False),
        test=DataLoader(Subset(test_full, test_idx.tolist()), batch_size=512, shuffle=False),
    )
