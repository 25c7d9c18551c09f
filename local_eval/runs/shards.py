"""Shard folders: one shard's records on disk, and merging shards into one evaluation.

``python -m local_eval shard --shard i/K ... --out SHARD_DIR`` computes the jobs of shard i
(``local_eval.runs.jobs``) and writes

    SHARD_DIR/records.npz     every record of its jobs, the forget labels and ids, and a
                              sha256 over all of them
    SHARD_DIR/manifest.json   how they were made: the configuration's identity and its
                              fingerprint, i/K, the jobs, the original model's sha256, the
                              command, versions, seconds; written last, so a folder with a
                              manifest holds a finished shard

``python -m local_eval merge SHARD_DIR...`` reads K such folders (:func:`merge_shards`),
checks that they are the K shards of one evaluation, each once, made from one original
model, and assembles them (``pipeline.combine``) into the result an unsharded run gives.
Every refusal says what is wrong and what to run.
"""

from __future__ import annotations

import io
import json
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from local_eval.common.files import atomic_write_bytes
from local_eval.runs.jobs import Job, Shard, evaluation_jobs
from local_eval.runs.pipeline import EvalConfig, EvalResult, ShardResult, combine
from local_eval.training.cache import digest_arrays
from local_eval.training.signals import ModelRecord
from local_eval.training.train import Recipe

__all__ = ["MANIFEST", "RECORDS", "check_shard_folder", "merge_shards", "read_shard", "write_shard"]

SHARD_FORMAT = "unlearning-kit-shard-1"
MANIFEST = "manifest.json"
RECORDS = "records.npz"
CHECKSUM = "sha256"
_SEP = "__"  # role__index__field in records.npz


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
def check_shard_folder(folder: Path, shard: Shard) -> None:
    """Before any work: ``folder`` may hold only this shard's files, or none of ours.

    Files of ours that belong to another shard, or files by our names that we did not
    write, are never overwritten."""
    manifest, records = folder / MANIFEST, folder / RECORDS
    if manifest.exists():
        try:
            found = _load_manifest(folder)
        except ValueError as exc:
            raise ValueError(f"--out {folder}: {exc}; choose another --out") from None
        if found["shard"] != str(shard):
            raise ValueError(
                f"--out {folder} already holds shard {found['shard']}, not {shard}: give every "
                "shard its own folder"
            )
    elif records.exists() and not _is_records_file(records):
        raise ValueError(
            f"--out {folder} holds a {RECORDS} that no shard wrote: choose another --out"
        )


