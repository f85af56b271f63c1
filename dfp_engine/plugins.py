"""Models registered by installed packages under the `dfp.models` entry-point group.

A package registers an object with a `params` pydantic model, a `build(params, input_shape,
n_outputs) -> nn.Module` and a `capture_points(params) -> [module names in forward order]`:

    [project.entry-points."dfp.models"]
    mixer = "dfp_mixer_plugin:PLUGIN"

Only names listed in that group are ever loaded; nothing else a spec says is imported. The
capture points are names of submodules (`blocks.0`); their outputs are the hidden layers, the
module's own output is `output`, and the input is `input`, as for the built-in models.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:  # specs name plugins without importing torch
    from torch import nn

ENTRY_POINT_GROUP = "dfp.models"
PLUGIN_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
CAPTURE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,49}$")
RESERVED_NAMES = frozenset({"input", "output"})


class ModelPlugin(Protocol):
    """What a `dfp.models` entry point names."""

    params: type[BaseModel]

    def build(self, params: Any, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module: ...

    def capture_points(self, params: Any) -> Sequence[str]: ...


def installed_names() -> list[str]:
    """Names registered in the group by installed packages, sorted (nothing is imported)."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


@cache
def load_plugin(name: str) -> ModelPlugin:
    """The plugin registered as `name`; ValueError listing what is installed otherwise."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        available = ", ".join(installed_names()) or "none"
        raise ValueError(f"no model plugin '{name}' is installed (installed: {available})")
    plugin = found[0].load()
    for attribute in ("params", "build", "capture_points"):
        if not hasattr(plugin, attribute):
            raise ValueError(f"model plugin '{name}' has no '{attribute}'")
    if not (isinstance(plugin.params, type) and issubclass(plugin.params, BaseModel)):
        raise ValueError(f"model plugin '{name}': params must be a pydantic model class")
    return plugin  # type: ignore[no-any-return]


def capture_names_of(plugin: ModelPlugin, params: Any, name: str) -> list[str]:
    """The plugin's capture points, checked: unique, layer-name shaped, not input/output."""
    names = [str(n) for n in plugin.capture_points(params)]
    bad = [n for n in names if not CAPTURE_NAME_PATTERN.match(n) or n in RESERVED_NAMES]
    if bad or len(set(names)) != len(names) or not names:
        raise ValueError(
            f"model plugin '{name}' gives capture points {names}: they must be distinct module "
            "names (letters, digits, '.', '_', '-'), at least one, not 'input' or 'output'"
        )
    return names
