"""``python -m local_eval``: evaluate a submission at home, as the competition would.

With no arguments: the kit's default ``unlearning`` on the digits data (random 10% forget
set, small CNN, N = 32 models per group, reference models cached), a result table on screen
and everything under ``runs/<time>-<dataset>-<method>/`` (see ``local_eval.reporting.report``).

``python -m local_eval score ...`` scores saved confidences or logits instead
(``local_eval.cli.score``), e.g. the ``unlearned.npz`` / ``retrained.npz`` of a run;
``python -m local_eval leaderboard ...`` ranks several methods
(``local_eval.reporting.leaderboard``).

Errors (a broken submission, a bad path, a bad option) end with one line on stderr and
exit status 2 (1 for an unexpected failure); ``--debug`` shows the traceback instead.
Nothing is written to ``--out`` unless the whole evaluation succeeds; a path that cannot be
written is refused before any work, and a second evaluation writing to the same ``--out``
is refused while the first runs (a ``.NAME.lock`` file beside the folder).

Time: a run that exceeds ``--budget-s`` but finishes is scored, and the report counts the
runs over budget. A run still going after ``--run-timeout-s`` (default with a budget:
10 x budget + 60 s; none without one) is taken for a hang: it is interrupted and the
evaluation fails with exit status 2.

A ``--submission`` file or a notebook's definitions are code the user asked us to run: they
run in this process, with the user's rights.
"""

from __future__ import annotations

import sys

from local_eval.cli.options import (
    build_parser,
    evaluation_inputs,
    out_lock,
    reporting_errors,
    show_report,
)
from local_eval.reporting.outputs import default_out_dir, write_outputs
from local_eval.runs.pipeline import run_evaluation
from local_eval.training.cache import ModelCache

__all__ = ["main", "parser"]

DESCRIPTION = (
    "Evaluate an unlearning submission locally with the competition's score. "
    "'python -m local_eval score --help' re-scores saved confidences; 'leaderboard' ranks "
    "methods; 'shard', 'merge' and 'prepare' split an evaluation over machines (see their "
    "--help)."
)


def parser():
    return build_parser("python -m local_eval", DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["score"]:
        from local_eval.cli.score import main as score_main

        return score_main(argv[1:])
    if argv[:1] == ["leaderboard"]:
        from local_eval.cli.leaderboard import main as leaderboard_main

        return leaderboard_main(argv[1:])
    if argv[:1] and argv[0] in ("shard", "merge", "prepare"):
        from local_eval.cli.shards import COMMANDS

        return COMMANDS[argv[0]](argv[1:])
    args = parser().parse_args(argv)
    return reporting_errors(lambda: evaluate(args), debug=args.debug)


def evaluate(args) -> int:
    config, method, cache_root = evaluation_inputs(args)
    out = args.out or default_out_dir(config.dataset, method.source)
    with out_lock(out):
        result = run_evaluation(
            config, method, cache=ModelCache(cache_root), progress=not args.quiet
        )
        files = write_outputs(result, out, cache_root)
    show_report(files, out)
    return 0
