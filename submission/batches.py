"""Batch unpacking: competition dict batches or ``(x, y)`` tuples -> tensors on a device.

Every method reads batches through these functions, so a method runs on the kit's loaders
(``{'image': (B, C, H, W) float32, 'age_group': (B,) int64, ...}``) and on plain
``TensorDataset`` loaders alike.
"""

from collections.abc import Iterable, Iterator, Mapping

import torch

__all__ = [
    "COMPETITION_BATCH",
    "count_batches",
    "count_examples",
    "cycle_batches",
    "device_batches",
    "epoch_passes",
    "group_size",
    "loader_batch_size",
    "unpack_batch",
]

LABEL_KEYS = ("age_group", "label", "labels")


def unpack_batch(batch, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` on ``device`` from a dict batch (``image`` + ``age_group``) or a tuple.

    Never modifies the batch: ``x`` and ``y`` may share memory with it (on the same device),
    so callers must not write into them in place.
    """
    if isinstance(batch, Mapping):
        if "image" not in batch:
            raise KeyError(f"dict batch has no 'image' column (columns: {sorted(batch)})")
        label_key = next((k for k in LABEL_KEYS if k in batch), None)
        if label_key is None:
            raise KeyError(f"dict batch has no label column {LABEL_KEYS}; columns: {sorted(batch)}")
        x, y = batch["image"], batch[label_key]
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        x, y = batch[0], batch[1]
    else:
        raise TypeError(f"expected a dict batch or an (x, y) tuple, got {type(batch).__name__}")
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.float()
    y = torch.as_tensor(y).long()
    # Asynchronous only towards a GPU (its kernels queue behind the copy); a copy from a GPU
    # to the CPU must be complete before the CPU reads it.
    non_blocking = device is not None and torch.device(device).type == "cuda"
    return x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)


def device_batches(loader: Iterable, device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over ``loader``, unpacked onto ``device``."""
    for batch in loader:
        yield unpack_batch(batch, device)


def cycle_batches(loader: Iterable, device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless passes over ``loader`` (re-iterated, so a shuffling loader reshuffles)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield unpack_batch(batch, device)
        if empty:
            raise ValueError("cannot cycle over an empty loader")


COMPETITION_BATCH = 64  # the batch size of the competition's loaders


def loader_batch_size(loader) -> int | None:
    """``loader.batch_size`` where it has one (a ``DataLoader``'s), else ``None``."""
    size = getattr(loader, "batch_size", None)
    return size if isinstance(size, int) and size > 0 else None


def group_size(loader, batch_size: int | None, *, assume: int | None = None) -> int:
    """How many of ``loader``'s batches make one batch of ``batch_size`` examples (at least 1).

    For a recipe published with larger batches than the loader's: its steps are taken over
    groups of loader batches. ``None`` keeps one step a loader batch; so does a loader whose
    batch size is unknown (a plain list's), unless ``assume`` gives one.
    """
    loader_batch = loader_batch_size(loader) or assume
    if batch_size is None or loader_batch is None:
        return 1
    return max(1, round(batch_size / loader_batch))


def count_batches(loader) -> int:
    """``len(loader)``, with a clear error for loaders that have no length."""
    try:
        return len(loader)
    except TypeError:
        raise TypeError(
            f"{type(loader).__name__} has no len(); methods plan their epochs in batches, "
            "so pass a DataLoader (or any iterable with a length)"
        ) from None


# The retain set the kit's own relearning defaults (``shrink_perturb``'s, ``relearn``'s) were
# chosen on: the bundled digits less a random 10% (1,228 with the competition-shaped persons
# forgotten). Their epochs are epochs of about this many examples.
DESIGN_EPOCH_EXAMPLES = 1132


def count_examples(loader) -> int:
    """The examples in one pass over ``loader``: ``len(loader.dataset)`` where it has one,
    else its batches times :data:`COMPETITION_BATCH`."""
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return count_batches(loader) * (loader_batch_size(loader) or COMPETITION_BATCH)


def epoch_passes(loader, *, design_examples: int = DESIGN_EPOCH_EXAMPLES) -> int:
    """The whole passes over ``loader`` that make one epoch of a relearning schedule chosen on
    ``design_examples`` examples: 1 for a retain set of about that size or larger, more for a
    smaller one (the nearest whole number).

    Why: relearning from damage (a redraw, a perturbation) needs optimizer steps, and an epoch
    of a small retain set has few of them: on the competition stubs' 216 retain examples, the
    2 epochs of ``shrink_perturb`` were 8 steps, which left a ResNet-18 far below its retain
    accuracy (docs/leaderboard.md, "Small retain sets"). Larger sets keep their own epochs:
    what the defaults would need there was not measured, and more examples an epoch only
    lengthen the relearning.
    """
    return max(1, round(design_examples / max(count_examples(loader), 1)))
