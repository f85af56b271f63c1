"""Specs pasted or uploaded in the web UI: parsed safely, errors placed on the line they name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dfp.fields import field_path
from dfp_engine.spec import user_location

# The repository's examples (also copied into the container image); absent in a bare install.
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


@dataclass(frozen=True)
class FieldProblem:
    field: str
    message: str
    line: int | None = None  # 1-based line of the spec text the field is written on


class SpecTextError(Exception):
    """The text is not a spec document; `problems` say where and why."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = list(problems)


def parse_spec_text(text: str) -> dict[str, Any]:
    """A YAML or JSON mapping (JSON is YAML); safe_load builds plain data, never objects."""
    if not text.strip():
        raise SpecTextError([FieldProblem("spec", "is empty: paste a spec or choose a file")])
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or "not valid YAML or JSON"
        raise SpecTextError([FieldProblem("spec", f"syntax error: {reason}", line)]) from None
    if not isinstance(document, dict):
        raise SpecTextError([FieldProblem("spec", "must be a mapping of fields (name, model, …)")])
    return document


def line_of(text: str, location: Sequence[Any]) -> int | None:
    """The line on which the deepest existing part of `location` is written, if any."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in user_location(tuple(location)):
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if pair is None:
                break  # not written (a missing field): the line of what holds it
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def validation_problems(text: str, exc: ValidationError) -> list[FieldProblem]:
    return [
        FieldProblem(
            field_path(error["loc"]),
            str(error["msg"]).removeprefix("Value error, "),
            line_of(text, error["loc"]),
        )
        for error in exc.errors()
    ]


def example_names() -> list[str]:
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(path.stem for path in EXAMPLES_DIR.glob("*.yaml"))


def example_text(name: str) -> str | None:
    """The text of a listed example; any other name (a path, say) is None."""
    if name not in example_names():
        return None
    return (EXAMPLES_DIR / f"{name}.yaml").read_text()
