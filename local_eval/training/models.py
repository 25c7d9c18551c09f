"""Model architectures for the local evaluator, by name.

``build_model(arch, num_classes=, in_channels=, image_size=)`` returns a freshly initialised
``nn.Module`` (initialisation follows torch's global generator: seed it first).

- ``smallcnn``: two conv-BatchNorm-ReLU blocks (16 and 32 channels, a 2x2 max-pool between),
  an adaptive average pool to 4x4 and a Linear head. About 10k weights; on the 8x8 digits it
  trains to ~99% test accuracy in under a second on one CPU core. The default for ``digits``
  and ``mnist5k``.
- ``resnet18``: ``torchvision.models.resnet18(weights=None, num_classes=...)``, exactly the
  competition's model (its original_model.pth loads into it); the first convolution is
  swapped for one of ``in_channels`` inputs when that is not 3. The default for 32x32 RGB.
- ``resnet18_narrow``: ResNet-18's shape at an eighth of its width (8/16/32/64 channels),
  for small images on a CPU: torchvision's ``BasicBlock`` in four stages of two, a
  BatchNorm after every conv, 1x1 downsample shortcuts where a stage halves the size and
  widens, global average pooling and a Linear classifier, under torchvision's module names
  (``conv1``, ``bn1``, ``layer1``..``layer4``, ``downsample``, ``fc``), so the competition
  entries' layer choices (the stem conv, BatchNorm, the shortcuts, the classifier) mean here
  what they meant there. Adapted to small images as CIFAR ResNets are: a 3x3 stride-1 stem
  and no max-pool (torchvision's 7x7 stride-2 stem and max-pool would leave 4x4 maps of a
  14x14 input before the first stage).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["ARCHS", "build_model", "default_arch"]

SMALLCNN_WIDTHS = (16, 32)
SMALLCNN_GRID = 4  # spatial size the features are pooled to before the head


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def small_cnn(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    w1, w2 = SMALLCNN_WIDTHS
    return nn.Sequential(
        *_conv_bn_relu(in_channels, w1),
        nn.MaxPool2d(2),
        *_conv_bn_relu(w1, w2),
        # 8x8 inputs are already at the grid after the max-pool (and the pool is not free)
        nn.Identity() if image_size // 2 == SMALLCNN_GRID else nn.AdaptiveAvgPool2d(SMALLCNN_GRID),
        nn.Flatten(),
        nn.Linear(w2 * SMALLCNN_GRID * SMALLCNN_GRID, num_classes),
    )


def resnet18(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


NARROW_WIDTH = 8  # channels of the first stage; ResNet-18 has 64


class NarrowResNet18(nn.Module):
    """ResNet-18's layout at ``width`` channels in the first stage (see the module doc)."""

    def __init__(self, *, num_classes: int, in_channels: int, width: int = NARROW_WIDTH):
        from torchvision.models.resnet import BasicBlock

        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages, planes = [], width
        for i in range(4):
            out = width * 2**i
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or planes != out:
                down = nn.Sequential(
                    nn.Conv2d(planes, out, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(out),
                )
            blocks = [BasicBlock(planes, out, stride, down), BasicBlock(out, out)]
            stages.append(nn.Sequential(*blocks))
            planes = out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18_narrow(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return NarrowResNet18(num_classes=num_classes, in_channels=in_channels)


ARCHS: dict[str, Callable[..., nn.Module]] = {
    "smallcnn": small_cnn,
    "resnet18": resnet18,
    "resnet18_narrow": resnet18_narrow,
}


def build_model(arch: str, *, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """A new model of architecture ``arch`` (a key of :data:`ARCHS`)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(sorted(ARCHS))}")
    if num_classes < 2 or in_channels < 1 or image_size < 2:
        raise ValueError(
            f"bad model shape: num_classes={num_classes}, in_channels={in_channels}, "
            f"image_size={image_size}"
        )
    return ARCHS[arch](num_classes=num_classes, in_channels=in_channels, image_size=image_size)


def default_arch(in_channels: int, image_size: int) -> str:
    """``resnet18`` for RGB images of at least 32x32 (the competition), else ``smallcnn``."""
    return "resnet18" if in_channels == 3 and image_size >= 32 else "smallcnn"
