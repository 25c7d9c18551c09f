"""Write a miniature of the competition's hidden input folder (see ``shared/spec/kaggle.md``).

Layout written by :func:`make_stub`::

    DIR/retain.csv, forget.csv, validation.csv   columns image_id, age_group, age, person_id
    DIR/images/<part1>/<part2>.png               32x32 RGB, image_id = "<part1>-<part2>"
    DIR/original_model.pth                       resnet18(num_classes=10) state dict, trained
                                                 on retain + forget (float32 0..255 inputs)
    DIR/stub.json                                how the stub was made (not in the real folder)

and with ``mock=True`` only ``DIR/empty.txt``, like the public copy of the competition data.
The folder is built in a temporary sibling directory and renamed into place, so a reader never
sees half a stub. Everything is a function of the arguments: the same seed gives the same CSVs
and images byte for byte, and the same model on the same machine and thread count.
"""

import csv
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

from data_stubs.images import NUM_CLASSES, person_style, render

__all__ = ["CSV_COLUMNS", "StubConfig", "StubError", "make_stub"]

CSV_COLUMNS = ("image_id", "age_group", "age", "person_id")
SPLIT_FILES = {"retain": "retain.csv", "forget": "forget.csv", "validation": "validation.csv"}
FORMAT_VERSION = 1  # bump when the same arguments would produce different files

# Relative frequency of each age group among persons: the real data is imbalanced too.
GROUP_WEIGHTS = np.array([0.5, 1.0, 2.0, 3.0, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5])


class StubError(ValueError):
    """A stub cannot be written with these arguments (the message says why)."""


@dataclass(frozen=True)
class StubConfig:
    """Sizes and training of a stub; the defaults give 240 training images in a few seconds."""

    seed: int = 0
    n_persons: int = 40  # persons in retain + forget
    n_forget_persons: int = 4  # of those, persons in the forget set (10% of training images)
    n_val_persons: int = 10  # further persons, in validation only
    images_per_person: int = 6
    epochs: int = 4  # training epochs of the original model (Adam, lr 1e-3, batch 64)

    def check(self) -> None:
        """Raise :class:`StubError` when the sizes cannot make a meaningful stub."""
        if self.n_forget_persons < 1:
            raise StubError(f"n_forget_persons must be at least 1, got {self.n_forget_persons}")
        if self.n_persons < self.n_forget_persons + 4:
            raise StubError(
                f"n_persons ({self.n_persons}) must exceed n_forget_persons "
                f"({self.n_forget_persons}) by at least 4, so the retain set keeps every "
                "forgotten class"
            )
        if self.n_val_persons < 1 or self.images_per_person < 1 or self.epochs < 0:
            raise StubError(
                "n_val_persons and images_per_person must be at least 1 and epochs at least 0"
            )


