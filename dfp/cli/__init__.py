"""The `dfp` command: every subcommand registers itself on `dfp.cli.app` from its own module."""

from __future__ import annotations

import os
import sys

import typer

from dfp.cli.app import app
from dfp.cli.errors import CliError

try:  # typer >= 0.26 vendors its own click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import ClickException, NoArgsIsHelpError  # type: ignore[assignment]

# Imported for their side effect of registering commands on `app`.
from dfp.cli import analyses as _analyses  # noqa: F401
from dfp.cli import analyze as _analyze  # noqa: F401
from dfp.cli import client as _client  # noqa: F401
from dfp.cli import datasets as _datasets  # noqa: F401
from dfp.cli import db as _db  # noqa: F401
from dfp.cli import experiment as _experiment  # noqa: F401
from dfp.cli import keys as _keys  # noqa: F401
from dfp.cli import reproduce as _reproduce  # noqa: F401
from dfp.cli import serve as _serve  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    """Entry point: usage and input errors become one line on stderr and exit status 2."""
    try:
        result = app(args=argv, prog_name="dfp", standalone_mode=False)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except NoArgsIsHelpError as exc:
        print(exc.format_message(), file=sys.stderr)
        return 2
    except ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code)
    return int(result) if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry: exit as soon as the work is done.

    Interpreter teardown after importing torch takes about half a second; everything a
    command writes is flushed or closed before it returns, so skipping that is safe.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
