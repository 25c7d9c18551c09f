"""``python -m local_eval``: see ``local_eval.cli``."""

import sys

from .cli import main

sys.exit(main())
