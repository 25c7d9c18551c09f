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
    assert set(ARCHS) == {"smallcnn", "resnet18"}
    assert default_arch(1, 8) == "smallcnn"
    assert default_arch(3, 32) == "resnet18"
    with pytest.raises(ValueError, match=r"unknown arch 'vgg'.*resnet18, smallcnn"):
        build_model("vgg", num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(ValueError, match="bad model shape"):
        build_model("smallcnn", num_classes=1, in_channels=1, image_size=8)
