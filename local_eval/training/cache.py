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
crash or a concurrent run never leaves a half-written entry. Every entry also carries a
sha256 of its contents (a ``sha256`` array in the ``.npz``; in the ``.pt``, a dict
``{"format", "sha256", "state_dict"}``): an entry that is truncated, has flipped bytes, lacks
the checksum or does not match it is reported on stderr and counts as missing, so it is
rebuilt and replaced, never used. Weights are read with ``torch.load(weights_only=True)``: a
file holding other Python objects (a pickle that could run code) is refused the same way.
The root is ``$UNLEARNING_KIT_CACHE`` if set, else ``~/.cache/unlearning-kit``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from local_eval.common.files import atomic_write_bytes, safe_torch_load
from local_eval.training.signals import ModelRecord

__all__ = [
    "CACHE_ENV",
    "CACHE_FORMAT",
    "ModelCache",
    "default_cache_dir",
    "digest_arrays",
    "digest_tensors",
    "group_key",
]

CACHE_ENV = "UNLEARNING_KIT_CACHE"
CACHE_FORMAT = 1  # bump when what a record holds, or how models are trained, changes
WEIGHTS_FORMAT = "unlearning-kit-weights-1"
CHECKSUM = "sha256"  # the name of the checksum in an entry


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
        self.rejected: list[str] = []  # why entries were not used (also printed on stderr)

    def group(self, identity: Mapping) -> str:
        """The key of ``identity``; writes ``meta.json`` (once) so the folder explains itself."""
        key = group_key(identity)
        if self.root is not None:
            meta = self.root / key / "meta.json"
            if not meta.exists():
                text = json.dumps({"cache_format": CACHE_FORMAT, **identity}, indent=2)
                atomic_write_bytes(meta, text.encode())
        return key

    def load(self, key: str, seed: int) -> ModelRecord | None:
        path = self._path(key, seed, ".npz")
        if path is None or not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except Exception as exc:  # truncated, flipped bytes (bad CRC), not an .npz, ...
            return self._reject(path, f"unreadable ({type(exc).__name__}: {exc})")
        stored = arrays.pop(CHECKSUM, None)
        if stored is None:
            return self._reject(path, "has no checksum")
        if str(stored) != digest_arrays(arrays):
            return self._reject(path, "does not match its checksum")
        try:
            return ModelRecord.from_arrays(arrays)
        except (KeyError, TypeError, ValueError) as exc:
            return self._reject(path, f"is not a model record ({type(exc).__name__}: {exc})")

    def save(self, key: str, seed: int, record: ModelRecord) -> None:
        path = self._path(key, seed, ".npz")
        if path is not None:
            arrays = record.to_arrays()
            buffer = io.BytesIO()
            np.savez(buffer, **arrays, **{CHECKSUM: np.array(digest_arrays(arrays))})
            atomic_write_bytes(path, buffer.getvalue())

    def load_weights(self, key: str, seed: int) -> dict | None:
        path = self._path(key, seed, ".pt")
        if path is None or not path.exists():
            return None
        try:
            entry = safe_torch_load(path)
        except pickle.UnpicklingError:
            return self._reject(
                path, "refused: it holds Python objects other than tensors (could run code)"
            )
        except Exception as exc:  # truncated, flipped bytes, not a torch file, ...
            return self._reject(path, f"unreadable ({type(exc).__name__}: {exc})")
        if not (
            isinstance(entry, dict)
            and entry.get("format") == WEIGHTS_FORMAT
            and isinstance(entry.get("state_dict"), dict)
            and all(torch.is_tensor(v) for v in entry["state_dict"].values())
        ):
            return self._reject(path, "is not a checksummed state dict of this kit")
        if entry.get(CHECKSUM) != digest_tensors(entry["state_dict"]):
            return self._reject(path, "does not match its checksum")
        return entry["state_dict"]

    def save_weights(self, key: str, seed: int, state_dict: Mapping) -> None:
        path = self._path(key, seed, ".pt")
        if path is not None:
            state = {k: v.detach().cpu() for k, v in state_dict.items()}
            digest = digest_tensors(state)
            entry = {"format": WEIGHTS_FORMAT, CHECKSUM: digest, "state_dict": state}
            buffer = io.BytesIO()
            torch.save(entry, buffer)
            atomic_write_bytes(path, buffer.getvalue())

    def _reject(self, path: Path, why: str) -> None:
        """Report an entry that is not used (it will be rebuilt and replaced)."""
        first = why.strip().splitlines()[0] if why.strip() else why
        message = f"cache entry {path} {first}; rebuilding it"
        self.rejected.append(message)
        print(f"warning: {message}", file=sys.stderr)
        return None

    def _path(self, key: str, seed: int, suffix: str) -> Path | None:
        return None if self.root is None else self.root / key / f"seed-{seed}{suffix}"


def digest_arrays(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 of named arrays: names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def digest_tensors(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state dict: names, dtypes, shapes and raw bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
