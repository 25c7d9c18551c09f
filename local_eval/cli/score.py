"""``python -m local_eval score``: score saved confidences or logits without any model.

Inputs are ``.npy`` or ``.npz`` files, one per group:

- a ``.npy`` holding an ``(N, E)`` confidence matrix, or ``(N, E, C)`` logits together with
  ``--targets FILE.npy`` (``(E,)`` labels);
- a ``.npz`` holding ``confidences`` (``(N, E)``), or ``logits`` (``(N, E, C)``) and
  ``targets`` (``(E,)``).
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from local_eval.scoring import metric


class InputError(ValueError):
    """A user's file that cannot be scored; the message says what to change."""


def _load_array(path: Path, what: str) -> np.ndarray | dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if "pickle" in str(exc):  # numpy's own hint would be to load it unsafely: never
            raise InputError(
                f"{what} file {path} is not a readable .npy/.npz array: reading it would need "
                "unpickling, which could run code (refused); save numbers with np.save/np.savez"
            ) from exc
        raise InputError(f"{what} file {path} is not a readable .npy/.npz array: {exc}") from exc
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    return loaded


def load_confidences(path: Path, *, what: str, targets: np.ndarray | None = None) -> np.ndarray:
    """An ``(N, E)`` confidence matrix from a file of confidences or of logits (+ targets)."""
    data = _load_array(path, what)
    if isinstance(data, dict):
        if "confidences" in data:
            data = data["confidences"]
        elif "logits" in data:
            if "targets" in data:
                targets = data["targets"]
            data = data["logits"]
        else:
            raise InputError(
                f"{what} file {path} holds {sorted(data)}; expected 'confidences', "
                "or 'logits' with 'targets'"
            )
    if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        raise InputError(f"{what} file {path} holds dtype {data.dtype}; expected numbers")
    if data.ndim == 2:
        return data.astype(np.float64)
    if data.ndim == 3:
        if targets is None:
            raise InputError(
                f"{what} file {path} holds logits of shape {data.shape}; pass --targets "
                "(E,) labels, or store 'targets' in the .npz"
            )
        try:
            return metric.logit_scaled_confidence(data, np.asarray(targets))
        except ValueError as exc:
            raise InputError(f"{what} file {path}: {exc}") from exc
    raise InputError(
        f"{what} file {path} holds shape {data.shape}; expected (N, E) confidences "
        "or (N, E, C) logits"
    )


def summarise(unlearned: np.ndarray, retrained: np.ndarray) -> dict:
    """F, the epsilon histogram by bucket, and what N models can show at most."""
    details = metric.example_details(unlearned, retrained)
    n_models, n_examples = unlearned.shape
    points = metric.bucket_points(n_models)
    histogram = [
        {
            "bucket": f"[{k * metric.BUCKET_WIDTH:.1f}, {(k + 1) * metric.BUCKET_WIDTH:.1f})",
            "points": float(points[k]),
            "examples": int(np.sum(details.bucket == k)),
        }
        for k in range(points.size)
    ]
    histogram.append(
        {
            "bucket": f">= {points.size * metric.BUCKET_WIDTH:.1f}",
            "points": 0.0,
            "examples": int(np.sum(details.bucket == -1)),
        }
    )
    return {
        "forget_quality": float(details.points.sum() / n_examples),
        "n_models": int(n_models),
        "n_examples": int(n_examples),
        "max_epsilon": metric.max_epsilon(n_models),
        "n_buckets": int(points.size),
        "epsilon_mean": float(details.epsilon.mean()),
        "epsilon_max": float(details.epsilon.max()),
        "capped_examples": int(np.sum(details.epsilon >= metric.EPSILON_CAP)),
        "histogram": histogram,
    }


def _print_table(summary: dict) -> None:
    print(f"forget quality F     {summary['forget_quality']:.6f}")
    print(f"models per group     {summary['n_models']}")
    print(f"forget examples      {summary['n_examples']}")
    print(
        f"largest epsilon N models can show: ~{summary['max_epsilon']:.0f} "
        f"({summary['n_buckets']} buckets in play)"
    )
    print(f"epsilon mean / max   {summary['epsilon_mean']:.4f} / {summary['epsilon_max']:.4f}")
    print()
    print(f"{'bucket':<14}{'points':>10}{'examples':>10}")
    for row in summary["histogram"]:
        print(f"{row['bucket']:<14}{row['points']:>10.5g}{row['examples']:>10}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local_eval score",
        description="Score saved confidences/logits of unlearned and retrained models.",
    )
    parser.add_argument("--unlearned", type=Path, required=True, help=".npy/.npz of group U")
    parser.add_argument("--retrained", type=Path, required=True, help=".npy/.npz of group R")
    parser.add_argument("--targets", type=Path, help=".npy (E,) labels when files hold logits")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        targets = None
        if args.targets is not None:
            targets = _load_array(args.targets, "targets")
            if isinstance(targets, dict):
                raise InputError(f"targets file {args.targets} must be a .npy of (E,) labels")
        unlearned = load_confidences(args.unlearned, what="unlearned", targets=targets)
        retrained = load_confidences(args.retrained, what="retrained", targets=targets)
        summary = summarise(unlearned, retrained)
    except ValueError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
