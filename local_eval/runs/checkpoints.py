"""Submitted checkpoints, scored instead of running a submission (``--checkpoints``).

The organisers' scorer took what a notebook wrote: ``unlearned_checkpoint_{j}.pth`` for
j < N, plain state dicts, in a folder or in ``submission.zip``. :func:`open_checkpoints` reads
such a folder or zip and :meth:`Checkpoints.state` gives checkpoint j, checked. Nothing a
checkpoint holds is trusted:

- the names must be exactly ``unlearned_checkpoint_0.pth`` .. ``_{N-1}.pth`` (none missing,
  none twice, N as asked); other files in a folder are ignored, other files in a zip are
  refused (a zip from a notebook holds checkpoints only);
- a zip member may sit in folders (the competition's template zips ``/kaggle/tmp/*.pth``, so
  its members are ``kaggle/tmp/unlearned_checkpoint_{j}.pth``), but its path must be
  relative and free of ``..``; a member is at most :data:`MAX_MEMBER_BYTES` uncompressed,
  the zip at most :data:`MAX_TOTAL_BYTES` (a zip bomb is refused: sizes are counted as the
  bytes are read, not taken from the zip's own headers);
- each is loaded with ``torch.load(weights_only=True)`` (a pickle that could run code is
  refused), must hold finite tensors with exactly the original's keys and shapes.

A folder written by ``python -m submission.run`` has a ``manifest.json``: its data
fingerprint and its original model's sha256 must be this evaluation's, else the checkpoints
were made from other data or another original and scoring them here means nothing, so it is
refused (an error, not a warning). Its per-checkpoint seconds become the report's seconds
per run, for each checkpoint whose bytes are the ones it recorded (sha256). The zip holds
checkpoints only, as the competition's does, so a zip's manifest is the runner's
``manifest.json`` beside it (``--zip`` writes both into one folder); it is taken only when it
records every checkpoint in the zip with the same sha256, else it describes other files and
is ignored (a note says so). Checkpoints without a manifest have no seconds (the report says
so).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from local_eval.common.checks import load_state_dict, state_dict_problems
from local_eval.common.errors import UsageError
from local_eval.common.files import sha256_of

__all__ = [
    "CHECKPOINT",
    "CHECKPOINT_RE",
    "MANIFEST",
    "MAX_MEMBER_BYTES",
    "MAX_TOTAL_BYTES",
    "Checkpoints",
    "check_like_original",
    "open_checkpoints",
]

CHECKPOINT = "unlearned_checkpoint_{}.pth"  # the competition's names, j = 0 .. N-1
CHECKPOINT_RE = re.compile(r"^unlearned_checkpoint_(\d+)\.pth$")
MANIFEST = "manifest.json"  # written by python -m submission.run
MAX_MEMBER_BYTES = 1 << 30  # 1 GiB a checkpoint: a ResNet-18 state dict is about 45 MB
MAX_TOTAL_BYTES = 64 << 30  # 64 GiB a zip: 512 ResNet-18 checkpoints are about 23 GB


@dataclass(frozen=True)
class Checkpoints:
    """N checkpoints in a folder or a zip, in the order j = 0 .. N-1."""

    path: Path
    names: tuple[str, ...]  # names[j] is checkpoint j (a file in the folder, or a member)
    sha256: tuple[str, ...]  # of each file's bytes
    manifest: Mapping | None = None  # submission.run's manifest.json, if there is one
    notes: tuple[str, ...] = field(default=())

    @property
    def source(self) -> str:
        return f"checkpoints:{self.path}"

    @property
    def is_zip(self) -> bool:
        return self.path.is_file()

    def describe(self) -> dict:
        """Where they came from and what defines them (JSON-able, as ``LoadedMethod``'s)."""
        digest = hashlib.sha256("\n".join(self.sha256).encode()).hexdigest()
        identity = {"kind": "checkpoints", "name": self.path.name, "code_sha256": digest}
        return {"source": self.source, "notes": list(self.notes), "identity": identity}

    def seconds(self, index: int) -> float:
        """Seconds of run ``index`` as the manifest records them, else NaN (unknown): also
        when the checkpoint is not the file the manifest recorded (another sha256)."""
        entry = _entry(self.manifest, index)
        seconds = entry.get("seconds")
        if entry.get("sha256") != self.sha256[index] or not isinstance(seconds, (int, float)):
            return math.nan
        return float(seconds)

    def state(self, index: int, original: Mapping) -> dict:
        """Checkpoint ``index``, loaded weights-only and checked against ``original``."""
        name = self.names[index]
        if self.is_zip:
            with zipfile.ZipFile(self.path) as archive:
                data = io.BytesIO(_read_member(archive, name))
            where = f"{self.path}: checkpoint {name}"
            state = load_state_dict(name, what=f"{self.path}: checkpoint", data=data)
        else:
            where = f"checkpoint {self.path / name}"
            state = load_state_dict(self.path / name, what="checkpoint")
        check_like_original(state, original, where)
        return state

    def check_manifest(self, *, data_fingerprint: str, original_sha256: str | None) -> None:
        """Refuse checkpoints whose manifest names other data or another original."""
        if self.manifest is None:
            return
        clash = []
        recorded = self.manifest.get("data_fingerprint")
        if recorded is not None and recorded != data_fingerprint:
            clash.append(
                f"data fingerprint {recorded[:12]}... (this evaluation's: "
                f"{data_fingerprint[:12]}...; check --dataset, --forget and --seed)"
            )
        recorded = self.manifest.get("original_sha256")
        if recorded is not None and original_sha256 is not None and recorded != original_sha256:
            clash.append(
                f"original model sha256 {recorded[:12]}... (--original's: "
                f"{original_sha256[:12]}...; give the original they were made from)"
            )
        if clash:
            raise UsageError(
                f"the checkpoints in {self.path} were made by another job: its {MANIFEST} "
                "names " + " and ".join(clash)
            )


def open_checkpoints(path: str | Path, *, n_models: int | None = None) -> Checkpoints:
    """The checkpoints in a folder or a zip (see the module docstring); ``n_models``: how
    many there must be (``None``: as many as there are, at least 2)."""
    path = Path(path)
    notes: tuple[str, ...] = ()
    if path.is_dir():
        names, digests = _folder(path)
        manifest = _read_manifest(path / MANIFEST)
    elif path.is_file():
        names, digests = _zip(path)
        manifest, notes = _manifest_beside(path, digests)
    else:
        raise UsageError(f"--checkpoints {path} not found: give a folder or a .zip")
    indices = sorted(names)
    n = len(indices)
    if n_models is not None and n != n_models:
        raise UsageError(
            f"--checkpoints {path} holds {n} checkpoint(s), not {n_models} (--n-models): give "
            "the folder or zip with all of them, or leave --n-models out to score what is there"
        )
    if n < 2:
        zipped = sorted(path.glob("*.zip")) if n == 0 and path.is_dir() else []
        hint = f" (give the zip in it instead: --checkpoints {zipped[0]})" if zipped else ""
        raise UsageError(
            f"--checkpoints {path} holds {n} checkpoint(s): the score needs 2 or more{hint}"
        )
    missing = sorted(set(range(n)) - set(indices))
    if missing:
        raise UsageError(
            f"--checkpoints {path}: unlearned_checkpoint_{missing[0]}.pth is missing "
            f"({len(missing)} of 0..{n - 1} missing; the names must run 0 .. N-1)"
        )
    return Checkpoints(
        path=path,
        names=tuple(names[j] for j in range(n)),
        sha256=tuple(digests[j] for j in range(n)),
        manifest=manifest,
        notes=notes,
    )


def check_like_original(state: Mapping, original: Mapping, where: str) -> None:
    """``state`` must have exactly the original's keys and shapes."""
    problems = state_dict_problems(state, original)
    if problems:
        raise UsageError(
            f"{where} is not a state dict of the original's architecture ("
            + "; ".join(problems)
            + "); check --arch and that it was saved with torch.save(net.state_dict(), path)"
        )


def _entry(manifest: Mapping | None, index: int) -> Mapping:
    """The manifest's record of checkpoint ``index`` (empty when it has none)."""
    entries = (manifest or {}).get("checkpoints")
    entry = entries.get(str(index)) if isinstance(entries, Mapping) else None
    return entry if isinstance(entry, Mapping) else {}


def _read_manifest(path: Path) -> dict | None:
    """``path`` read as JSON, ``None`` when there is no such file."""
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        manifest = None
    if not isinstance(manifest, dict):
        raise UsageError(
            f"{path} is unreadable: restore it, or score a copy of the checkpoints without it"
        )
    return manifest


def _manifest_beside(path: Path, digests: dict[int, str]) -> tuple[dict | None, tuple[str, ...]]:
    """The runner's manifest next to the zip ``path``, if it records exactly these
    checkpoints (index and sha256); else none, and a note saying why when there is a file."""
    beside = path.parent / MANIFEST
    try:
        manifest = _read_manifest(beside)
    except UsageError:
        return None, (f"{beside} is unreadable; the zip's checkpoints are scored without it",)
    if manifest is None:
        return None, ()
    recorded = {j: _entry(manifest, j).get("sha256") for j in digests}
    if recorded != digests:
        return None, (
            f"{beside} records other checkpoints than {path.name} holds (another run's, or "
            "the zip was changed); the zip is scored without it: no seconds per run, no "
            "check of its data and original",
        )
    return manifest, ()


def _folder(path: Path) -> tuple[dict[int, str], dict[int, str]]:
    names, digests = {}, {}
    for file in path.iterdir():
        match = CHECKPOINT_RE.match(file.name)
        if match and file.is_file():
            index = int(match.group(1))
            names[index] = file.name
            digests[index] = sha256_of(file)
    return names, digests


def _zip(path: Path) -> tuple[dict[int, str], dict[int, str]]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise UsageError(f"--checkpoints {path} is neither a folder nor a zip file") from None
    names, digests, total = {}, {}, 0
    with archive:
        for info in archive.infolist():
            name = info.filename
            pure = PurePosixPath(name.replace("\\", "/"))
            if pure.is_absolute() or ".." in pure.parts or ":" in name:
                raise UsageError(
                    f"--checkpoints {path}: refused member {name!r} (an absolute path or one "
                    "that climbs out with '..')"
                )
            if info.is_dir():
                continue
            match = CHECKPOINT_RE.match(pure.name)
            if not match:
                raise UsageError(
                    f"--checkpoints {path}: unexpected member {name!r} (a submission zip "
                    "holds unlearned_checkpoint_{j}.pth files only)"
                )
            index = int(match.group(1))
            if index in names:
                raise UsageError(f"--checkpoints {path}: {pure.name} is in the zip twice")
            data = _read_member(archive, name)
            total += len(data)
            if total > MAX_TOTAL_BYTES:
                raise UsageError(
                    f"--checkpoints {path}: more than {_size(MAX_TOTAL_BYTES)} uncompressed "
                    "(the limit; a zip bomb?)"
                )
            names[index] = name
            digests[index] = hashlib.sha256(data).hexdigest()
    return names, digests


def _read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    """The member's bytes, refused once more than :data:`MAX_MEMBER_BYTES` come out (what
    the zip's header claims is not trusted)."""
    with archive.open(name) as member:
        data = member.read(MAX_MEMBER_BYTES + 1)
    if len(data) > MAX_MEMBER_BYTES:
        raise UsageError(
            f"zip member {name} is over {_size(MAX_MEMBER_BYTES)} uncompressed (the limit "
            "for one checkpoint; a zip bomb?)"
        )
    return data


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.3g} {unit}"
    return f"{n} bytes"
