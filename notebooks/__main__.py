"""``python -m notebooks build [--method NAME [--hp NAME=VALUE ...] | --submission FILE.py]
--out FILE.ipynb``: a self-contained Kaggle submission notebook (of the kit's default method
unless told otherwise).

``python -m notebooks build-eval --out FILE.ipynb [--dataset digits] [--method NAME]
[--n-models N]``: a notebook running the local evaluator (``local_eval``) next to the kit and
showing its report.
"""

import argparse
import sys

from local_eval.common.errors import UsageError
from local_eval.runs.loading import parse_hyperparameters
from notebooks.build import BuildError, build_kaggle_notebook, write_notebook
from notebooks.eval_notebook import KNOWN_DATASETS, build_eval_notebook


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notebooks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="a self-contained Kaggle submission notebook")
    source = build.add_mutually_exclusive_group()
    source.add_argument(
        "--method", help="a registered method (submission.METHODS; default: the kit's own)"
    )
    source.add_argument("--submission", metavar="FILE.py",
                        help="a file defining unlearning(net, retain, forget, val)")
    build.add_argument("--hp", "--set", dest="hp", action="append", default=[],
                       metavar="NAME=VALUE",
                       help="override a method hyperparameter, a Python literal, as the other "
                       "commands' --hp (repeatable; --method only; --set is the old name)")
    build.add_argument("--out", required=True, metavar="FILE.ipynb")
    evaluate = sub.add_parser("build-eval", help="a notebook running the local evaluator")
    evaluate.add_argument("--dataset", default="digits",
                          help=f"default dataset ({', '.join(KNOWN_DATASETS)}; default digits)")
    evaluate.add_argument("--method", default=None,
                          help="default method (submission.METHODS; default: the kit's own)")
    evaluate.add_argument("--n-models", type=int, default=32, metavar="N",
                          help="default models per group (at least 2; default 32)")
    evaluate.add_argument("--out", required=True, metavar="FILE.ipynb")
    args = parser.parse_args(argv)
    if args.command == "build-eval":
        return _build_eval(args)
    try:
        nb = build_kaggle_notebook(method=args.method, submission_file=args.submission,
                                   method_kwargs=parse_hyperparameters(args.hp) or None)
    except (BuildError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = _write(nb, args.out)
    if out is None:
        return 2
    inlined = ", ".join(nb.metadata["unlearning_kit"]["inlined"])
    what = f"method {nb.metadata['unlearning_kit'].get('method') or 'from ' + str(args.submission)}"
    print(f"wrote {out} ({what}; inlined: {inlined})")
    return 0


def _build_eval(args) -> int:
    try:
        nb = build_eval_notebook(dataset=args.dataset, method=args.method,
                                 n_models=args.n_models)
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = _write(nb, args.out)
    if out is None:
        return 2
    print(f"wrote {out} (dataset {args.dataset}, method {args.method or 'the kit default'}, "
          f"N = {args.n_models}; run it next to the kit, parameters in its first code cell)")
    return 0


def _write(nb, out):
    """``write_notebook``, or ``None`` after one clear line when ``out`` cannot be written."""
    try:
        return write_notebook(nb, out)
    except OSError as err:
        why = err.strerror or str(err)
        if isinstance(err, (FileExistsError, NotADirectoryError)):
            why = "a part of that path is a file, not a folder"
        print(f"error: cannot write --out {out}: {why}", file=sys.stderr)
        return None


if __name__ == "__main__":
    sys.exit(main())
