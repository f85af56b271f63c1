"""`python -m dfp.cli`: the same as the `dfp` command."""

import sys

from dfp.cli import main

sys.exit(main())
