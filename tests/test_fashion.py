"""thesislib.data.fashion: IDX parsing, the real files, loaders by scale, clear errors."""

import gzip
import struct

import numpy as np
import pytest
import torch

from thesislib.data import DATASETS, load
from thesislib.data.fashion import FASHION_SCALES, fashion_loaders, fashion_mnist, locate, read_idx


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_fashion_folder(folder, n_train=40, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for i, (stem, array) in enumerate(arrays.items()):
        write_idx(folder / (stem + (".gz" if i % 2 == 0 else "")), array, compress=i % 2 == 0)
    return arrays


def test_read_idx_round_trips_and_rejects_bad_files(tmp_path):
    arrays = make_fashion_folder(tmp_path)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), arrays["train-images-idx3-ubyte"])
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        read_idx(bad)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(truncated)


def test_fashion_mnist_from_folder_scales_to_unit_interval(tmp_path):
    arrays = make_fashion_folder(tmp_path)
    dataset = fashion_mnist(train=False, root=tmp_path)
    x, y = dataset.tensors
    assert x.shape == (20, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert np.array_equal((x * 255).round().to(torch.uint8).squeeze(1).numpy(), arrays["t10k-images-idx3-ubyte"].astype(np.uint8))
    assert torch.equal(y, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())


def test_missing_folder_names_the_three_ways(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        locate(tmp_path / "nowhere")


def test_load_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="fashion-mnist, cifar10"):
        load("mnist-ish")
    assert "fashion-mnist" in DATASETS


def test_real_fashion_mnist_is_available_and_has_the_known_shape():
    test = fashion_mnist(train=False)
    x, y = test.tensors
    assert x.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(y), torch.full((10,), 1000))  # the test split is balanced


def test_loaders_by_scale_are_disjoint_sized_and_seeded():
    spec = FASHION_SCALES["smoke"]
    first, second = fashion_loaders("smoke", seed=0), fashion_loaders("smoke", seed=0)
    assert len(first.train.dataset) == spec.train_size
    assert len(first.calib.dataset) == spec.calib_size
    assert len(first.test.dataset) == spec.test_size
    assert not set(first.train.dataset.indices) & set(first.calib.dataset.indices)
    assert first.train.dataset.indices == second.train.dataset.indices
    assert fashion_loaders("smoke", seed=1).train.dataset.indices != first.train.dataset.indices
    with pytest.raises(ValueError, match="smoke, cpu, gpu"):
        fashion_loaders("huge")
