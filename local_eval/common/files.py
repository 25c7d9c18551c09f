"""File safety, in one place: checksums, atomic writes, locks, weights-only loading."""

import contextlib
import hashlib
import io
import json
import os
import pickle
import pickletools
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch

from local_eval.common.errors import UsageError


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safe_torch_load(path):
    """``torch.load(path, weights_only=True)`` on the CPU; never runs code from the file.

    Raises ``pickle.UnpicklingError`` for a pickle holding other Python objects, ``ValueError``
    for bytes that are no pickle at all (a text file, random bytes), ``OSError`` and the like
    for unreadable ones. (``path`` may be a file object read in its place.)
    """
    with warnings.catch_warnings():  # e.g. "pickle protocol 4": the refusal says enough
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # torch reports bytes its unpickler cannot parse as a weights-only refusal too
            # ("re-running with weights_only=False will likely succeed"): for a file that is
            # no pickle at all that advice misleads, so tell the two apart
            if not _holds_a_pickle(path):
                raise ValueError("not a pickle that torch.load can read") from None
            raise


def _holds_a_pickle(path) -> bool:
    """Whether ``path`` (torch's zip format: its ``data.pkl``; else the file itself) starts with
    a well-formed pickle. Reads the opcodes only (``pickletools``), never unpickles."""
    try:
        if hasattr(path, "seek"):
            path.seek(0)
            raw = path.read()
        else:
            raw = Path(path).read_bytes()
        buffer = io.BytesIO(raw)
        if zipfile.is_zipfile(buffer):
            with zipfile.ZipFile(buffer) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                raw = archive.read(names[0]) if names else b""
        for _ in pickletools.genops(raw):
            pass
        return bool(raw)
    except Exception:  # an unknown opcode, truncated bytes, an unreadable member
        return False


def atomic_write_bytes(path: Path, data) -> None:
    """``data`` (bytes, or ``data(file)`` writing them) into a temporary file beside ``path``
    (a name of its own, ``.NAME.*.tmp``, so concurrent writers never share one), flushed to
    disk, then renamed over ``path``: ``path`` is the old file or the new one, never half of
    one. On failure the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # what a plain open() gives; mkstemp's is 0600
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                data(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


@contextlib.contextmanager
def folder_lock(path: Path, *, busy: str, remove: bool = False):
    """Exclusive right to what ``path`` (a lock file) guards while the block runs; released by
    the OS if this process dies. ``busy`` is the error when another process holds it
    (``{owner}`` becomes its pid); ``remove`` deletes the file at the end (a lock beside a
    folder, rather than in it), which is safe against a holder removing it meanwhile."""
    import fcntl

    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise UsageError(busy.format(owner=owner)) from None
        try:
            current = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        handle.close()  # its holder removed it between our open and our lock: again
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        if remove:
            path.unlink(missing_ok=True)
        handle.close()


def check_out_folder(out: Path) -> None:
    """A clear error, before any work, when ``out`` cannot be a folder we write into."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    ancestor = out
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise UsageError(f"--out {out}: {ancestor} is a broken link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"cannot create --out {out}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to --out {out}: {ancestor} is not writable")
