"""``python -m submission.run merge SHARD_DIR... --out DIR [--zip]``: the K folders of a
sharded job (``python -m submission.run --shard i/K``) as one folder of N checkpoints.

Checks first, writes after: every folder is a shard of the same job (method,
hyperparameters, seed, data, original model, submission file: the manifest's identity), the
K shards are each there once, and each holds all its checkpoints with the checksum its
manifest records. Then the checkpoints are copied (each through a temporary name) into
``--out``, a new or empty folder, with the manifest an unsharded job writes, so the
unsharded command can resume or re-zip it; ``--zip`` writes ``submission.zip`` too.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

from local_eval.common.errors import UsageError
from local_eval.common.files import (
    atomic_write_bytes,
    atomic_write_json,
    check_out_folder,
    sha256_of,
)
from submission_tools.run.folder import CHECKPOINT, LOCK, MANIFEST, lock_folder, write_zip
from submission_tools.run.job import parse_shard

NOT_IDENTITY = ("checkpoints", "n", "jobs", "shard", "merged_from")  # per folder, not per job


def merge(folders: list[Path], out: Path, *, zip_too: bool = False) -> dict:
    """Merge ``folders`` into ``out``; returns the merged manifest (see the module doc)."""
    shards = [(folder, *_read(folder)) for folder in folders]
    (first, first_manifest, (_, count)) = shards[0]
    job = _identity(first_manifest)
    n = first_manifest.get("n")
    seen: dict[int, Path] = {}
    for folder, manifest, (index, k) in shards:
        differ = sorted(key for key in set(job) | set(_identity(manifest))
                        if job.get(key) != manifest.get(key))  # fmt: skip
        if differ or manifest.get("n") != n:
            what = ", ".join(differ) or f"--n {n} vs {manifest.get('n')}"
            raise UsageError(f"{first} and {folder} are folders of different jobs ({what} differ)")
        if k != count:
            raise UsageError(f"{first} is a shard of {count}, {folder} of {k}: merge one split")
        if index in seen:
            raise UsageError(f"shard {index}/{count} given twice ({seen[index]} and {folder})")
        seen[index] = folder
    missing = [f"{i}/{count}" for i in range(count) if i not in seen]
    if missing:
        raise UsageError(
            f"missing shard(s) {', '.join(missing)}: run the job with --shard {missing[0]} "
            "(the same options, its own --out), then merge again"
        )
    entries = {}
    for folder, manifest, (index, _) in shards:
        entries.update(_checked_checkpoints(folder, manifest, range(index, n, count)))
    _write(out, entries, {**job, "n": n}, folders, zip_too=zip_too)
    return entries


def _read(folder: Path) -> tuple[dict, tuple[int, int]]:
    path = folder / MANIFEST
    if not path.is_file():
        raise UsageError(f"{folder} holds no {MANIFEST}: not a folder of python -m submission.run")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("checkpoints"), dict):
        raise UsageError(f"{path} is not a manifest of python -m submission.run")
    return manifest, parse_shard(manifest.get("shard"))


def _identity(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in NOT_IDENTITY}


def _checked_checkpoints(folder: Path, manifest: dict, indices: range) -> dict:
    """The manifest entries of ``indices``, each file present with its recorded sha256."""
    bad = []
    for j in indices:
        entry = manifest["checkpoints"].get(str(j))
        path = folder / CHECKPOINT.format(j)
        if entry is None or not path.is_file() or sha256_of(path) != entry.get("sha256"):
            bad.append(j)
    if bad:
        raise UsageError(
            f"{folder}: {len(bad)} of its {len(indices)} checkpoints missing or damaged (e.g. "
            f"{CHECKPOINT.format(bad[0])}): run its job again (the same command resumes it)"
        )
    return {str(j): {**manifest["checkpoints"][str(j)], "from": str(folder)} for j in indices}


def _write(out: Path, entries: dict, manifest: dict, folders, *, zip_too: bool) -> None:
    check_out_folder(out)
    if out.exists() and any(p.name != LOCK for p in out.iterdir()):
        raise UsageError(f"--out {out} is not empty: merge writes into a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    with lock_folder(out):
        for _, entry in sorted(entries.items(), key=lambda kv: int(kv[0])):
            source = Path(entry["from"]) / entry["file"]
            with source.open("rb") as src:
                atomic_write_bytes(out / entry["file"], lambda f, s=src: shutil.copyfileobj(s, f))
        checkpoints = {
            key: {k: v for k, v in entry.items() if k != "from"} for key, entry in entries.items()
        }
        merged = {**manifest, "checkpoints": checkpoints, "merged_from": [str(f) for f in folders]}
        atomic_write_json(out / MANIFEST, merged)
        if zip_too:
            print(f"wrote {write_zip(out, manifest['n'])}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m submission.run merge",
        description="Put the K folders of a sharded job (--shard i/K) together.",
    )
    parser.add_argument("folders", nargs="+", type=Path, metavar="SHARD_DIR")
    parser.add_argument("--out", type=Path, required=True, help="a new or empty folder")
    parser.add_argument("--zip", action="store_true", help="also write submission.zip")
    args = parser.parse_args(argv)
    try:
        entries = merge(args.folders, args.out, zip_too=args.zip)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged {len(entries)} checkpoints of {len(args.folders)} shards into {args.out}")
    return 0