def write_shard(result: ShardResult, folder: Path, *, command: Sequence[str]) -> list[Path]:
    """Write ``result`` into ``folder`` (see the module docstring); returns the two paths.

    The old manifest goes first and the new one comes last, each file through a temporary
    name and a rename, so an interrupted write never leaves a manifest that vouches for
    records it did not describe."""
    from local_eval.common.provenance import versions

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = _record_arrays(result)
    digest = digest_arrays(arrays)
    (folder / MANIFEST).unlink(missing_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{CHECKSUM: np.array(digest)})
    atomic_write_bytes(folder / RECORDS, buffer.getvalue())
    manifest = {
        "format": SHARD_FORMAT,
        "shard": str(result.shard),
        "fingerprint": result.fingerprint(),
        "identity": result.identity(),
        "jobs": [str(job) for job in result.jobs()],
        "records_sha256": digest,
        "original_sha256": result.original_sha256,
        "config": {
            **asdict(result.config),
            "recipe_overrides": dict(result.config.recipe_overrides),
        },
        "data": result.data,
        "arch": result.arch,
        "recipe": result.recipe.as_dict(),
        "method": result.method,
        "device": result.device,
        "stage_seconds": result.stage_seconds,
        "models_trained": result.trained,
        "command": list(command),
        "versions": versions(),
        "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    atomic_write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return [folder / RECORDS, folder / MANIFEST]


def _record_arrays(result: ShardResult) -> dict[str, np.ndarray]:
    arrays = {"targets": result.targets, "example_ids": result.example_ids.astype(str)}
    for job in result.jobs():
        for name, value in result.records[job].to_arrays().items():
            arrays[_SEP.join((job.role, str(job.index), name))] = value
    return arrays


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------
def read_shard(folder: Path) -> tuple[ShardResult, dict]:
    """The shard in ``folder`` and its manifest; ``ValueError`` saying what to do when it
    is not a finished, intact shard folder."""
    folder = Path(folder)
    manifest = _load_manifest(folder)
    shard = Shard.parse(manifest["shard"])
    rerun = f"run its shard command again ({_command_for(manifest, shard)})"
    try:
        with np.load(folder / RECORDS, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as exc:  # missing, truncated, flipped bytes, not an .npz
        raise ValueError(
            f"{folder / RECORDS} cannot be read ({type(exc).__name__}): {rerun}"
        ) from None
    stored = str(arrays.pop(CHECKSUM, ""))
    if stored != digest_arrays(arrays) or stored != manifest["records_sha256"]:
        raise ValueError(f"{folder / RECORDS} does not match its checksum (damaged): {rerun}")
    config = EvalConfig(**manifest["config"])
    jobs = shard.select(evaluation_jobs(config.n_models))
    if [str(job) for job in jobs] != manifest["jobs"]:
        raise ValueError(f"{folder / MANIFEST} lists other jobs than shard {shard} has: {rerun}")
    records = {job: ModelRecord.from_arrays(_fields(arrays, job)) for job in jobs}
    result = ShardResult(
        config=config,
        shard=shard,
        data=manifest["data"],
        arch=manifest["arch"],
        recipe=Recipe(**manifest["recipe"]),
        method=manifest["method"],
        device=manifest["device"],
        records=records,
        targets=arrays["targets"],
        example_ids=arrays["example_ids"],
        original_sha256=manifest["original_sha256"],
        stage_seconds=manifest["stage_seconds"],
        trained=manifest["models_trained"],
    )
    return result, manifest


def _fields(arrays: Mapping[str, np.ndarray], job: Job) -> dict[str, np.ndarray]:
    prefix = f"{job.role}{_SEP}{job.index}{_SEP}"
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def _load_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ValueError(f"shard folder not found: {folder}")
    if not path.exists():
        raise ValueError(
            f"{folder} is not a finished shard folder (no {MANIFEST}): its "
            "'python -m local_eval shard' did not finish; run it again"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SHARD_FORMAT:
        raise ValueError(f"{path} is not a shard manifest of this kit ({SHARD_FORMAT})")
    return manifest


def _is_records_file(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as data:
            return CHECKSUM in data.files and "targets" in data.files
    except Exception:
        return False


# --------------------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------------------
def merge_shards(folders: Sequence[Path]) -> EvalResult:
    """The evaluation the K shards in ``folders`` make together (see the module docstring)."""
    if not folders:
        raise ValueError("give the shard folders to merge")
    shards = [(Path(f), *read_shard(Path(f))) for f in folders]
    (first_dir, first, first_manifest) = shards[0]
    count = first.shard.count
    for folder, part, manifest in shards[1:]:
        if part.shard.count != count:
            raise ValueError(
                f"{first_dir} is shard {first.shard} but {folder} is shard {part.shard}: "
                "merge the shards of one split (the same K)"
            )
        if manifest["fingerprint"] != first_manifest["fingerprint"]:
            differences = "; ".join(_differences(first_manifest["identity"], manifest["identity"]))
            raise ValueError(
                f"{first_dir} and {folder} are shards of different evaluations "
                f"({differences or 'other code or data'}): merge shards made with the same options"
            )
    _check_each_shard_once(shards, count)
    originals = {p.original_sha256 for _, p, _ in shards} - {None}
    if len(originals) > 1:
        which = ", ".join(
            f"{f} {p.original_sha256[:12]}" for f, p, _ in shards if p.original_sha256
        )
        raise ValueError(
            f"the shards started from different original models ({which}): training on a GPU "
            "is not bitwise reproducible; run 'python -m local_eval prepare' once with a "
            "shared --cache-dir, then the shards again with that --cache-dir"
        )
    return combine([part for _, part, _ in sorted(shards, key=lambda s: s[1].shard)])


def _check_each_shard_once(shards, count: int) -> None:
    seen: dict[int, Path] = {}
    for folder, part, _ in shards:
        if part.shard.index in seen:
            raise ValueError(
                f"shard {part.shard} given twice ({seen[part.shard.index]} and {folder}): "
                "give each shard once"
            )
        seen[part.shard.index] = folder
    missing = [Shard(i, count) for i in range(count) if i not in seen]
    if missing:
        _, first, manifest = shards[0]
        jobs = evaluation_jobs(first.config.n_models)
        lost = [job for shard in missing for job in shard.select(jobs)]
        names = ", ".join(str(s) for s in missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise ValueError(
            f"missing shard(s) {names} ({len(lost)} of {len(jobs)} jobs, e.g. "
            f"{', '.join(str(j) for j in lost[:3])}): run "
            f"'{_command_for(manifest, missing[0])}'"
            + (" (and likewise for the others)" if len(missing) > 1 else "")
            + ", then merge again"
        )


def _command_for(manifest: dict, shard: Shard) -> str:
    """The shard command of ``manifest`` for ``shard``, its own folder left to choose."""
    kept, skip = [], False
    for arg in manifest.get("command", []):
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--shard", "--out"):
            skip = "=" not in arg
            continue
        kept.append(arg)
    argv = ["python", "-m", "local_eval", "shard", "--shard", str(shard), *kept]
    return shlex.join(argv) + " --out SHARD_DIR"


def _differences(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    """``key: a vs b`` for every leaf where two nested dicts differ."""
    found = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        name = f"{prefix}{key}"
        if isinstance(left, Mapping) and isinstance(right, Mapping):
            found += _differences(left, right, f"{name}.")
        elif left != right:
            found.append(f"{name}: {_short(left)} vs {_short(right)}")
    return found


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 24 else text[:20] + "..."
