"""`python -m dfp` runs the command line."""

import sys

from dfp.cli import main

sys.exit(main())
