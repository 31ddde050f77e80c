"""``tensors``: the user's arrays from npz, npy pairs and pt files, any sample rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpsctl.data import build_datasets
from mpsctl.data.arrays import ArraySplit
from mpsctl.errors import DataError


def _arrays(n: int, sample: tuple[int, ...], classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(2.0, 3.0, (n, *sample)) * np.arange(1, sample[0] + 1).reshape(
        (sample[0],) + (1,) * (len(sample) - 1))).astype(np.float32)
    return x, rng.integers(0, classes, n)


def _stack(dataset):
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


@pytest.mark.parametrize("sample", [(16,), (4, 10), (2, 5, 6)])
@pytest.mark.parametrize("kind", ["npz", "npy", "pt"])
def test_every_format_and_rank(tmp_path, kind, sample):
    x, y = _arrays(50, sample)
    if kind == "npz":
        np.savez(tmp_path / "d.npz", x=x, y=y)
        train = str(tmp_path / "d.npz")
    elif kind == "pt":
        torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, tmp_path / "d.pt")
        train = str(tmp_path / "d.pt")
    else:
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        train = {"x": str(tmp_path / "x.npy"), "y": str(tmp_path / "y.npy")}
    bundle = build_datasets("tensors", {"train": train, "val_fraction": 0.2}, seed=0)
    assert bundle.input_shape == sample and bundle.num_classes == int(y.max()) + 1
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (35, 10, 5)
    item, label = bundle.val[3]
    row = int(bundle.val.indices[3])
    assert item.dtype == torch.float32 and torch.equal(item, torch.from_numpy(x[row]))
    assert label == y[row]
    if kind == "npy":
        assert isinstance(bundle.train.x, np.memmap)  # read lazily, never loaded whole


def test_carved_splits_are_disjoint_and_fixed_by_split_seed(tmp_path):
    x, y = _arrays(100, (8,))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    options = {"train": str(tmp_path / "d.npz"), "val_fraction": 0.2, "test_fraction": 0.1}
    a = build_datasets("tensors", options, seed=0)
    b = build_datasets("tensors", options, seed=9)  # the recipe seed does not move splits
    other = build_datasets("tensors", {**options, "split_seed": 1}, seed=0)
    sets = [set(s.indices.tolist()) for s in (a.train, a.val, a.test)]
    assert [len(s) for s in sets] == [70, 20, 10]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set().union(*sets) == set(range(100))
    assert torch.equal(a.test.indices, b.test.indices)
    assert not torch.equal(a.test.indices, other.test.indices)
    assert build_datasets("tensors", {**options, "test_fraction": 0}, seed=0).test is None


def test_normalisation_uses_the_training_split_only(tmp_path):
    x, y = _arrays(400, (3, 7))
    x[:200] += 100.0  # rows that go to val/test below would bias the statistics if counted
    np.savez(tmp_path / "d.npz", x=x, y=y)
    options = {"train": str(tmp_path / "d.npz"), "normalize": True}
    bundle = build_datasets("tensors", options, seed=0)
    rows = bundle.train.indices.numpy()
    mean = x[rows].mean(axis=(0, 2))
    std = x[rows].std(axis=(0, 2))
    assert torch.allclose(bundle.train.mean.flatten(), torch.tensor(mean), rtol=1e-4)
    assert torch.allclose(bundle.train.std.flatten(), torch.tensor(std), rtol=1e-4)
    train = _stack(bundle.train)
    assert torch.allclose(train.mean(dim=(0, 2)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(train.std(dim=(0, 2), unbiased=False), torch.ones(3), atol=1e-4)
    # validation uses the training constants, not its own
    val_rows = bundle.val.indices.numpy()
    expected = (x[val_rows] - mean[None, :, None]) / std[None, :, None]
    assert torch.allclose(_stack(bundle.val), torch.tensor(expected, dtype=torch.float32),
                          atol=1e-4)


def test_chunked_statistics_match_numpy(tmp_path, monkeypatch):
    from mpsctl.data import arrays

    monkeypatch.setattr(arrays, "CHUNK", 7)  # many chunks, the last one short
    x, _ = _arrays(60, (5,))
    mean, std = arrays.channel_stats(np.lib.format.open_memmap(
        tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=x.shape), torch.arange(60))
    assert torch.equal(mean, torch.zeros(5)) and torch.equal(std, torch.ones(5))  # constant
    mean, std = arrays.channel_stats(x, torch.arange(60))
    assert np.allclose(mean.numpy(), x.mean(0), rtol=1e-5)
    assert np.allclose(std.numpy(), x.std(0), rtol=1e-4)


def test_separate_files_for_every_split(tmp_path):
    for name, n in (("train", 30), ("val", 8), ("test", 6)):
        x, y = _arrays(n, (2, 9), seed=n)
        np.save(tmp_path / f"x_{name}.npy", x)
        np.save(tmp_path / f"y_{name}.npy", y)
    options = {name: {"x": str(tmp_path / f"x_{name}.npy"), "y": str(tmp_path / f"y_{name}.npy")}
               for name in ("train", "val", "test")}
    bundle = build_datasets("tensors", options, seed=0)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (30, 8, 6)
    assert isinstance(bundle.test, ArraySplit)
    assert torch.equal(bundle.test[5][0], torch.from_numpy(np.load(tmp_path / "x_test.npy")[5]))


def test_custom_keys_and_integer_inputs(tmp_path):
    x = np.arange(20 * 4, dtype=np.uint8).reshape(20, 4)
    np.savez(tmp_path / "d.npz", images=x, targets=np.arange(20) % 2)
    bundle = build_datasets("tensors", {"train": str(tmp_path / "d.npz"), "x_key": "images",
                                        "y_key": "targets", "num_classes": 5}, seed=0)
    assert bundle.num_classes == 5 and bundle.train[0][0].dtype == torch.float32


def _write_bad(tmp_path):
    x, y = _arrays(20, (4,))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "y_short.npy", y[:5])
    np.save(tmp_path / "y_float.npy", y.astype(np.float32))
    np.save(tmp_path / "y_neg.npy", y - 5)
    np.save(tmp_path / "x_other.npy", np.zeros((20, 5), np.float32))
    np.save(tmp_path / "x_flat.npy", np.zeros(20, np.float32))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")


@pytest.mark.parametrize(
    ("options", "key", "text"),
    [
        ({}, "data.train", "needs the training data"),
        ({"train": "x.npy"}, "data.train", "holds one array"),
        ({"train": "missing.npz"}, "data.train", "no file"),
        ({"train": {"x": "x.npy"}}, "data.train", "exactly the keys x and y"),
        ({"train": {"x": "x.npy", "y": "y_short.npy"}}, "data.train", "labels have shape [5]"),
        ({"train": {"x": "x.npy", "y": "y_float.npy"}}, "data.train", "must be integers"),
        ({"train": {"x": "x.npy", "y": "y_neg.npy"}}, "data.train", "is negative"),
        ({"train": {"x": "x_flat.npy", "y": "y.npy"}}, "data.train", "[N, ...]"),
        ({"train": "d.npz", "x_key": "inputs"}, "data.train", "has no array 'inputs'"),
        ({"train": "d.npz", "num_classes": 2}, "data.num_classes", "out of range"),
        ({"train": "d.npz", "val": {"x": "x_other.npy", "y": "y.npy"}}, "data.val",
         "samples are [5] but training samples are [4]"),
        ({"train": "broken.pt"}, "data.train", "cannot read"),
        ({"train": "d.npz", "test_fraction": 1.5}, "data.test_fraction",
         "[0, 1)"),
        ({"train": "d.npz", "val_fraction": 0.6, "test_fraction": 0.4}, "data.val_fraction",
         "leave no training samples"),
        ({"train": "d.npz", "normalize": "yes"}, "data.normalize", "true or false"),
        ({"train": "d.npz", "val": "d.npz", "val_fraction": 0.2}, "data.val_fraction",
         "unused, since data.val is a file"),
        ({"train": "d.npz", "nomalize": True}, "data.nomalize", "did you mean 'normalize'"),
    ],
)
def test_bad_input_is_one_line_naming_the_key(tmp_path, monkeypatch, options, key, text):
    _write_bad(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        build_datasets("tensors", options, seed=0)
    message = str(info.value)
    assert message.startswith(f"{key}:") and text in message, message
    assert "\n" not in message
