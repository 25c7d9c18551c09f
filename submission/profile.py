"""``python -m submission.profile``: an entry point only; the profiler is
:mod:`submission_tools.profile`, a layer above ``submission`` (it needs the evaluator's data)."""

import sys

from submission_tools.profile import main

if __name__ == "__main__":
    sys.exit(main())
