"""CIFAR-10 and ImageNet readers on tiny files written in the real on-disk formats."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10
from torchvision.transforms import ToTensor

from thesislib.data.vision import cifar10, imagenet

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar(root: Path, per_batch: int = 3, seed: int = 0) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    """Write cifar-10-batches-py/ as in the official archive (pickled dicts, 3072-byte rows)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_rows, train_labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": rows,
                         "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}, f)
        if name == "test_batch":
            test_rows, test_labels = rows, labels
        else:
            train_rows.append(rows)
            train_labels += labels
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return np.concatenate(train_rows), train_labels, test_rows, test_labels


def test_cifar10_values_round_trip(tmp_path: Path) -> None:
    train_rows, train_labels, test_rows, test_labels = write_cifar(tmp_path)
    for train, rows, labels in [(True, train_rows, train_labels), (False, test_rows, test_labels)]:
        data = cifar10(tmp_path, train=train)
        assert len(data) == len(rows) and data.classes == CLASSES
        assert data.targets == labels
        image, label = data[4 if train else 1]
        row = rows[4 if train else 1]
        assert isinstance(image, Image.Image) and image.size == (32, 32)
        # channel-major rows: R plane, G plane, B plane, each 32x32 row-major
        np.testing.assert_array_equal(np.asarray(image), row.reshape(3, 32, 32).transpose(1, 2, 0))
        assert label == labels[4 if train else 1]


def test_cifar10_transform_and_folder_root(tmp_path: Path) -> None:
    _, _, test_rows, test_labels = write_cifar(tmp_path)
    data = cifar10(tmp_path / "cifar-10-batches-py", train=False, transform=ToTensor(),
                   target_transform=lambda t: t + 100)
    x, y = data[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
    torch.testing.assert_close(x * 255, torch.from_numpy(test_rows[0].reshape(3, 32, 32)).float())
    assert y == test_labels[0] + 100


def test_torchvision_rejects_tiny_files_so_we_read_them_ourselves(tmp_path: Path) -> None:
    """Why vision.py has its own reader: torchvision checks the official md5 sums."""
    write_cifar(tmp_path)
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        CIFAR10(str(tmp_path), train=False, download=False)


def test_cifar10_verify_uses_official_md5(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    with pytest.raises(ValueError, match="official md5"):
        cifar10(tmp_path, train=False, verify=True)
    official = dict(CIFAR10.test_list)["test_batch"]
    assert hashlib.md5((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()).hexdigest() != official


def test_cifar10_missing_root_names_layout_and_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        cifar10(tmp_path / "nowhere", train=True)
    message = str(info.value)
    assert "cifar-10-batches-py" in message and "cifar-10-python.tar.gz" in message and "download=True" in message


def test_cifar10_missing_or_broken_batch(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        cifar10(tmp_path, train=True)
    assert len(cifar10(tmp_path, train=False)) == 3  # the test split does not need it
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="test_batch"):
        cifar10(tmp_path, train=False)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="3072"):
        cifar10(tmp_path, train=False)


def write_imagenet(root: Path, split: str) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(1)
    written: dict[str, list[np.ndarray]] = {}
    for wnid in ["n01440764", "n01443537", "n01484850"]:
        (root / split / wnid).mkdir(parents=True)
        written[wnid] = []
        for i in range(2):
            pixels = rng.integers(0, 256, size=(5 + i, 7, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / wnid / f"{wnid}_{i}.png")
            written[wnid].append(pixels)
    return written


@pytest.mark.parametrize("split", ["train", "val"])
def test_imagenet_image_folder_round_trip(tmp_path: Path, split: str) -> None:
    written = write_imagenet(tmp_path, split)
    data = imagenet(tmp_path, split)
    assert data.classes == sorted(written) and len(data) == 6
    for index, (wnid, i) in enumerate((w, i) for w in sorted(written) for i in range(2)):
        image, label = data[index]
        assert label == sorted(written).index(wnid)
        np.testing.assert_array_equal(np.asarray(image), written[wnid][i])


def test_imagenet_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train"):
        imagenet(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="<wnid>"):
        imagenet(tmp_path, "val")
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="image-net.org"):
        imagenet(tmp_path, "val")  # exists but has no class folders
