"""``python -m submission.run``: an entry point only. The runner needs the evaluator's data and
models, so it lives a layer above both packages, in :mod:`submission_tools.run`; nothing in
``submission`` imports this module (it is never inlined into a notebook)."""

import sys

from submission_tools.run.cli import main

if __name__ == "__main__":
    sys.exit(main())
