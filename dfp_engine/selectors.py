"""Layer selectors for any torch module: a module name from `named_modules()`, then accessors.

    selector := name accessor*        name     := "input" | "output" | a module's dotted name
    accessor := "[" integer "]"  |  "['" key "']"  |  '["' key '"]'

`blocks.5.mlp` is that module's output; `encoder.layers.3[1]` the element 1 of the tuple it
returns; `attn['hidden']` the value under "hidden" of the dict it returns; accessors chain
(`decoder[0]['h']`). Without accessors, a tuple, list or dict output means its first tensor,
depth first. `input` is the batch given to the model, `output` what the model returns (both take
accessors). The names `input` and `output` always mean these two, never a submodule.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

SPECIAL = ("input", "output")
_SELECTOR = re.compile(r"^(?P<name>[^\[\]]*)(?P<rest>(?:\[[^\]]*\])*)$")
_ACCESSOR = re.compile(r"\[\s*(-?\d+|'[^']*'|\"[^\"]*\")\s*\]")


@dataclass(frozen=True)
class Selector:
    """A parsed layer selector: the module name (or input/output) and the accessors after it."""

    text: str
    name: str
    path: tuple[int | str, ...]

    def pick(self, value: Any) -> torch.Tensor:
        """The selected tensor of a module's output; ValueError naming the layer otherwise."""
        current = value
        for key in self.path:
            current = _index(current, key, self.text)
        found = first_tensor(current)
        if found is None:
            raise ValueError(
                f"layer '{self.text}' produced no tensor (got {type(current).__name__})"
            )
        return found


def parse_selector(text: str) -> Selector:
    """Split `name[0]['key']` into its name and accessors; ValueError on bad syntax."""
    if not isinstance(text, str):
        raise ValueError(f"a layer must be a string, got {type(text).__name__}")
    match = _SELECTOR.match(text.strip())
    if match is None or not match["name"]:
        raise ValueError(
            f"bad layer selector '{text}': expected a module name followed by [index] or ['key']"
        )
    rest = match["rest"]
    path: list[int | str] = []
    pos = 0
    while pos < len(rest):
        accessor = _ACCESSOR.match(rest, pos)
        if accessor is None:
            raise ValueError(
                f"bad layer selector '{text}': an accessor is [integer], ['key'] or [\"key\"]"
            )
        part = accessor[1]
        path.append(part[1:-1] if part[0] in "'\"" else int(part))
        pos = accessor.end()
    return Selector(text=text, name=match["name"].strip(), path=tuple(path))


def resolve_selectors(
    model: nn.Module, layers: str | Sequence[str]
) -> tuple[list[Selector], dict[str, nn.Module]]:
    """Parsed selectors (in the order given, duplicates dropped) and the modules they hook.

    An unknown module name raises ValueError listing the closest names the model has.
    """
    requested = [layers] if isinstance(layers, str) else list(layers)
    if not requested:
        raise ValueError("layers must name at least one layer")
    modules = {name: module for name, module in model.named_modules() if name}
    selectors: list[Selector] = []
    seen: set[str] = set()
    for text in requested:
        selector = parse_selector(text)
        if selector.text in seen:
            continue
        seen.add(selector.text)
        if selector.name not in SPECIAL and selector.name not in modules:
            raise ValueError(_unknown(selector.name, modules))
        selectors.append(selector)
    hooked = {s.name: modules[s.name] for s in selectors if s.name not in SPECIAL}
    return selectors, hooked


def first_tensor(value: Any) -> torch.Tensor | None:
    """A tensor itself, or the first tensor inside nested tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple):
        for item in value:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def _index(value: Any, key: int | str, text: str) -> Any:
    if isinstance(key, int):
        if not isinstance(value, list | tuple):
            raise ValueError(
                f"layer '{text}': [{key}] needs a tuple or list, the module gave "
                f"{type(value).__name__}"
            )
        if not -len(value) <= key < len(value):
            raise ValueError(f"layer '{text}': index {key} is out of range (length {len(value)})")
        return value[key]
    if not isinstance(value, Mapping):
        raise ValueError(
            f"layer '{text}': ['{key}'] needs a dict, the module gave {type(value).__name__}"
        )
    if key not in value:
        keys = ", ".join(repr(k) for k in value)
        raise ValueError(f"layer '{text}': no key '{key}'; the dict has {keys}")
    return value[key]


def _unknown(name: str, modules: Mapping[str, nn.Module]) -> str:
    names = [*SPECIAL, *modules]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else ""
    shown = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
    return f"unknown layer '{name}'{hint} (the model has {shown})"
