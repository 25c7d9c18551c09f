"""``python -m submission.profile``: does a method fit the competition's time budget?

Example::

    python -m submission.profile --method scrub --data digits --arch smallcnn --k 3
    python -m submission.profile --calibrate kaggle_p100.json      # run this on the target
    python -m submission.profile --method scrub --machine kaggle_p100.json --json

Measures ``k`` unlearning runs (after one discarded warm-up run), split by phase through the
shared loop's timings: data loading, forward/backward/step, and the method's own extra work
(everything else in the call: teacher copies, masks, dampening); and an epoch of the
retraining recipe by the evaluator's own trainer (the faster of two, warm:
``submission_tools.run.cutoff``). "One retraining" is the recipe the evaluator
uses for the same data and architecture (``local_eval.training.train``; ``--recipe`` to choose
another), so the ratio printed here is the one the evaluator's report gives. Reports seconds
per run, the projected total for N runs against the job budget, and the ratio of a run to
one retraining (recipe epochs x the measured epoch) against the organisers' cut-off (about
20%). The method is ``--method``, ``--submission`` or ``--notebook`` (none: the kit's
default); its runs start from ``--original``, by default a ``kaggle:PATH`` folder's
``original_model.pth``, else an untrained model (the report says which).

Projection to another machine uses only numbers the user supplies: ``--speed-factor F`` (the
target is F times faster) or ``--machine FILE``, a profile that ``--calibrate FILE`` wrote on
the target by timing a small fixed reference workload; the same workload is then timed here
and the factor is the ratio of the two. No hardware numbers are built in.
"""

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from local_eval.common.checks import (
    check_file,
    check_positive,
    check_state_dict_fits,
    load_state_dict,
)
from local_eval.common.errors import UsageError
from local_eval.common.files import sha256_of
from local_eval.data.setup import LOADER_BATCH
from local_eval.runs.pipeline import competition_original
from local_eval.training.train import CUTOFF, default_recipe, get_recipe
from submission.devices import synchronize
from submission.loop import record_timings, warm_up
from submission_tools.run.budget import duration
from submission_tools.run.cutoff import time_retrain_epoch
from submission_tools.run.inputs import (
    Inputs,
    check_method_choice,
    load_method,
    load_setup_and_model,
    parse_device,
    run_once,
)

REFERENCE_WORKLOAD = "v1: 2-conv CNN, batch 64 of 3x32x32, 10 SGD steps, median of 3"


# ---------------------------------------------------------------- machine calibration


