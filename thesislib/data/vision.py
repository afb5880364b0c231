"""CIFAR-10 and ImageNet readers on a user-given root; nothing is ever downloaded silently.

* CIFAR-10 (Krizhevsky 2009), the "python version": ``<root>/cifar-10-batches-py/`` with the
  pickled batches ``data_batch_1`` ... ``data_batch_5``, ``test_batch`` and ``batches.meta``.
  ``torchvision.datasets.CIFAR10`` refuses any copy whose md5 differs from the official archive's
  (its integrity check has the md5 sums built in), so it cannot read anything but the full
  official files -- not the tiny batches the tests write. :class:`CIFAR10Batches` therefore reads
  the same pickle format itself (exactly as torchvision does: ``pickle.load(..., encoding="latin1")``,
  ``data`` rows of 3072 uint8 values in channel-major order, ``labels``) and returns what
  torchvision returns: ``(PIL image, int label)``, or the ``transform``-ed image. ``verify=True``
  checks the official md5 sums (taken from torchvision); ``download=True`` lets torchvision fetch
  and verify the official archive first. Pickle files can run code when loaded: read only
  CIFAR-10 copies you trust.
* ImageNet (ILSVRC-2012, Russakovsky et al. 2015): ``torchvision.datasets.ImageFolder`` on
  ``<root>/<split>/<wnid>/<image>`` (split ``train`` or ``val``); labels are the indices of the
  sorted wnid folder names, the order torchvision's pretrained weights use.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import CIFAR10, ImageFolder
from torchvision.datasets.utils import check_integrity

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_META_FILE = "batches.meta"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
IMAGENET_SPLITS = ("train", "val")

_CIFAR10_LAYOUT = (
    f"expected <root>/{CIFAR10_FOLDER}/ holding {', '.join(CIFAR10_TRAIN_FILES)}, "
    f"{CIFAR10_TEST_FILES[0]} and {CIFAR10_META_FILE} (the CIFAR-10 python version: download "
    f"{CIFAR10_URL} and extract it into <root>, or call cifar10(root, train, download=True) "
    "to let torchvision download it)"
)


class CIFAR10Batches(torch.utils.data.Dataset):
    """CIFAR-10 read from its pickled python batches; items like ``torchvision.datasets.CIFAR10``.

    Attributes: ``data`` (uint8 array ``[N, 32, 32, 3]``, HWC), ``targets`` (list of int),
    ``classes`` (label names from ``batches.meta``), ``class_to_idx``.
    """

    def __init__(
        self,
        folder: str | Path,
        train: bool,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        verify: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        files = CIFAR10_TRAIN_FILES if train else CIFAR10_TEST_FILES
        missing = [f for f in (*files, CIFAR10_META_FILE) if not (self.folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"CIFAR-10 files {missing} missing in {self.folder}: {_CIFAR10_LAYOUT}")
        if verify:
            official = dict(CIFAR10.train_list + CIFAR10.test_list)
            official[CIFAR10_META_FILE] = CIFAR10.meta["md5"]
            for f in (*files, CIFAR10_META_FILE):
                if not check_integrity(str(self.folder / f), official[f]):
                    raise ValueError(
                        f"{self.folder / f} does not have the official md5 {official[f]}; "
                        f"re-download {CIFAR10_URL} or pass verify=False"
                    )
        data, targets = [], []
        for f in files:
            entry = _load_pickle(self.folder / f)
            labels = entry.get("labels", entry.get("fine_labels"))
            if "data" not in entry or labels is None:
                raise ValueError(f"{self.folder / f} is not a CIFAR-10 batch (needs keys 'data' and 'labels')")
            batch = np.asarray(entry["data"], dtype=np.uint8)
            if batch.ndim != 2 or batch.shape[1] != 3 * 32 * 32 or batch.shape[0] != len(labels):
                raise ValueError(
                    f"{self.folder / f}: 'data' must be [N, 3072] uint8 with N = len(labels), got "
                    f"shape {batch.shape} and {len(labels)} labels"
                )
            data.append(batch)
            targets.extend(int(t) for t in labels)
        self.data = np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
        self.targets = targets
        meta = _load_pickle(self.folder / CIFAR10_META_FILE)
        if "label_names" not in meta:
            raise ValueError(f"{self.folder / CIFAR10_META_FILE} has no 'label_names': {_CIFAR10_LAYOUT}")
        self.classes = list(meta["label_names"])
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        if targets and not 0 <= min(targets) <= max(targets) < len(self.classes):
            raise ValueError(f"labels in {self.folder} fall outside 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image: Any = Image.fromarray(self.data[index])
        target: Any = self.targets[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as error:  # truncated file, not a pickle, ...
        raise ValueError(f"cannot read {path} as a CIFAR-10 pickle batch ({error}): {_CIFAR10_LAYOUT}") from error
    if not isinstance(entry, dict):
        raise ValueError(f"{path} holds a {type(entry).__name__}, not a CIFAR-10 batch dict: {_CIFAR10_LAYOUT}")
    return entry


def cifar10(
    root: str | Path,
    train: bool,
    transform: Callable | None = None,
    target_transform: Callable | None = None,
    download: bool = False,
    verify: bool = False,
) -> CIFAR10Batches:
    """CIFAR-10 train (50 000) or test (10 000) images from ``<root>/cifar-10-batches-py``.

    ``root`` may also be the ``cifar-10-batches-py`` folder itself. Without a transform, items are
    ``(PIL.Image, int)`` like torchvision's; pass e.g. ``torchvision.transforms.ToTensor()``.
    ``download=True`` (never the default) downloads and md5-checks the official archive through
    torchvision; ``verify=True`` checks the official md5 sums of an existing copy.
    A missing folder raises ``FileNotFoundError``, an unreadable batch ``ValueError``.
    """
    root = Path(root).expanduser()
    if download:
        CIFAR10(str(root), train=train, download=True)
    folder = root if (root / CIFAR10_META_FILE).is_file() else root / CIFAR10_FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(f"CIFAR-10 not found: no folder {folder}; {_CIFAR10_LAYOUT}")
    return CIFAR10Batches(folder, train, transform=transform, target_transform=target_transform, verify=verify)


def imagenet(
    root: str | Path,
    split: str,
    transform: Callable | None = None,
    target_transform: Callable | None = None,
) -> ImageFolder:
    """ImageNet (ILSVRC-2012) ``split`` ("train" or "val") as ``torchvision.datasets.ImageFolder``.

    Expected layout: ``<root>/train/<wnid>/*.JPEG`` and ``<root>/val/<wnid>/*.JPEG`` -- one folder
    per class, named by WordNet id (n01440764, ...). The official validation archive is flat; sort
    it into class folders first (e.g. with the ``valprep.sh`` script of the PyTorch ImageNet example,
    or ``torchvision.datasets.ImageNet(root, split="val")`` which does it from the devkit). The data
    need an account at https://image-net.org/download.php. Nothing is downloaded here.
    """
    if split not in IMAGENET_SPLITS:
        raise ValueError(f"ImageNet split must be one of {IMAGENET_SPLITS}, got {split!r}")
    layout = (
        f"expected ImageNet class folders <root>/{split}/<wnid>/<image>.JPEG (e.g. {split}/n01440764/...); "
        "get ILSVRC-2012 from https://image-net.org/download.php (account needed) and sort the "
        "validation images into class folders (valprep.sh, or torchvision.datasets.ImageNet)"
    )
    folder = Path(root).expanduser() / split
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageNet not found: no folder {folder}; {layout}")
    try:
        return ImageFolder(str(folder), transform=transform, target_transform=target_transform)
    except FileNotFoundError as error:  # no class folders, or a class folder without images
        raise FileNotFoundError(f"ImageNet folder {folder} is not usable ({error}); {layout}") from error
