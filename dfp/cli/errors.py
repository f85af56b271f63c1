"""The one way a command reports bad input: a one-line message and a non-zero exit."""

from __future__ import annotations

from typing import NoReturn


class CliError(Exception):
    """A user-facing error; `main` prints it as one line and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int = 2) -> NoReturn:
    raise CliError(message, exit_code)
