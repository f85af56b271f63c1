"""`python -m dfp` runs the command line."""

from dfp.cli import run

run()
