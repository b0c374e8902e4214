"""``python -m helpers <command>``: see helpers/cli.py."""

import sys

from helpers.cli import main

sys.exit(main())
