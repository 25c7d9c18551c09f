import pytest
import torch
from torch import nn

from local_eval.training.models import ARCHS, build_model, default_arch


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (1, 28), (3, 32)])
def test_smallcnn_shapes(channels, size):
    model = build_model("smallcnn", num_classes=7, in_channels=channels, image_size=size)
    out = model(torch.zeros(5, channels, size, size))
    assert out.shape == (5, 7)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert isinstance(list(model.modules())[-1], nn.Linear)
    assert sum(p.numel() for p in model.parameters()) < 20_000


def test_resnet18_is_torchvisions():
    from torchvision.models import resnet18

    model = build_model("resnet18", num_classes=10, in_channels=3, image_size=32)
    reference = resnet18(weights=None, num_classes=10)
    model.load_state_dict(reference.state_dict())  # the competition's checkpoints load
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_resnet18_other_channels():
    model = build_model("resnet18", num_classes=10, in_channels=1, image_size=28)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_initialisation_follows_the_global_seed():
    def weights():
        torch.manual_seed(4)
        return build_model("smallcnn", num_classes=10, in_channels=1, image_size=8)[0].weight

    assert torch.equal(weights(), weights())


def test_registry_and_defaults():
    assert set(ARCHS) == {"smallcnn", "resnet18", "resnet18_narrow"}
    assert default_arch(1, 8) == "smallcnn"
    assert default_arch(3, 32) == "resnet18"
    known = r"resnet18, resnet18_narrow, smallcnn"
    with pytest.raises(ValueError, match=rf"unknown arch 'vgg'.*{known}"):
        build_model("vgg", num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(ValueError, match="bad model shape"):
        build_model("smallcnn", num_classes=1, in_channels=1, image_size=8)


def test_the_narrow_resnet18_has_resnet18s_layout():
    import torch
    from torchvision.models import resnet18

    from local_eval.training.models import NARROW_WIDTH

    narrow = build_model("resnet18_narrow", num_classes=10, in_channels=1, image_size=14)
    wide = resnet18(weights=None, num_classes=10)
    # the same modules under the same names, every width divided by 64 / NARROW_WIDTH = 8
    names = [n for n, _ in narrow.named_modules()]
    assert names == [n for n, _ in wide.named_modules() if n != "maxpool"]
    for (name, p), (_, q) in zip(narrow.named_parameters(), wide.named_parameters(), strict=True):
        if name == "conv1.weight":  # 3x3 stride-1 stem on 1 channel: a small-image stem
            assert p.shape == (NARROW_WIDTH, 1, 3, 3) and q.shape == (64, 3, 7, 7)
        elif name == "fc.weight":
            assert p.shape == (10, 8 * NARROW_WIDTH) and q.shape == (10, 512)
        elif name != "fc.bias":
            assert p.shape[0] * 64 == q.shape[0] * NARROW_WIDTH, name
    shortcuts = [n for n, m in narrow.named_modules() if n.endswith("downsample")]
    assert shortcuts == ["layer2.0.downsample", "layer3.0.downsample", "layer4.0.downsample"]
    assert narrow(torch.randn(2, 1, 14, 14)).shape == (2, 10)
