"""Built-in models, torchvision models by name and the user's own module:attr."""

import pytest
import torch
import torch.fx
from torch import nn

from mpsctl.models import available_models, build_model, register_model

CASES = [
    ("mnist_cnn", {}, (2, 1, 28, 28), 10),
    ("mnist_cnn", {"num_classes": 4, "in_channels": 3}, (2, 3, 32, 32), 4),
    ("resnet8", {}, (2, 3, 32, 32), 10),
    ("resnet8", {"num_classes": 100, "in_channels": 1}, (2, 1, 28, 28), 100),
    ("ds_cnn", {"num_classes": 12, "stem_kernel": [10, 4]}, (2, 1, 49, 10), 12),
    ("mobilenet_v1", {"num_classes": 2}, (2, 3, 96, 96), 2),
    ("ds_cnn1d", {}, (2, 40, 49), 12),
    ("ds_cnn1d", {"in_channels": 3, "num_classes": 4, "width": 16}, (2, 3, 64), 4),
]


def test_builtins_are_registered():
    assert {"mnist_cnn", "resnet8", "ds_cnn", "mobilenet_v1"} <= set(available_models())
    assert available_models("res*") == ["resnet8"]


@pytest.mark.parametrize(("name", "kwargs", "shape", "classes"), CASES)
def test_builds_traces_and_runs(name, kwargs, shape, classes):
    model = build_model(name, kwargs).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.rand(shape)
    out = model(x)
    assert out.shape == (shape[0], classes)
    assert torch.allclose(traced(x), out)


def test_mnist_cnn_is_small_and_uses_relu_modules():
    model = build_model("mnist_cnn", {})
    assert sum(p.numel() for p in model.parameters()) <= 50_000
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64]
    assert all(not m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


def test_resnet8_structure():
    model = build_model("resnet8", {})
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 9  # stem, 3 blocks x 2, two 1x1 shortcuts
    assert isinstance(model.stage1.shortcut, nn.Identity)
    assert model.stage2.shortcut.conv.stride == (2, 2)
    graph = torch.fx.symbolic_trace(model).graph
    assert sum(n.op == "call_function" and "add" in str(n.target) for n in graph.nodes) == 3


def test_ds_cnn_has_depthwise_blocks():
    model = build_model("ds_cnn", {"depth": 2, "width": 8})
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 2 and all(m.groups == 8 for m in depthwise)


def test_ds_cnn1d_is_a_small_conv1d_keyword_spotter():
    model = build_model("ds_cnn1d", {})
    assert 25_000 <= sum(p.numel() for p in model.parameters()) <= 35_000
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert len(convs) == 9 and convs[0].in_channels == 40 and convs[0].stride == (2,)
    assert [m.groups for m in convs[1::2]] == [64] * 4  # depthwise, then pointwise
    assert not any(isinstance(m, nn.Conv2d) for m in model.modules())


def test_torchvision_model_by_name():
    model = build_model("torchvision:resnet18", {"num_classes": 10})
    assert model.fc.out_features == 10
    assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_user_module_attr_from_working_directory(tmp_path, monkeypatch):
    (tmp_path / "user_net_mpsctl_test.py").write_text(
        "from torch import nn\n"
        "class Net(nn.Sequential):\n"
        "    def __init__(self, width=4):\n"
        "        super().__init__(nn.Flatten(), nn.Linear(12, width))\n"
        "instance = Net(2)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    model = build_model("user_net_mpsctl_test:Net", {"width": 3})
    assert model(torch.rand(2, 3, 2, 2)).shape == (2, 3)
    first = build_model("user_net_mpsctl_test:instance", {})
    second = build_model("user_net_mpsctl_test:instance", {})
    assert first is not second and first[1].out_features == 2


def test_weights_round_trip(tmp_path):
    source = build_model("resnet8", {"num_classes": 5})
    path = tmp_path / "w.pt"
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, path)
    loaded = build_model("resnet8", {"num_classes": 5}, weights=str(path))
    assert torch.equal(loaded.head.fc.weight, source.head.fc.weight)
    ddp = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save(ddp, path)
    loaded = build_model("resnet8", {"num_classes": 5}, weights=str(path))
    assert torch.equal(loaded.stem.conv.weight, source.stem.conv.weight)


def test_register_model_rejects_duplicates():
    with pytest.raises(ValueError, match="registered twice"):
        register_model("resnet8")(lambda: nn.Identity())
