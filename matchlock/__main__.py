"""``python -m matchlock``: the command line."""

import sys

from matchlock.cli import main

sys.exit(main())
