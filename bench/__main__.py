"""All benchmarks in one run, one table: ``python -m bench [--quick] [--only NAMES]
[--markdown [PATH]]``.

``--quick`` shrinks every benchmark (a smoke run in about a minute on 2 CPU cores, whose
figures are indicative only); without it each runs at its own default size. ``--markdown``
also writes the results as a Markdown page (default ``docs/benchmarks.md``): what ran, on
which machine, at which commit, and the figures, written only once every benchmark has
finished (a failed run leaves the previous page as it was).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench import batched_training, evaluator, metric, reset_step, resnet18, scale
from local_eval.common.files import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PAGE = ROOT / "docs" / "benchmarks.md"  # --markdown without a value

SIZES = {  # (full, quick)
    "metric": ({"n_models": 512, "n_examples": 1000}, {"n_models": 64, "n_examples": 200}),
    "evaluator": ({"n_models": 32}, {"n_models": 2}),
    # the goal's setting: 2 cores, so 2 threads (the plain loop's intra-op threads; two
    # batched groups at once); see bench/batched_training.py
    "batched_training": (
        {"models": 32, "threads": 2, "rounds": 4},
        {"models": 4, "group": 4, "epochs": 2, "rounds": 2},
    ),
    # the competition-shaped setting's references as the evaluator trains them
    "batched_setting": ({"n_models": 8, "rounds": 2}, {"n_models": 2, "rounds": 2, "epochs": 2}),
    "scale": ({"n_models": 512, "shards": 64}, {"n_models": 48, "shards": 24}),
    # full: the competition's size on a GPU (and 4 trainings at once beside one alone), a
    # reduced run with an estimate on a CPU (see bench/resnet18.py)
    "resnet18": ({"gpu_workers": 4}, {"images": 128, "epochs": 1, "gpu_workers": 2}),
    # one original of the competition-shaped setting (seconds on a CPU): the same both ways
    "setting": ({}, {}),
    "reset_step": ({"batch": 64, "repeats": 20}, {"batch": 8, "repeats": 3}),
}


def run_metric(size: dict) -> list[tuple[str, str]]:
    res = metric.run(size["n_models"], size["n_examples"], naive_examples=3)
    return [
        ("size", f"N = {res['n_models']} x E = {res['n_examples']}"),
        ("seconds", f"{res['seconds']:.2f}"),
        ("ratio to rule by rule", f"{res['ratio']:.0f}x"),
        ("peak RSS MB", f"{res['peak_rss_mb']:.0f}"),
    ]


def run_evaluator(size: dict) -> list[tuple[str, str]]:
    from local_eval.runs.loading import load_unlearning
    from local_eval.runs.pipeline import EvalConfig

    config = EvalConfig(dataset="digits", n_models=size["n_models"])
    method = load_unlearning(method=None)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        root = Path(tmp)
        runs = {
            kind: evaluator.timed_run(config, method, root / "cache", root / f"out-{kind}")
            for kind in ("cold", "warm")
        }
    return [
        ("size", f"digits, N = {size['n_models']}"),
        ("cold s", f"{runs['cold']['total']:.1f}"),
        ("warm s", f"{runs['warm']['total']:.1f}"),
        (
            "peak RSS MB cold / warm (main process)",
            f"{runs['cold']['peak_rss_mb']:.0f} / {runs['warm']['peak_rss_mb']:.0f}",
        ),
    ]


def _trainer_rows(res: dict, *, ratio: str) -> list[tuple[str, str]]:
    """The rows both trainer benchmarks print: models per minute each way, their ratio."""
    return [
        ("models/min one at a time", f"{res['plain_models_per_min']:.1f}"),
        ("models/min batched", f"{res['batched_models_per_min']:.1f}"),
        (ratio, f"{res['ratio']:.2f}x"),
        ("ratio per round", ", ".join(f"{r:.2f}" for r in res["round_ratios"])),
    ]


def run_batched(size: dict) -> list[tuple[str, str]]:
    res = batched_training.run(**size)
    return [
        (
            "size",
            f"{res['rounds']} rounds of {res['models']} models, groups of {res['group']}, "
            f"{res['epochs']} epochs, {res['threads']} thread(s)",
        ),
        *_trainer_rows(res, ratio="ratio (goal >= 4x at 2 threads)"),
        ("CPU steal", batched_training.percent(res["cpu_steal"])),
        (
            "peak RSS MB one at a time (rise)",
            f"{res['plain_peak_rss_mb']:.0f} (+{res['plain_rise_mb']:.0f})",
        ),
        (
            "peak RSS MB batched (rise)",
            f"{res['batched_peak_rss_mb']:.0f} (+{res['batched_rise_mb']:.0f})",
        ),
    ]


def run_batched_setting(size: dict) -> list[tuple[str, str]]:
    res = batched_training.run_setting(**size)
    return [
        (
            "size",
            f"{res['rounds']} rounds of N = {res['n_models']} ({res['models']} models each), "
            f"{res['epochs']} epochs",
        ),
        *_trainer_rows(res, ratio="ratio"),
        (
            "references' mean test accuracy one at a time / batched",
            f"{res['plain_accuracy']:.4f} / {res['batched_accuracy']:.4f}",
        ),
    ]


def run_scale(size: dict) -> list[tuple[str, str]]:
    res = scale.run(**size)
    n, merge = res["n_models"], res["merge"]
    return [
        ("size", f"digits, N = {n}, real shard 0/{res['shards']} ({res['shard_jobs']} jobs)"),
        ("s per training", f"{res['seconds_per_training']:.2f}"),
        ("s per unlearning run", f"{res['seconds_per_run']:.2f}"),
        ("all jobs on one core, h", f"{res['projected_cpu_hours']:.2f}"),
        ("shard peak RSS MB", f"{res['shard_rss_mb']:.0f}"),
        (f"merge N = {n} s / peak RSS MB", f"{merge[n]['seconds']:.1f} / {merge[n]['rss_mb']:.0f}"),
        ("merge N = 32 s / peak RSS MB", f"{merge[32]['seconds']:.1f} / {merge[32]['rss_mb']:.0f}"),
        ("imports alone peak RSS MB", f"{res['imports_rss_mb']:.0f}"),
    ]


def run_resnet18(size: dict) -> list[tuple[str, str]]:
    size = dict(size)
    gpu_workers = size.pop("gpu_workers")
    alone = resnet18.run(workers=1, models=1, **size)
    kind = "measured" if alone["full_size"] else "estimate"
    rows = [
        ("device", alone["device"]),
        ("size", f"{alone['epochs']} epoch(s) on {alone['images']} {alone['data']} images"),
        (f"one retraining s ({kind})", f"{alone['retraining_s']:.1f}"),
        (
            f"one unlearning s ({alone['unlearning_method']}, {kind})",
            f"{alone['unlearning_s']:.1f}",
        ),
        (
            f"N = 512, one job at a time, h ({kind})",
            f"{resnet18.projected_hours(alone['retraining_s'], alone['unlearning_s']):.1f}",
        ),
        (f"models/min, 1 worker ({kind})", f"{alone['models_per_min']:.3f}"),
        (f"peak MB ({alone['peak_kind']})", f"{alone['peak_mb']:.0f}"),
    ]
    if torch.cuda.is_available():  # several trainings at once on the GPU
        shared = resnet18.run(workers=gpu_workers, **size)
        rows.append(
            (f"models/min, {gpu_workers} workers ({kind})", f"{shared['models_per_min']:.3f}")
        )
    return rows


def run_setting(size: dict) -> list[tuple[str, str]]:
    from local_eval.runs.competition import COMPETITION, SETTING, setting_statistics

    stats = setting_statistics(**size)
    classes = ", ".join(f"class {k}: {v}" for k, v in stats.forget_classes.items())
    ours = f"{stats.original_train_accuracy:.2%} / {stats.original_test_accuracy:.2%}"
    theirs = (
        f"{COMPETITION['original_train_accuracy']:.2%} / "
        f"{COMPETITION['original_test_accuracy']:.2%}"
    )
    return [
        ("setting", ", ".join(f"--{k} {v}" for k, v in SETTING.items())),
        ("forget share of training (competition)",
         f"{stats.forget_fraction:.2%} ({COMPETITION['forget_fraction']:.0%})"),
        ("forget persons, whole (competition)",
         f"{stats.forget_groups}, {stats.persons_split} split ({COMPETITION['forget_groups']})"),
        ("forget examples by class (competition)",
         f"{classes} ({COMPETITION['forget_class0_share']})"),
        ("original train / test accuracy (competition)", f"{ours} ({theirs})"),
        ("one retraining s / one retain epoch s",
         f"{stats.retraining_s:.2f} / {stats.epoch_s:.3f}"),
        ("relearning epochs at 20% of one retraining (competition)",
         f"{stats.relearning_epochs_at_cutoff:.1f} of {stats.recipe_epochs} "
         f"({COMPETITION['relearning_epochs_at_cutoff']:.0f} of {COMPETITION['recipe_epochs']})"),
    ]  # fmt: skip


def run_reset_step(size: dict) -> list[tuple[str, str]]:
    res = reset_step.run(**size)
    rows = [
        ("device, batch", f"{res['device']}, {res['batch']}"),
        ("relearn counts a reset step as (forwards)", f"{res['counted_as']:g}"),
    ]
    for row in res["rows"]:
        rows.append(
            (
                f"{row['arch']} {row['shape']}: forward / reset step ms, step in forwards",
                f"{1e3 * row['forward_s']:.2f} / {1e3 * row['step_s']:.2f}, "
                f"{row['forwards_per_step']:.1f}",
            )
        )
    return rows


RUNNERS = {
    "metric": run_metric,
    "evaluator": run_evaluator,
    "batched_training": run_batched,
    "batched_setting": run_batched_setting,
    "scale": run_scale,
    "resnet18": run_resnet18,
    "setting": run_setting,
    "reset_step": run_reset_step,
}

# One sentence per benchmark for the Markdown page: what it measures, and what its ratio is
# against (each module's docstring has the details).
DESCRIPTIONS = {
    "metric": (
        "The fast scorer (`local_eval.scoring.metric`) on the whole N x E matrix of synthetic "
        "confidences; the ratio's baseline is the rule-by-rule transcription "
        "(`local_eval.scoring.metric_naive`), timed per example on a slice of the same data in "
        "the same run after checking that both give identical epsilons."
    ),
    "evaluator": (
        "The default main job (`python -m local_eval` on digits) end to end, first with an "
        "empty model cache (cold: every reference and floor model trained), then warm (only "
        "the submission's runs, scoring and the report left); there is no ratio, the warm "
        "run is read against the cold one."
    ),
    "batched_training": (
        "Reference models per minute of the batched trainer (`local_eval.training.batched`) "
        "on the digits retain set with the `fast_smallcnn` recipe; the ratio's baseline is the "
        "plain loop training the same seeds one model at a time, in rounds interleaved with "
        "the batched ones in the same run."
    ),
    "batched_setting": (
        "The competition-shaped setting's reference stage (`resnet18_narrow`, the organisers' "
        "30-epoch recipe; the 2N retrained models and N - 1 originals of an evaluation) as "
        "the evaluator trains it, with its default workers and threads and an empty cache: "
        "the ratio's baseline is the sequential trainer, in rounds interleaved with the "
        "batched one in the same run."
    ),
    "scale": (
        "What an N-model evaluation costs, measured through the shard mechanism: one real "
        "shard (seconds per training and per unlearning run, projected to all 4N jobs on one "
        "core) and `merge` of K shards made from its records, at N and at N = 32, each in a "
        "fresh process; there is no ratio row, the merge at N = 32 (the default size) is "
        "what the merge at N is read against."
    ),
    "resnet18": (
        "ResNet-18 references on 32x32 images with the evaluator's `cifar_kit` recipe and "
        "trainer, and one run of the kit's default unlearning method: measured at full size "
        "on a GPU, estimated from a reduced run on a CPU (the rows say which); the N = 512 "
        "hours are projected from the two, one job at a time, and there is no ratio."
    ),
    "setting": (
        "The competition-shaped CPU setting (`local_eval.runs.competition`): the shape of its "
        "forget set, its original's accuracies and the relearning a 20% budget affords, each "
        "beside the competition's figure (`../shared/spec/kaggle.md`); there is no ratio."
    ),
    "reset_step": (
        "One step of `relearn`'s reset regime (`relearn.reset_step`: forward, backward, Adam "
        "update and the teacher's forward) against one eval-mode forward, per model at the "
        "shape it is used on: the ratio's baseline is the forward, timed in the same run, and "
        "it is read against the forwards `relearn` counts a step as when it chooses its regime."
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="reduced sizes (smoke run)")
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help=f"comma-separated benchmarks to run, of: {', '.join(RUNNERS)} (default: all)",
    )
    parser.add_argument(
        "--markdown",
        nargs="?",
        const=DEFAULT_PAGE,
        type=Path,
        metavar="PATH",
        help="also write the results as a Markdown page to PATH (without PATH: "
        "docs/benchmarks.md), once every benchmark has finished",
    )
    args = parser.parse_args(argv)
    names = selected(args.only, parser)
    header = None
    if args.markdown is not None:
        check_page_path(args.markdown, parser)
        # the code that runs is the code of this moment: read before the benchmarks start
        header = {
            "command": command_line(argv),
            "commit": kit_commit(),
            "date": datetime.now(timezone.utc),
            "quick": args.quick,
            **machine(),
        }

    start = time.perf_counter()
    results: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        size = SIZES[name][1 if args.quick else 0]
        try:
            results[name] = RUNNERS[name](size)
        except BaseException:
            if args.markdown is not None:
                print(
                    f"bench: {name} failed; {args.markdown} was not written (a page there "
                    "is as it was)",
                    file=sys.stderr,
                )
            raise
        # each benchmark's figures as soon as they exist (stderr): a run cut short by a
        # time limit still says what it measured
        for what, value in results[name]:
            print(f"{name} | {what} | {value}", file=sys.stderr, flush=True)
    wall_s = time.perf_counter() - start

    rows = [(name, what, value) for name, new in results.items() for what, value in new]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"benchmarks ({'quick' if args.quick else 'full'} sizes)")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if header is not None:
        header["wall_s"] = wall_s
        atomic_write_bytes(args.markdown, markdown_page(header, results).encode())
        print(f"wrote {args.markdown}", file=sys.stderr)
    return 0


def check_page_path(path: Path, parser: argparse.ArgumentParser) -> None:
    """Refuse a page path that cannot be written before the benchmarks spend their minutes."""
    if path.is_dir():
        parser.error(f"--markdown: {path} is a folder; give a file name such as {path}/bench.md")
    if not path.parent.is_dir():
        parser.error(
            f"--markdown: the folder {path.parent} does not exist; create it or choose another"
        )


def command_line(argv: list[str]) -> str:
    """The command as typed, with ``OMP_NUM_THREADS`` when it is set (it changes timings)."""
    threads = os.environ.get("OMP_NUM_THREADS")
    prefix = f"OMP_NUM_THREADS={shlex.quote(threads)} " if threads is not None else ""
    return prefix + shlex.join(["python", "-m", "bench", *argv])


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict[str, str]:
    """The machine the figures belong to: CPU, cores, torch, the device (and GPU) used."""
    cuda = torch.cuda.is_available()
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count() or "unknown"),
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
        "device": f"cuda ({torch.cuda.get_device_name(0)})" if cuda else "cpu (no CUDA device)",
    }


def kit_commit() -> str:
    """The kit's commit, and whether the checkout differs from it."""
    from local_eval.common.provenance import git_dirty, versions

    commit = versions()["kit_commit"]
    if commit is None:
        return "unknown (not a git checkout, or git is missing)"
    dirty = git_dirty()
    if dirty is None:
        return f"{commit} (whether there were uncommitted changes is unknown)"
    return f"{commit} with uncommitted changes" if dirty else commit


