"""``python -m local_eval``: see ``local_eval.cli.main``."""

import sys

from local_eval.cli.main import main

sys.exit(main())
