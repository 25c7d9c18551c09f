import sys

from submission_tools.run.cli import main

sys.exit(main())
