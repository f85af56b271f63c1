"""dfp: the command line, client, figures and shared service code around dfp_engine."""

from dfp_engine import __version__

__all__ = ["__version__"]
