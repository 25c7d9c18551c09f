"""Tiny models and loaders for the submission tests (CPU, milliseconds per step)."""

import contextlib
import inspect
import time

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import DataLoader, Dataset, TensorDataset

torch.set_num_threads(1)

CLASSES = 10
SHAPE = (3, 8, 8)


class TinyNet(nn.Module):
    """Conv-BN-ReLU x2, global pooling, Linear head: the layer types methods look up."""

    def __init__(self, in_channels: int = 3, classes: int = CLASSES):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(self.body(x))


class DictDataset(Dataset):
    """Competition-style samples: ``{'image', 'age_group', 'person_id'}``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "age_group": self.labels[i], "person_id": i}


class SlowLoader:
    """Wraps a loader and sleeps ``delay_s`` per batch: a big recipe without using the CPU.
    ``read`` counts the batches read through it. It has no ``batch_size``: methods that merge
    loader batches into their published batch take it to hold the competition's 64."""

    def __init__(self, loader, delay_s: float = 0.0):
        self.loader, self.delay_s, self.read = loader, delay_s, 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            time.sleep(self.delay_s)
            self.read += 1
            yield batch


def make_data(n: int, *, seed: int, shift: float = 0.0, shape: tuple = SHAPE):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, *shape, generator=g) + shift
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    return images, labels


def make_loader(images, labels, *, form: str, batch_size: int, shuffle: bool = True):
    dataset = DictDataset(images, labels) if form == "dict" else TensorDataset(images, labels)
    g = torch.Generator().manual_seed(0)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g)


def make_net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet()
    # Non-trivial BatchNorm statistics, as in a trained model.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture
def tiny_setup():
    """``(net, data, make)``: data is {split: (images, labels)}; make(form) builds loaders.

    The forget set is 1 batch against 20 retain batches (the competition's forget set is
    about 2% of the training data) and sits apart from the retain data (shifted images).
    """
    data = {
        "retain": make_data(80, seed=1),
        "forget": make_data(4, seed=2, shift=2.0),
        "val": make_data(16, seed=3),
    }

    def make(form: str):
        return tuple(
            make_loader(*data[s], form=form, batch_size=4) for s in ("retain", "forget", "val")
        )

    return make_net(), data, make


class Untouchable:
    """A loader that fails if anything reads it (forget_free's forget set, neggrad's retain)."""

    def __len__(self):
        return 1

    def __iter__(self):
        raise AssertionError("a loader the method must not read was read")


@contextlib.contextmanager
def recorded_steps():
    """Every optimizer step taken inside the block, as ``(optimizer, lr, momentum, weight
    decay, number of parameters)`` of its first parameter group (the optimizer itself, not its
    id: a collected optimizer's id can be reused by the next)."""
    steps = []

    def hook(optimizer, args, kwargs):
        group = optimizer.param_groups[0]
        steps.append(
            (optimizer, group["lr"], group["momentum"], group["weight_decay"], len(group["params"]))
        )

    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield steps
    finally:
        handle.remove()


def keyword_defaults(fn) -> dict:
    """``fn``'s keyword-only parameters and their defaults (a method's published settings)."""
    params = inspect.signature(fn).parameters
    return {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