def reference_workload(device: torch.device, *, steps: int = 10, repeats: int = 3) -> float:
    """Seconds of a small fixed training workload on ``device`` (median of ``repeats``)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (64,), generator=gen).to(device)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    ).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def train(n):
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
        synchronize(device)

    train(3)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        train(steps)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_profile(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "reference_s": reference_workload(device),
        "workload": REFERENCE_WORKLOAD,
        "device": str(device),
        "device_name": name or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def read_machine_profile(path: str) -> dict:
    try:
        profile = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"machine profile not found: {path}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"machine profile {path} is not JSON: {e}") from None
    if not isinstance(profile, dict) or not profile.get("reference_s", 0) > 0:
        raise UsageError(f"{path} is not a machine profile (no positive 'reference_s')")
    if profile.get("workload") != REFERENCE_WORKLOAD:
        raise UsageError(
            f"{path} timed another reference workload ({profile.get('workload')!r}); "
            "run --calibrate again on that machine"
        )
    return profile


# ---------------------------------------------------------------- measurements


def time_runs(inputs: Inputs, args, k: int) -> list[dict]:
    """``k`` timed unlearning runs, each ``{'total_s', 'data_s', 'step_s', 'extra_s', ...}``."""
    def run(index: int) -> dict:
        return run_once(inputs, index=index, budget_s=args.budget_s, batch_size=args.batch_size)

    warm_up(inputs.device)
    run(0)  # discarded: one-off costs
    runs = []
    for i in range(k):
        with record_timings() as timings:
            start = time.perf_counter()
            run(i)
            total = time.perf_counter() - start
        runs.append(
            {
                "total_s": total,
                "data_s": timings.data_s,
                "step_s": timings.step_s,
                "extra_s": max(total - timings.data_s - timings.step_s, 0.0),
                "steps": timings.steps,
                "planned_steps": timings.planned_steps,
            }
        )
    return runs


# ---------------------------------------------------------------- the report (pure)


def build_report(
    runs: list[dict],
    epoch: dict,
    *,
    n: int,
    budget_h: float,
    retrain_epochs: int,
    recipe: str | None = None,
    speed_factor: float | None = None,
    speed_source: str | None = None,
) -> dict:
    """Projections from the measurements (numbers in, numbers out; no timing here).

    ``speed_factor``: how many times faster the target machine is than this one.
    """
    per_run = statistics.mean(r["total_s"] for r in runs)
    phases = {key: statistics.mean(r[key] for r in runs) for key in ("data_s", "step_s", "extra_s")}
    retrain_s = retrain_epochs * epoch["total_s"]
    budget_s = budget_h * 3600
    report = {
        "runs_measured": len(runs),
        "seconds_per_run": per_run,
        "slowest_run_s": max(r["total_s"] for r in runs),
        "phases_per_run_s": phases,
        "steps_per_run": statistics.mean(r["steps"] for r in runs),
        "planned_steps_per_run": statistics.mean(r["planned_steps"] for r in runs),
        "retrain_epoch_s": epoch["total_s"],
        "retrain_recipe": recipe,
        "retrain_epochs": retrain_epochs,
        "retrain_s": retrain_s,
        "ratio_to_retrain": per_run / retrain_s,
        "cutoff_ratio": CUTOFF,
        "within_cutoff": per_run / retrain_s <= CUTOFF,
        "n": n,
        "budget_h": budget_h,
        "here": projection(per_run, n, budget_s),
    }
    if speed_factor is not None:
        report["target"] = {
            **projection(per_run / speed_factor, n, budget_s),
            "speed_factor": speed_factor,
            "source": speed_source,
        }
    return report


def projection(per_run_s: float, n: int, budget_s: float) -> dict:
    total = per_run_s * n
    return {
        "seconds_per_run": per_run_s,
        "total_s": total,
        "fits_budget": total <= budget_s,
        "runs_that_fit": int(budget_s // per_run_s) if per_run_s > 0 else None,
        "seconds_per_run_allowed": budget_s / n,
    }


def format_report(report: dict, method: str) -> str:
    ph = report["phases_per_run_s"]
    untrained = "an untrained model (no --original: a method whose work depends on the "
    untrained += "original it is given may take another time)"
    lines = [
        f"{method}: {report['seconds_per_run']:.3f} s per run "
        f"(mean of {report['runs_measured']}, slowest {report['slowest_run_s']:.3f} s)",
        f"  from {report.get('original') or untrained}",
        f"  data loading {ph['data_s']:.3f} s | forward/backward/step {ph['step_s']:.3f} s | "
        f"method's own work {ph['extra_s']:.3f} s",
        f"  steps run {report['steps_per_run']:.0f} of {report['planned_steps_per_run']:.0f} "
        "planned by the recipe",
        f"retraining: {report['retrain_epoch_s']:.3f} s per epoch x {report['retrain_epochs']} "
        f"epochs = {duration(report['retrain_s'])}; one run is "
        f"{100 * report['ratio_to_retrain']:.1f}% of it (cut-off about "
        f"{100 * report['cutoff_ratio']:.0f}%: {'OK' if report['within_cutoff'] else 'TOO SLOW'})",
    ]
    for key, label in (("here", "this machine"), ("target", "target machine")):
        if key not in report:
            continue
        p = report[key]
        source = f" (speed x{p['speed_factor']:.3g}, {p['source']})" if key == "target" else ""
        lines.append(
            f"{label}{source}: {report['n']} runs take {duration(p['total_s'])} against "
            f"{report['budget_h']:g} h: {'fits' if p['fits_budget'] else 'DOES NOT FIT'}; "
            f"{p['runs_that_fit']} runs fit; {p['seconds_per_run_allowed']:.1f} s per run allowed"
        )
    if "target" not in report:
        lines.append("(give --speed-factor or --machine FILE to project to the scoring machine)")
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m submission.profile",
        description="Time a method and project it against the competition's time budget.",
    )
    p.add_argument("--method", help="a registered method name (default: the kit's default method)")
    p.add_argument("--submission", help="a Python file defining unlearning(...)")
    p.add_argument("--notebook", help="an .ipynb whose code cells define unlearning()")
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--data", default="digits", help="digits, mnist5k, kaggle:PATH, cifar10:PATH")
    p.add_argument("--forget", default=None)
    p.add_argument(
        "--arch", default=None, help="smallcnn, resnet18 or resnet18_narrow (default: by data)"
    )
    p.add_argument(
        "--original",
        default=None,
        help="weights to start from (default: with --data kaggle:PATH, PATH/original_model.pth "
        "when there; else an untrained model)",
    )
    p.add_argument("--k", type=int, default=3, help="timed unlearning runs (default 3)")
    p.add_argument("--n", type=int, default=512, help="runs in the job (default 512)")
    p.add_argument("--budget-h", type=float, default=8.0, help="hours for the whole job")
    p.add_argument("--budget-s", type=float, default=None, help="pass a per-run budget")
    p.add_argument(
        "--recipe",
        help="the retraining recipe that defines 'one retraining', as for python -m local_eval "
        "(default: by arch and data, the evaluator's choice)",
    )
    p.add_argument("--retrain-epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=int, default=LOADER_BATCH)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--speed-factor", type=float, help="the target is F times faster")
    speed.add_argument("--machine", help="a machine profile written by --calibrate on the target")
    p.add_argument("--calibrate", metavar="FILE", help="time the reference workload, write FILE")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def check_args(args) -> None:
    if args.k < 1 or args.n < 1 or (args.retrain_epochs is not None and args.retrain_epochs < 1):
        raise UsageError("--k, --n and --retrain-epochs must be at least 1")
    for value, name in (
        (args.budget_h, "--budget-h"),
        (args.budget_s, "--budget-s"),
        (args.speed_factor, "--speed-factor"),
    ):
        check_positive(value, name)
    check_method_choice(args)  # before --calibrate writes anything


def profile(args) -> dict:
    method = load_method(args)
    device = parse_device(args.device)
    speed_factor, source = args.speed_factor, ("--speed-factor" if args.speed_factor else None)
    target = read_machine_profile(args.machine) if args.machine else None
    setup, model, arch = load_setup_and_model(
        data=args.data, forget=args.forget, seed=args.seed, arch=args.arch
    )
    # A method's time can depend on the original it starts from (relearn chooses its regime
    # from the original's held-out confidence), so a competition folder's own original is the
    # default, as for the evaluator's --checkpoints; else an untrained model, said in the report.
    original_path = args.original or competition_original(args.data)
    if original_path:
        original = load_state_dict(check_file(original_path, "original model"))
        check_state_dict_fits(original, model, arch, original_path)
        sha = sha256_of(Path(original_path))
    else:
        original, sha = {k: v.clone() for k, v in model.state_dict().items()}, None
    inputs = Inputs(setup, arch, original, sha, method, device)
    runs = time_runs(inputs, args, args.k)
    try:
        recipe = get_recipe(
            args.recipe or default_recipe(arch, args.data), epochs=args.retrain_epochs
        )
    except ValueError as exc:
        raise UsageError(f"--recipe: {exc}") from None
    epoch = time_retrain_epoch(setup, arch, recipe, device, args.seed)
    if target is not None:
        here = reference_workload(device)
        speed_factor = here / target["reference_s"]
        source = f"{args.machine}: {target['device_name']}"
    report = build_report(
        runs,
        epoch,
        n=args.n,
        budget_h=args.budget_h,
        retrain_epochs=recipe.epochs,
        recipe=recipe.name,
        speed_factor=speed_factor,
        speed_source=source,
    )
    report.update(method=method.name, hyperparameters=method.hyperparameters(), data=args.data)
    report.update(arch=arch, device=str(device), budget_s_per_run=args.budget_s, runs=runs)
    report.update(original=str(original_path) if original_path else None)
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        if args.calibrate:
            target = Path(args.calibrate)
            if target.is_dir():
                raise UsageError(f"cannot write --calibrate {target}: it is a folder")
            if not target.parent.is_dir():
                raise UsageError(
                    f"cannot write --calibrate {target}: {target.parent} is not a folder"
                )
            machine = machine_profile(parse_device(args.device))
            try:
                target.write_text(json.dumps(machine, indent=1))
            except OSError as e:
                raise UsageError(f"cannot write --calibrate {target}: {e.strerror}") from None
            print(json.dumps(machine) if args.json else f"wrote {args.calibrate}: {machine}")
            if args.method is None and args.submission is None and args.notebook is None:
                return 0
        report = profile(args)
    except ValueError as e:  # UsageError, and the loader's refusals (bad --method, file)
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.budget_s is not None:
        print(
            "note: with --budget-s the method scales its work to the budget on THIS machine, "
            "so its seconds describe the budget, not the work; project the full recipe instead",
            file=sys.stderr,
        )
    print(
        json.dumps(report, indent=1, default=repr)
        if args.json
        else format_report(report, report["method"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
