"""mnist, cifar10 and imagefolder read from tiny files written in torchvision's on-disk formats."""

import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10, MNIST

from mpsctl.data import build_datasets
from mpsctl.errors import DataError


def _write_idx(path, array):
    """MNIST's big-endian IDX format: magic (0, 0, uint8 code 8, ndim), dims, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_root(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return tmp_path


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    """Tiny CIFAR-10 pickles; their md5 cannot match the real files', so the test skips it."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(batches):
        entry = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [i, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(entry))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [*names, "truck"]}))
    monkeypatch.setattr(CIFAR10, "train_list", [[n, None] for n in batches[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", None]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": None})
    return tmp_path


def test_mnist_from_raw_idx_files(mnist_root):
    bundle = build_datasets("mnist", {"root": str(mnist_root), "val_fraction": 0.25}, seed=0)
    # validation is held out of the 12 training images; the official test set is the test split
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (9, 3, 5)
    train_and_val = torch.cat([bundle.train.images, bundle.val.images]).flatten(1)
    assert len(torch.unique(train_and_val, dim=0)) == 12
    assert bundle.input_shape == (1, 28, 28) and bundle.num_classes == 10
    image, label = bundle.test[3]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and label == 3
    raw = (mnist_root / "MNIST/raw/t10k-images-idx3-ubyte").read_bytes()[16:]
    expected = torch.tensor(list(raw[3 * 784 : 4 * 784]), dtype=torch.float32) / 255
    assert torch.equal(image.flatten(), expected)


def test_mnist_size_takes_seeded_subset(mnist_root):
    options = {"root": str(mnist_root), "size": 4}
    a = build_datasets("mnist", options, seed=0)
    b = build_datasets("mnist", options, seed=0)
    assert len(a.train) == 4 and torch.equal(a.train.images, b.train.images)


def test_cifar10_from_python_pickles(cifar_root):
    bundle = build_datasets("cifar10", {"root": str(cifar_root), "download": False}, seed=0)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (18, 2, 4)
    assert bundle.input_shape == (3, 32, 32) and bundle.num_classes == 10
    image, label = bundle.test[1]
    assert image.shape == (3, 32, 32) and label == 1
    assert 0.0 <= image.min() and image.max() <= 1.0
    # channel-first planes: the first 1024 bytes of a row are the red channel
    entry = pickle.loads((cifar_root / "cifar-10-batches-py" / "test_batch").read_bytes())
    red = torch.from_numpy(entry["data"][0, :1024].astype(np.float32) / 255).view(32, 32)
    assert torch.equal(bundle.test[0][0][0], red)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_files_without_download(name, tmp_path):
    with pytest.raises(DataError) as info:
        build_datasets(name, {"root": str(tmp_path), "download": False}, seed=0)
    message = str(info.value)
    assert message.startswith("data.root:") and "data.download=true" in message
    assert "\n" not in message


def test_root_is_required():
    with pytest.raises(DataError, match="^data.root:"):
        build_datasets("cifar10", {}, seed=0)


def test_failed_download_names_the_option(tmp_path, monkeypatch):
    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nno network")

    monkeypatch.setattr(MNIST, "download", offline)
    with pytest.raises(DataError, match="^data.download: .*no network") as info:
        build_datasets("mnist", {"root": str(tmp_path), "download": True}, seed=0)
    assert "\n" not in str(info.value)


def test_download_must_be_a_bool(mnist_root):
    with pytest.raises(DataError, match="^data.download:"):
        build_datasets("mnist", {"root": str(mnist_root), "download": "no"}, seed=0)


def _write_pngs(root, classes, sizes=((20, 30), (40, 10))):
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i, size in enumerate(sizes):
            Image.new("RGB", size, (40 * i, 100, 200)).save(root / cls / f"{i}.png")


def test_imagefolder(tmp_path):
    _write_pngs(tmp_path / "train", ["cat", "dog"])
    _write_pngs(tmp_path / "val", ["cat", "dog"], sizes=((8, 8),))
    _write_pngs(tmp_path / "test", ["cat", "dog"], sizes=((8, 8), (9, 9), (7, 7)))
    bundle = build_datasets("imagefolder", {"root": str(tmp_path), "image_size": 16}, seed=0)
    assert (len(bundle.train), len(bundle.val), bundle.num_classes) == (4, 2, 2)
    assert len(bundle.test) == 6
    assert bundle.input_shape == (3, 16, 16)
    image, label = bundle.val[1]
    assert image.shape == (3, 16, 16) and label == 1
    assert torch.allclose(image[2], torch.full((16, 16), 200 / 255))
    rect = build_datasets("imagefolder", {"root": str(tmp_path), "image_size": [12, 20]}, seed=0)
    assert rect.train[0][0].shape == (3, 12, 20)


def test_imagefolder_without_test_folder_halves_val(tmp_path):
    _write_pngs(tmp_path / "train", ["cat", "dog"])
    _write_pngs(tmp_path / "val", ["cat", "dog"], sizes=((8, 8), (9, 9), (7, 7)))
    options = {"root": str(tmp_path), "image_size": 8}
    bundle = build_datasets("imagefolder", options, seed=0)
    other_seed = build_datasets("imagefolder", options, seed=5)
    assert (len(bundle.val), len(bundle.test)) == (3, 3)
    assert not set(bundle.val.indices) & set(bundle.test.indices)
    assert bundle.test.indices == other_seed.test.indices  # fixed, whatever the recipe seed


@pytest.mark.parametrize(
    ("options", "key"),
    [({"image_size": 16}, "data.root"), ({"image_size": None}, "data.image_size")],
)
def test_imagefolder_errors(tmp_path, options, key):
    _write_pngs(tmp_path / "train", ["cat", "dog"])
    with pytest.raises(DataError, match=f"^{key}:"):
        build_datasets("imagefolder", {"root": str(tmp_path), **options}, seed=0)


def test_imagefolder_class_mismatch(tmp_path):
    _write_pngs(tmp_path / "train", ["cat", "dog"])
    _write_pngs(tmp_path / "val", ["cat"])
    with pytest.raises(DataError, match="^data.root: class folders differ"):
        build_datasets("imagefolder", {"root": str(tmp_path), "image_size": 8}, seed=0)
