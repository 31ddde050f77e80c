"""Bundled mnist5k, synthetic fake data and the dataset registry's error messages."""

import pytest
import torch

from mpsctl.data import DataBundle, available_datasets, build_datasets, dataset_options
from mpsctl.errors import DataError


def _stack(dataset):
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def test_builtin_datasets_are_registered():
    assert {"mnist5k", "fake", "mnist", "cifar10", "imagefolder"} <= set(available_datasets())
    assert available_datasets("mnist*") == ["mnist", "mnist5k"]
    assert dataset_options("fake")["size"] == 256


def test_mnist5k_default_split():
    bundle = build_datasets("mnist5k", {}, seed=0)
    assert isinstance(bundle, DataBundle)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (3200, 800, 1000)
    assert bundle.input_shape == (1, 28, 28)
    assert bundle.num_classes == 10
    image, label = bundle.train[0]
    assert image.dtype == torch.float32 and image.shape == (1, 28, 28)
    assert isinstance(label, int)
    val_images, val_labels = _stack(bundle.val)
    assert val_images.min() == 0.0 and val_images.max() == 1.0
    assert set(val_labels.tolist()) == set(range(10))
    all_labels = torch.cat([bundle.train.labels, bundle.val.labels, bundle.test.labels])
    assert torch.bincount(all_labels).tolist() == [500] * 10
    assert torch.bincount(bundle.test.labels).tolist() == [100] * 10


def _rows(images):
    return {bytes(row.numpy()) for row in images.flatten(1)}


@pytest.mark.parametrize("seed", [0, 7])
def test_mnist5k_test_split_is_fixed_and_disjoint(seed):
    bundle = build_datasets("mnist5k", {}, seed=seed)
    reference = build_datasets("mnist5k", {"val_fraction": 0.5}, seed=0)
    assert torch.equal(bundle.test.images, reference.test.images)  # same for any seed
    train, val, test = (_rows(s.images) for s in (bundle.train, bundle.val, bundle.test))
    assert not (test & train) and not (test & val) and not (train & val)
    assert len(train | val | test) == 5000 - _duplicate_images()


def _duplicate_images():
    """Identical digit images in the bundled file (counted once by a set of rows)."""
    from mpsctl.data.bundled import MNIST5K_FILE, load_u8_file

    images = load_u8_file(MNIST5K_FILE).images
    return len(images) - len(_rows(images))


def test_mnist5k_is_deterministic_per_seed():
    a, b = build_datasets("mnist5k", {}, 3), build_datasets("mnist5k", {}, 3)
    c = build_datasets("mnist5k", {}, 4)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.val.images, c.val.images)


def test_mnist5k_options():
    bundle = build_datasets("mnist5k", {"val_fraction": 0.1}, 0)
    assert (len(bundle.train), len(bundle.val)) == (3600, 400)
    full = build_datasets("mnist5k", {}, 0)
    small = build_datasets("mnist5k", {"size": 100, "val_fraction": None}, 0)
    assert len(small.train) == 100 and len(small.val) == 800
    assert torch.equal(small.train.images, full.train.images[:100])


def test_fake_shapes_ranges_and_determinism():
    options = {"shape": [1, 12, 10], "num_classes": 3, "size": 40, "val_size": 8}
    bundle = build_datasets("fake", options, seed=1)
    assert (len(bundle.train), len(bundle.val)) == (40, 8)
    assert bundle.input_shape == (1, 12, 10) and bundle.num_classes == 3
    images, labels = _stack(bundle.train)
    assert images.shape == (40, 1, 12, 10)
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert set(labels.tolist()) <= {0, 1, 2}
    again, _ = _stack(build_datasets("fake", options, seed=1).train)
    other, _ = _stack(build_datasets("fake", options, seed=2).train)
    assert torch.equal(images, again) and not torch.equal(images, other)
    with pytest.raises(IndexError):
        bundle.train[40]


@pytest.mark.parametrize("shape", [[128], [40, 49], [3, 32, 32], [2, 3, 5, 6]])
def test_fake_of_any_rank(shape):
    bundle = build_datasets("fake", {"shape": shape, "num_classes": 4, "size": 32}, seed=0)
    assert bundle.input_shape == tuple(shape)
    images, labels = _stack(bundle.train)
    assert images.shape == (32, *shape) and 0 <= images.min() and images.max() <= 1
    # learnable: every sample is nearest to its own class texture
    textures = bundle.train.textures.flatten(1)
    nearest = torch.cdist(images.flatten(1), 0.5 * textures + 0.25).argmin(1)
    assert (nearest == labels).float().mean() > 0.9


def test_fake_defaults_and_learnable_labels():
    bundle = build_datasets("fake", {}, seed=0)
    assert (len(bundle.train), len(bundle.val), bundle.input_shape) == (256, 64, (3, 32, 32))
    assert len(bundle.test) == 64
    test_images, _ = _stack(bundle.test)
    assert not torch.equal(test_images, _stack(bundle.val)[0])
    images, labels = _stack(bundle.val)
    # each image is half its class texture: the nearest texture gives the label
    textures = bundle.val.textures.flatten(1)
    nearest = torch.cdist(images.flatten(1), 0.5 * textures + 0.25).argmin(1)
    assert (nearest == labels).float().mean() > 0.95


def _one_line_error(name, options):
    with pytest.raises(DataError) as info:
        build_datasets(name, options, seed=0)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_dataset_lists_names_and_suggests():
    message = _one_line_error("mnist5", {})
    assert message.startswith("data.name:")
    assert "did you mean 'mnist5k'" in message and "cifar10" in message


@pytest.mark.parametrize(
    ("name", "options", "key"),
    [
        ("mnist5k", {"val_fractio": 0.1}, "data.val_fractio"),
        ("mnist5k", {"root": "/data"}, "data.root"),
        ("mnist5k", {"val_fraction": 1.5}, "data.val_fraction"),
        ("mnist5k", {"size": 0}, "data.size"),
        ("mnist5k", {"size": 3201}, "data.size"),
        ("fake", {"shape": []}, "data.shape"),
        ("fake", {"shape": [3, 0]}, "data.shape"),
        ("fake", {"num_classes": True}, "data.num_classes"),
        ("fake", {"val_size": -1}, "data.val_size"),
        ("fake", {"image_size": 32}, "data.image_size"),
    ],
)
def test_bad_options_name_the_key(name, options, key):
    assert _one_line_error(name, options).startswith(f"{key}:")


def test_unknown_option_suggests_close_name():
    assert "did you mean 'val_fraction'" in _one_line_error("mnist5k", {"val_fractio": 0.1})
