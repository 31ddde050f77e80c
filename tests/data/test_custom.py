"""``data.name: package.module:factory``: the protocol and the checks on what it returns."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from mpsctl.data import DataBundle, build_datasets, dataset_options
from mpsctl.data.custom import checked_bundle
from mpsctl.errors import DataError

FACTORY = '''
import torch

class Set(torch.utils.data.Dataset):
    def __init__(self, n, offset):
        self.labels = [(i + offset) % 3 for i in range(n)]
    def __len__(self):
        return len(self.labels)
    def __getitem__(self, i):
        return torch.full((2, 5), float(i)), self.labels[i]

def make(size=12, scale=1.0, seed=0):
    make.calls.append({"size": size, "scale": scale, "seed": seed})
    return Set(size, 0), Set(4, 1)
make.calls = []

def make_no_seed(size=6):
    return Set(size, 0), Set(3, 0), Set(3, 2)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_sets.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("user_sets", None)
    yield
    sys.modules.pop("user_sets", None)


def test_factory_gets_options_and_seed(user_module):
    bundle = build_datasets("user_sets:make", {"size": 9, "scale": 2.0}, seed=7)
    import user_sets

    assert user_sets.make.calls == [{"size": 9, "scale": 2.0, "seed": 7}]
    assert bundle.input_shape == (2, 5) and bundle.num_classes == 3
    assert (len(bundle.train), len(bundle.val), bundle.test) == (9, 4, None)
    assert set(dataset_options("user_sets:make")) == {"size", "scale"}


def test_factory_without_seed_and_with_test(user_module):
    bundle = build_datasets("user_sets:make_no_seed", {}, seed=3)
    assert len(bundle.test) == 3
    with pytest.raises(DataError, match=r"^data.scale: not an option .*user_sets:make_no_seed"):
        build_datasets("user_sets:make_no_seed", {"scale": 1.0}, seed=0)


def test_numpy_and_tensor_labels_and_class_attributes():
    items = [(torch.zeros(4), np.int64(2)), (torch.zeros(4), torch.tensor(0))]
    assert checked_bundle("m:f", (items, items)).num_classes == 3

    class Named(list):
        classes = ["a", "b", "c", "d", "e"]

    assert checked_bundle("m:f", (Named(items), items)).num_classes == 5

    class WithTargets(list):
        targets = [2, 0]

    assert checked_bundle("m:f", (WithTargets(items), items)).num_classes == 3


@pytest.mark.parametrize(
    ("made", "text"),
    [
        (DataBundle([(torch.zeros(4), 0)], [(torch.zeros(4), 0)], (3,), 2),
         "says input_shape [3] but its samples are [4]"),
        (([(torch.zeros(4), 1.5)], [(torch.zeros(4), 0)]), "has label 1.5"),
        (([(torch.zeros(4), -1)], [(torch.zeros(4), 0)]), "train label -1"),
        (([torch.zeros(4)], [(torch.zeros(4), 0)]), "must be (input tensor, integer label)"),
        (([], [(torch.zeros(4), 0)]), "empty train set"),
        ((np.zeros(3), [(torch.zeros(4), 0)]), "train[0] of m:f is a float64; samples must be"),
        ((7, [(torch.zeros(4), 0)]), "returned int as the train set"),
    ],
)
def test_bad_returns(made, text):
    with pytest.raises(DataError) as info:
        checked_bundle("m:f", made)
    assert str(info.value).startswith("data.name: ") and text in str(info.value)
