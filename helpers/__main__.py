"""``python -m helpers <command>``: see helpers/cli.py."""

import sys

from .cli import main

sys.exit(main())
