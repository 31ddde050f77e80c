"""Every way build_model can fail gives one ModelError line naming the key to fix."""

import pytest
import torch

from mpsctl.errors import ModelError
from mpsctl.models import build_model


def _error(name, kwargs=None, weights=None):
    with pytest.raises(ModelError) as info:
        build_model(name, kwargs or {}, weights=weights)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_name_suggests_and_lists():
    message = _error("resnet9")
    assert message.startswith("model.name:")
    assert "did you mean 'resnet8'" in message and "mnist_cnn" in message


def test_unknown_torchvision_model():
    message = _error("torchvision:resnet181")
    assert message.startswith("model.name:") and "resnet18" in message


def test_module_import_failure_names_module(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = _error("no_such_pkg_mpsctl.models:Net")
    assert message.startswith("model.name:")
    assert "no_such_pkg_mpsctl.models" in message and "ModuleNotFoundError" in message


def test_module_that_raises_on_import(tmp_path, monkeypatch):
    (tmp_path / "broken_net_mpsctl_test.py").write_text("raise ImportError('needs foo')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    message = _error("broken_net_mpsctl_test:Net")
    assert "broken_net_mpsctl_test" in message and "needs foo" in message


def test_missing_attribute():
    assert _error("torch.nn:Conv9d").startswith("model.name:")


@pytest.mark.parametrize(
    ("name", "kwargs", "key"),
    [
        ("resnet8", {"num_clases": 10}, "model.num_clases"),
        ("resnet8", {"num_classes": 0}, "model.num_classes"),
        ("torchvision:resnet18", {"num_clases": 10}, "model.num_clases"),
        ("torch.nn:Linear", {"in_features": 3}, "model.out_features"),
        ("ds_cnn", {"stem_kernel": [3]}, "model.stem_kernel"),
    ],
)
def test_rejected_kwargs_are_named(name, kwargs, key):
    assert _error(name, kwargs).startswith(f"{key}:")


def test_kwarg_suggestion():
    assert "did you mean 'num_classes'" in _error("mnist_cnn", {"num_clases": 10})


def test_weights_file_missing(tmp_path):
    message = _error("mnist_cnn", weights=str(tmp_path / "nope.pt"))
    assert message.startswith("model.weights:") and "nope.pt" in message


def test_weights_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    assert "no state_dict" in _error("mnist_cnn", weights=str(path))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    assert _error("mnist_cnn", weights=str(junk)).startswith("model.weights:")


def test_weights_refuse_code(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"model": build_model("mnist_cnn", {})}, path)  # a whole module, not tensors
    assert _error("mnist_cnn", weights=str(path)).startswith("model.weights:")


def test_weights_key_and_shape_mismatch(tmp_path):
    state = build_model("mnist_cnn", {"num_classes": 5}).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["features.conv1.bn.bias"]
    path = tmp_path / "w.pt"
    torch.save({"model": state}, path)
    message = _error("mnist_cnn", weights=str(path))
    assert "1 missing (features.conv1.bn.bias)" in message
    assert "1 unexpected (extra.weight)" in message
    assert "head.fc.weight file (5, 64) model (10, 64)" in message
