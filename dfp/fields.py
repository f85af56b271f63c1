"""Field paths of validation errors, written the way users write them in a spec."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dfp_engine.spec import user_location

REQUEST_PARTS = {"body", "query", "path", "header"}


def field_path(loc: Sequence[Any]) -> str:
    """('body', 'model', 'mlp', 'depth') -> 'model.depth'; ('query', 'limit') -> 'limit'."""
    parts = list(loc)
    source = parts.pop(0) if parts and parts[0] in REQUEST_PARTS else None
    path = ".".join(str(p) for p in user_location(tuple(parts)))
    if source == "header":
        return f"header {path}"
    return path or ("request body" if source == "body" else "spec")
