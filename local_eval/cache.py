"""The model cache: signals of every model the evaluator trains, so nothing is trained twice.

Retraining N reference models dominates an evaluation, and they depend only on the data,
the split, the forget set, the architecture, the recipe and the seed, never on the
submission. So each trained model's signals (forget-set logits, per-example test losses,
accuracies, training seconds) are stored under

    <root>/<group key>/seed-<seed>.npz      (+ seed-<seed>.pt: weights, when asked for)

where the group key is a hash of everything else that defines the model (see
:func:`group_key`; ``meta.json`` beside the files spells it out). A second submission on
the same setup trains nothing; asking for more models trains only the missing seeds.

Every file is written to a temporary name in the same folder and renamed into place, so a
crash or a concurrent run never leaves a half-written entry. The root is
``$UNLEARNING_KIT_CACHE`` if set, else ``~/.cache/unlearning-kit``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .signals import ModelRecord

__all__ = ["CACHE_ENV", "CACHE_FORMAT", "ModelCache", "default_cache_dir", "group_key"]

CACHE_ENV = "UNLEARNING_KIT_CACHE"
CACHE_FORMAT = 1  # bump when what a record holds, or how models are trained, changes


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "unlearning-kit"


def group_key(identity: Mapping) -> str:
    """Hex key of a JSON-able description of a model group (without the seed)."""
    text = json.dumps({"cache_format": CACHE_FORMAT, **identity}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class ModelCache:
    """Records and weights of trained models, one folder per group key.

    ``ModelCache(None)`` is a cache that stores nothing (``--no-cache``).
    """

    def __init__(self, root: str | Path | None):
        self.root = None if root is None else Path(root).expanduser()

    def group(self, identity: Mapping) -> str:
        """The key of ``identity``; writes ``meta.json`` (once) so the folder explains itself."""
        key = group_key(identity)
        if self.root is not None:
            meta = self.root / key / "meta.json"
            if not meta.exists():
                text = json.dumps({"cache_format": CACHE_FORMAT, **identity}, indent=2)
                _atomic_write(meta, text.encode())
        return key

    def load(self, key: str, seed: int) -> ModelRecord | None:
        path = self._path(key, seed, ".npz")
        if path is None or not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return ModelRecord.from_arrays(data)
        except (OSError, ValueError, KeyError):
            return None  # unreadable entry (e.g. from another format): retrain and replace it

    def save(self, key: str, seed: int, record: ModelRecord) -> None:
        path = self._path(key, seed, ".npz")
        if path is not None:
            buffer = io.BytesIO()
            np.savez(buffer, **record.to_arrays())
            _atomic_write(path, buffer.getvalue())

    def load_weights(self, key: str, seed: int) -> dict | None:
        path = self._path(key, seed, ".pt")
        if path is None or not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError):
            return None

    def save_weights(self, key: str, seed: int, state_dict: Mapping) -> None:
        path = self._path(key, seed, ".pt")
        if path is not None:
            buffer = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
            _atomic_write(path, buffer.getvalue())

    def _path(self, key: str, seed: int, suffix: str) -> Path | None:
        return None if self.root is None else self.root / key / f"seed-{seed}{suffix}"


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
