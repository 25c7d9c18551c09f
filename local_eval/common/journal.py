"""A long job's finished pieces, kept in a folder beside its results, so that running the same
command again after an interruption (Ctrl-C, a killed session, a crash) picks up where it
stopped instead of starting over (the leaderboard keeps each method's evaluation here).

A journal is a folder of JSON files, one per piece (``KEY.json``, each written atomically, so
a piece is there whole or not at all) and ``identity.json``: what the job was started with.
Opening a journal with another identity is refused, so pieces computed under one setting
are never mixed into a job of another. One writer at a time: the caller holds the output
folder's lock.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from local_eval.common.errors import UsageError
from local_eval.common.files import atomic_write_json

__all__ = ["Journal", "is_key"]

IDENTITY = "identity.json"
_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def is_key(key: str) -> bool:
    """Whether ``key`` can name a journal's piece (it becomes a file name)."""
    return bool(_KEY.fullmatch(key)) and key + ".json" != IDENTITY


class Journal:
    """The pieces kept in ``folder`` (created if missing) for a job of ``identity`` (a JSON-able
    dict; its keys name what must match for a piece to be reused).

    Raises :class:`UsageError` when ``folder`` already holds a job of another identity,
    naming the settings that differ.
    """

    def __init__(self, folder: Path, identity: dict, *, what: str = "job"):
        self.folder = Path(folder)
        identity = json.loads(json.dumps(identity))  # as it reads back (tuples become lists)
        kept = self._read(self.folder / IDENTITY) if (self.folder / IDENTITY).exists() else None
        if kept is None:
            atomic_write_json(self.folder / IDENTITY, identity)
        elif kept != identity:
            keys = kept.keys() | identity.keys()
            differ = sorted(k for k in keys if kept.get(k) != identity.get(k))
            shown = "; ".join(
                f"{k}: {json.dumps(kept.get(k))} there, {json.dumps(identity.get(k))} now"
                for k in differ
            )
            raise UsageError(
                f"{self.folder} holds a {what} started with other settings ({shown}): give "
                f"another output folder, or delete {self.folder} to start it over"
            )

    def keys(self) -> list[str]:
        """The keys of the pieces kept so far, sorted."""
        return sorted(p.stem for p in self.folder.glob("*.json") if p.name != IDENTITY)

    def get(self, key: str):
        """The piece kept under ``key``, or ``None`` if it was not done yet."""
        path = self._path(key)
        return self._read(path) if path.exists() else None

    def put(self, key: str, value) -> None:
        """Keep ``value`` (JSON-able; floats round-trip exactly) under ``key``."""
        atomic_write_json(self._path(key), value)

    def _path(self, key: str) -> Path:
        if not is_key(key):
            raise ValueError(
                f"a journal key is letters, digits and '_.-' (not 'identity'): {key!r}"
            )
        return self.folder / f"{key}.json"

    @staticmethod
    def _read(path: Path):
        try:
            return json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(
                f"{path} cannot be read back ({exc}): delete it, and that piece is done again"
            ) from None