def make_stub(out_dir, config: StubConfig = StubConfig(), *, mock=False, force=False) -> Path:
    """Write a stub competition input folder at ``out_dir`` (see the module docstring).

    Refuses an existing non-empty ``out_dir`` unless ``force``; then replaces it whole.
    Returns the folder's path.
    """
    out_dir = Path(out_dir)
    _check_destination(out_dir, force=force)
    if not mock:
        config.check()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        if mock:
            (tmp / "empty.txt").write_text("")
        else:
            _write_full_stub(tmp, config)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _check_destination(out_dir: Path, *, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise StubError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise StubError(f"{out_dir} exists and is not empty; pass --force to replace it")
    ancestor = out_dir.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise StubError(f"cannot create {out_dir}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise StubError(f"cannot create {out_dir}: {ancestor} is not writable")


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
        os.rename(out_dir, old / "previous")
    os.rename(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old)


def _people(config: StubConfig, rng: np.random.Generator) -> list[dict]:
    """Every person: id, age group, age, split (retain, forget or validation), drawing style.

    The forget set is class-imbalanced like the real one: three quarters of its persons
    (rounded up) belong to one age group and the rest to a second, and the retain set keeps
    at least two persons of each of those groups (forgetting persons, not whole classes).
    Every other person's group is drawn from the imbalanced :data:`GROUP_WEIGHTS`.
    """
    k, total = config.n_forget_persons, config.n_persons + config.n_val_persons
    weights = GROUP_WEIGHTS / GROUP_WEIGHTS.sum()
    first, second = (int(g) for g in rng.choice(NUM_CLASSES, size=2, replace=False, p=weights))
    n_first = -(-3 * k // 4)
    forced = [first] * n_first + [second] * (k - n_first) + [first, first, second, second]
    groups = forced + [int(g) for g in rng.choice(NUM_CLASSES, size=total - len(forced),
                                                   p=weights)]
    ids = rng.choice(np.arange(1000, 10000), size=total, replace=False)
    people = []
    for i, (pid, group) in enumerate(zip(ids, groups, strict=True)):
        split = "forget" if i < k else "retain" if i < config.n_persons else "validation"
        people.append({
            "person_id": int(pid),
            "age_group": group,
            "age": int(5 + 7 * group + rng.integers(0, 7)),  # inside the group's 7-year band
            "split": split,
            "style": person_style(group, rng),
        })
    return people


def _write_full_stub(root: Path, config: StubConfig) -> None:
    rng = np.random.default_rng(config.seed)
    rows = {split: [] for split in SPLIT_FILES}
    images = {split: [] for split in SPLIT_FILES}
    for person in _people(config, rng):
        for j in range(config.images_per_person):
            part1, part2 = f"{person['person_id']:05d}", f"{j:04d}"
            pixels = render(person["style"], rng)
            path = root / "images" / part1 / f"{part2}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, mode="RGB").save(path, format="PNG")
            split = person["split"]
            rows[split].append((f"{part1}-{part2}", person["age_group"], person["age"],
                                person["person_id"]))
            images[split].append(pixels)
    order_rng = np.random.default_rng(config.seed + 1)
    for split, name in SPLIT_FILES.items():
        order = order_rng.permutation(len(rows[split]))  # real CSVs are not grouped by person
        _write_csv(root / name, [rows[split][i] for i in order])
    train_x = np.stack(images["retain"] + images["forget"])
    train_y = np.array([r[1] for r in rows["retain"] + rows["forget"]])
    net = train_original(train_x, train_y, epochs=config.epochs, seed=config.seed)
    torch.save(net.state_dict(), root / "original_model.pth")
    info = {
        "made_by": "python -m data_stubs make",
        "format_version": FORMAT_VERSION,
        "config": asdict(config),
        "sizes": {split: len(r) for split, r in rows.items()},
        "forget_class_counts": np.bincount([r[1] for r in rows["forget"]],
                                           minlength=NUM_CLASSES).tolist(),
        "original_train_accuracy": round(_accuracy(net, train_x, train_y), 4),
        "original_validation_accuracy": round(
            _accuracy(net, np.stack(images["validation"]),
                      np.array([r[1] for r in rows["validation"]])), 4),
        "torch": torch.__version__,
    }
    (root / "stub.json").write_text(json.dumps(info, indent=2) + "\n")


def _write_csv(path: Path, rows: list[tuple]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)


def _as_input(images: np.ndarray) -> torch.Tensor:
    """``(N, 32, 32, 3)`` uint8 -> ``(N, 3, 32, 32)`` float32 in 0..255, as the competition."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().contiguous()


def train_original(images: np.ndarray, labels: np.ndarray, *, epochs: int, seed: int) -> nn.Module:
    """The "original model": ResNet-18 trained on ``images`` (N, 32, 32, 3) uint8, in eval mode.

    Adam at lr 1e-3, batch 64: with the defaults about 100% accuracy on the training images
    and 60% on unseen persons' (chance: 10%), so there is something to unlearn.
    Leaves torch's global generator as it was.
    """
    x, y = _as_input(images), torch.from_numpy(labels).long()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torchvision.models.resnet18(weights=None, num_classes=NUM_CLASSES)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        net.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x)).split(64):
                optimizer.zero_grad()
                nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
                optimizer.step()
        _recalibrate_batchnorm(net, x)
    return net.eval()


@torch.no_grad()
def _recalibrate_batchnorm(net: nn.Module, x: torch.Tensor) -> None:
    """Running BatchNorm statistics = exact averages over ``x`` under the final weights.

    A few dozen steps are too few for the default momentum (0.1) to forget the statistics of
    the untrained network, and eval-mode accuracy would lag far behind train-mode accuracy.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    net.train()
    for batch in x.split(128):
        net(batch)
    for bn in norms:
        bn.momentum = 0.1  # back to torchvision's default


@torch.no_grad()
def _accuracy(net: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    logits = torch.cat([net(b) for b in _as_input(images).split(256)])
    return float((logits.argmax(1).numpy() == labels).mean())