def markdown_page(header: dict, results: dict[str, list[tuple[str, str]]]) -> str:
    """The page: what it is, how and where it was made, then one section per benchmark."""
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench`; do not edit by hand, run the command again instead. "
        "Each benchmark's module in `bench/` says what it measures and why.",
        "",
    ]
    if header["quick"]:
        lines += [
            "**A quick smoke run** (`--quick`: every benchmark at reduced size): its figures "
            "are indicative only.",
            "",
        ]
    lines += [
        f"- command: `{header['command']}`",
        f"- machine: {header['cpu']}, {header['cores']} cores; torch {header['torch']} "
        f"({header['torch_threads']} threads at the start); device {header['device']}",
        f"- date: {header['date']:%Y-%m-%d %H:%M} UTC (start; the run took "
        f"{header['wall_s'] / 60:.1f} min)",
        f"- kit commit: {header['commit']}",
    ]
    for name, rows in results.items():
        lines += ["", f"## {name}", "", DESCRIPTIONS[name], "", "| measure | value |", "|---|---|"]
        lines += [f"| {md_cell(what)} | {md_cell(value)} |" for what, value in rows]
    return "\n".join(lines) + "\n"


def md_cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def selected(only: str | None, parser: argparse.ArgumentParser) -> list[str]:
    """The benchmarks ``--only`` names, in the table's order; all without it."""
    if only is None:
        return list(RUNNERS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNNERS]
    if unknown or not names:
        parser.error(
            f"--only: unknown benchmark(s) {', '.join(unknown) or repr(only)}; "
            f"choose from {', '.join(RUNNERS)}"
        )
    return [n for n in RUNNERS if n in names]


if __name__ == "__main__":
    raise SystemExit(main())
