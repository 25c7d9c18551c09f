"""An evaluation's report folder: scored, written in full or not at all, named by default."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from local_eval.common.provenance import versions
from local_eval.reporting.report import build_report, write_report
from local_eval.runs.pipeline import original_is_floor_model

__all__ = ["default_out_dir", "score_result", "write_outputs"]


def write_outputs(result, out: Path, cache_root: Path | None) -> list[Path]:
    """Score, then write the report into a temporary sibling of ``out`` and move the files
    in only when all of them exist, so a failure never leaves a half-written report."""
    start = time.perf_counter()
    report, details = score_result(result, context=report_context(result, cache_root))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        report["stage_seconds"]["report"] = time.perf_counter() - start
        report["versions"] = versions()
        written = write_report(report, details, result.signals, tmp)
        out.mkdir(exist_ok=True)
        final = []
        for path in written:
            os.replace(path, out / path.name)
            final.append(out / path.name)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def score_result(result, *, context: dict):
    """:func:`~local_eval.reporting.report.build_report` of an evaluation's result, its
    diagnosis splitting off the runs' original when that is the floor's model 0."""
    return build_report(
        result.signals, context=context, original_in_floor=original_is_floor_model(result)
    )


def report_context(result, cache_root: Path | None) -> dict:
    cfg = result.config
    setup = result.data
    shards = f", {result.shards} shards merged" if result.shards > 1 else ""
    title = (
        f"Local evaluation: {cfg.dataset}, forget {setup['forget']} "
        f"({setup['sizes']['forget']} examples), {result.arch} / {result.recipe.name}, "
        f"N = {cfg.n_models}, {result.method['source']}, on {result.device}{shards}"
    )
    return {
        "title": title,
        "config": {**asdict(cfg), "recipe_overrides": dict(cfg.recipe_overrides)},
        "method": {
            "source": result.method["source"],
            "notes": list(result.method["notes"]),
            "budget_s": cfg.budget_s,
            "runs_over_budget": (
                None
                if cfg.budget_s is None
                else int(np.sum(result.signals.unlearned.seconds > cfg.budget_s))
            ),
        },
        "data": setup,
        "arch": result.arch,
        "recipe": result.recipe.as_dict(),
        "device": result.device,
        "stage_seconds": dict(result.stage_seconds),
        "models_trained": dict(result.trained),
        "shards": result.shards,
        "cache_dir": None if cache_root is None else str(cache_root),
    }


def default_out_dir(dataset: str, source: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(dataset).name}-{source.split(':', 1)[-1]}")
    return Path("runs") / f"{stamp}-{name[:60]}"
