"""``python -m submission.run``: the command line of the runner."""

import argparse
import sys

from local_eval.common.errors import RunTimeout
from local_eval.data.setup import LOADER_BATCH
from local_eval.training.train import CUTOFF
from submission_tools.run.cutoff import CUTOFF_MARGIN
from submission_tools.run.folder import ZIP_NAME
from submission_tools.run.job import RunJob
from submission_tools.run.runner import run_job


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m submission.run",
        description="Write N unlearned checkpoints of an original model within a time budget.",
    )
    p.add_argument("--data", required=True, help="digits, mnist5k, kaggle:PATH or cifar10:PATH")
    p.add_argument("--forget", default=None, help="forget-set choice (see local_eval.data.setup)")
    p.add_argument("--original", required=True, help="state dict of the original model (.pth)")
    p.add_argument(
        "--arch",
        default=None,
        help="smallcnn, resnet18 or resnet18_narrow (default: resnet18 for RGB 32x32+, else "
        "smallcnn)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--method", help="a registered method name (default: the kit's default method)"
    )
    which.add_argument("--submission", help="a Python file defining unlearning(...)")
    which.add_argument(
        "--notebook",
        help="an .ipynb whose code cells define unlearning() (only definitions run, as for "
        "python -m local_eval --notebook)",
    )
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--n", type=int, default=512, help="number of checkpoints (default 512)")
    p.add_argument("--budget-h", type=float, default=8.0, help="hours for the whole job")
    p.add_argument("--budget-s", type=float, default=None, help="seconds per run")
    p.add_argument(
        "--cutoff",
        type=float,
        default=CUTOFF,
        help=f"without --budget-s, no run is granted more than {100 * CUTOFF_MARGIN:.0f}%% of this "
        "share of one retraining, an epoch of which is timed first (default %(default)s, the "
        "organisers' cut-off; 0: no cap)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="run i uses seed + i")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    p.add_argument("--batch-size", type=int, default=LOADER_BATCH)
    p.add_argument("--zip", action="store_true", help=f"also write {ZIP_NAME}")
    p.add_argument(
        "--shard",
        metavar="i/K",
        help="write only the checkpoints j with j %% K == i (merge the K folders with "
        "'python -m submission.run merge')",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks of a failing method")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["merge"]:
        from submission_tools.run.merge import main as merge_main

        return merge_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return run_job(RunJob.from_args(args).check())
    except ValueError as e:  # UsageError, and the loader's refusals (bad --method, file)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunTimeout as e:
        print(f"error: {e}; checkpoints written so far are kept", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
