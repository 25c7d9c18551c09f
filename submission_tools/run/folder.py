"""The output folder: checkpoints, their manifest, the zip; checked, resumable, atomic."""

import json
import shutil
import sys
import time
import zipfile
from pathlib import Path

import torch

from local_eval.common.errors import UsageError
from local_eval.common.files import atomic_write_bytes, atomic_write_json, folder_lock, sha256_of
from local_eval.runs.checkpoints import CHECKPOINT, CHECKPOINT_RE, MANIFEST
from submission_tools.run.budget import BudgetWatch

LOCK = ".submission-run.lock"
ZIP_NAME = "submission.zip"


def load_manifest(out: Path, identity: dict) -> dict:
    """The folder's manifest if it belongs to the same job, else a fresh one."""
    path = out / MANIFEST
    if not path.exists():
        return {**identity, "checkpoints": {}}
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        print(f"warning: {path} is unreadable; redoing every checkpoint", file=sys.stderr)
        return {**identity, "checkpoints": {}}
    clash = [k for k, v in identity.items() if manifest.get(k) != v]
    if clash:
        raise UsageError(
            f"{out} holds checkpoints of a different job ({', '.join(clash)} differ); "
            "use another --out or empty that folder"
        )
    manifest.setdefault("checkpoints", {})
    return manifest


def valid_checkpoints(out: Path, manifest: dict, n: int) -> dict:
    """Manifest entries whose file exists with the recorded checksum; removes the rest
    (and says so when a file is there but its checksum does not match: a corrupt file)."""
    for tmp in out.glob("*.tmp"):
        tmp.unlink()
    keep = {}
    for key, entry in manifest["checkpoints"].items():
        path = out / entry["file"]
        if int(key) >= n or not path.is_file():
            continue
        if sha256_of(path) == entry["sha256"]:
            keep[key] = entry
        else:
            print(
                f"warning: {path} does not match its checksum in {MANIFEST} (corrupt); redoing it",
                file=sys.stderr,
            )
    for path in out.iterdir():  # checkpoints without a valid entry, or beyond N
        match = CHECKPOINT_RE.match(path.name)
        if match and match.group(1) not in keep:
            path.unlink()
    return keep


def write_zip(out: Path, n: int) -> Path:
    names = [CHECKPOINT.format(i) for i in range(n)]
    missing = [name for name in names if not (out / name).is_file()]
    if missing:
        raise UsageError(f"cannot zip: {len(missing)} checkpoints missing ({missing[0]}, ...)")

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as archive:
            for name in names:
                archive.write(out / name, arcname=name)

    target = out / ZIP_NAME
    atomic_write_bytes(target, write)
    return target


def save_checkpoint(out: Path, manifest: dict, i: int, state: dict, **record) -> None:
    """Checkpoint ``i`` and its manifest entry, each written atomically (checkpoint first)."""
    name = CHECKPOINT.format(i)
    atomic_write_bytes(out / name, lambda f: torch.save(state, f))
    manifest["checkpoints"][str(i)] = {"file": name, "sha256": sha256_of(out / name), **record}
    atomic_write_json(out / MANIFEST, manifest)


def check_disk_space(out: Path, *, checkpoints: int, checkpoint_bytes: int, zip_too: bool):
    """A clear error before hours of work when the checkpoints cannot fit on the disk."""
    need = checkpoints * checkpoint_bytes * (2 if zip_too else 1)
    need = int(need * 1.05) + (16 << 20)  # manifest, temp files, file-system slack
    free = shutil.disk_usage(out).free
    if free < need:
        raise UsageError(
            f"not enough disk space in --out {out}: {checkpoints} checkpoints of about "
            f"{checkpoint_bytes / 2**20:.1f} MiB{' plus the zip' if zip_too else ''} need about "
            f"{need / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free; "
            "free some space or choose another --out"
        )


def log_job(
    out: Path, manifest: dict, watch: BudgetWatch, *, stopped: bool, cutoff: dict | None = None
) -> None:
    """Append this invocation to the manifest's history (how the folder was made);
    ``cutoff``: what capped its runs' budget, when the cut-off did."""
    manifest.setdefault("jobs", []).append(
        {
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "elapsed_s": round(watch.elapsed(), 3),  # warm-up included, data loading not
            "budget_s": watch.total_s,
            "runs": len(watch.run_seconds),
            "stopped_for_budget": stopped,
            "torch": torch.__version__,
            **({"cutoff": cutoff} if cutoff else {}),
        }
    )
    atomic_write_json(out / MANIFEST, manifest)


def lock_folder(out: Path):
    """The exclusive right to write checkpoints into ``out`` (refused while another job has it)."""
    busy = f"another job is writing to {out} (pid {{owner}}); wait for it"
    return folder_lock(out / LOCK, busy=busy)
