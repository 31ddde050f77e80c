"""make_loaders: seeded shuffling, unshuffled validation, DDP samplers."""

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from mpsctl.data import build_datasets, make_loaders
from mpsctl.errors import DataError


@pytest.fixture(scope="module")
def bundle():
    return build_datasets("fake", {"shape": [1, 8, 8], "size": 20, "val_size": 10}, seed=0)


def _labels(loader):
    return torch.cat([y for _, y in loader]).tolist()


def test_batches_and_seeded_order(bundle):
    train, val = make_loaders(bundle, batch_size=8, seed=5)
    images, labels = next(iter(make_loaders(bundle, batch_size=8, seed=5)[0]))
    assert images.shape == (8, 1, 8, 8) and labels.dtype == torch.int64
    assert len(train) == 3 and len(val) == 2
    same, _ = make_loaders(bundle, batch_size=8, seed=5)
    other, _ = make_loaders(bundle, batch_size=8, seed=6)
    epochs = [_labels(train), _labels(train)]
    assert epochs == [_labels(same), _labels(same)]
    assert epochs[0] != epochs[1]  # each epoch reshuffles
    assert epochs[0] != _labels(other)
    assert _labels(val) == [bundle.val[i][1] for i in range(len(bundle.val))]


@pytest.mark.parametrize(("kwargs", "key"), [({"batch_size": 0}, "data.batch_size")])
def test_bad_loader_arguments(bundle, kwargs, key):
    with pytest.raises(DataError, match=f"^{key}:"):
        make_loaders(bundle, seed=0, **kwargs)


def test_distributed_samplers(bundle, tmp_path):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        train, val = make_loaders(bundle, batch_size=4, seed=2, distributed=True)
    finally:
        dist.destroy_process_group()
    assert isinstance(train.sampler, DistributedSampler) and train.sampler.shuffle
    assert train.sampler.seed == 2
    assert isinstance(val.sampler, DistributedSampler) and not val.sampler.shuffle
    assert list(val.sampler) == list(range(len(bundle.val)))
