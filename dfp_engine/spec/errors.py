"""Validation errors as a person reads them: the path they wrote and one line of reason."""

from __future__ import annotations

from pydantic import ValidationError

# Locations whose next segment may be a union tag rather than a field: tags are dropped from
# user-facing paths.
_TAGGED_UNIONS: dict[tuple[str | int, ...], set[str]] = {
    ("dataset",): {
        "synthetic_1d",
        "synthetic_nd",
        "digits",
        "mnist1d",
        "torchvision",
        "npz",
        "uploaded",
    },
    ("model",): {"mlp", "cnn", "resnet", "plugin"},
    ("analysis", "deltas"): {"auto", "list", "inverse", "grid"},
    ("analysis", "layers"): {"all", "list"},
    ("analysis", "checkpoints"): {"every", "list"},
}


def user_location(loc: tuple[int | str, ...]) -> list[int | str]:
    """The field names and indexes of a pydantic error location, union tags and type markers
    dropped: what a user wrote in the spec."""
    fields: list[int | str] = []
    tag_seen = False  # at most one tag follows each union location
    for segment in loc:
        if isinstance(segment, str) and ("[" in segment or "(" in segment):
            continue  # validator or type markers such as 'function-after[...]' or 'list[int]'
        if not tag_seen and segment in _TAGGED_UNIONS.get(tuple(fields), set()):
            tag_seen = True
            continue
        tag_seen = False
        fields.append(segment)
    return fields


def error_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the user wrote it: `analysis.layers[0]`, union tags dropped."""
    parts: list[str] = []
    for segment in user_location(loc):
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        else:
            parts.append(("." if parts else "") + segment)
    return "".join(parts)


def describe_validation_error(exc: ValidationError) -> str:
    """One line for a person: `field.path: reason` (plus how many further problems there are)."""
    errors = exc.errors(include_url=False)
    if not errors:
        return str(exc).splitlines()[0]
    first = errors[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    path = error_path(tuple(first["loc"]))
    line = f"{path}: {message}" if path else message
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return line
