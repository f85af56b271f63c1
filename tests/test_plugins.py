"""Models from installed packages (`dfp.models` entry points): the example MLP-Mixer plugin
in examples/dfp_mixer_plugin, installed by `make install`."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dfp_engine.plugins import installed_names, load_plugin
from dfp_engine.runner import run_one
from dfp_engine.spec import ExperimentSpec, capture_names, describe_validation_error


def mixer_spec(**model: Any) -> dict[str, Any]:
    return {
        "dataset": {"kind": "digits", "max_train_samples": 120, "max_test_samples": 40},
        "model": {"kind": "plugin", "name": "mixer", "params": {"depth": 2, "dim": 8}} | model,
        "training": {"epochs": 2, "loss": "cross_entropy", "seed": 2},
        "analysis": {"layers": ["-2", "embed"], "checkpoints": {"every": 1}, "deltas": {"auto": 5}},
    }


def test_the_example_plugin_is_installed_and_names_its_layers() -> None:
    assert "mixer" in installed_names()
    spec = ExperimentSpec.model_validate(mixer_spec())
    assert capture_names(spec.model) == ["input", "embed", "blocks.0", "blocks.1", "pool", "output"]
    assert load_plugin("mixer") is load_plugin("mixer")


def test_a_plugin_model_trains_and_its_layers_are_analysed() -> None:
    result = run_one(ExperimentSpec.model_validate(mixer_spec()), 0)
    assert result.status == "succeeded", result.error
    assert result.layer_names == ["embed", "pool"]  # -2 is the layer before the output
    assert [layer.layer for layer in result.checkpoints[-1].layers] == ["embed", "pool"]
    every = ExperimentSpec.model_validate(
        mixer_spec() | {"analysis": {"layers": "all", "deltas": {"auto": 5}}}
    )
    assert run_one(every, 0).layer_names == ["input", "embed", "blocks.0", "blocks.1", "pool"]


@pytest.mark.parametrize(
    ("model", "where", "reason"),
    [
        ({"name": "nope"}, "model.name", "installed: "),
        ({"params": {"depth": 0}}, "model.params.depth", "greater than or equal to 1"),
        ({"params": {"depht": 2}}, "model.params.depht", "Extra inputs"),
        ({"params": {"dim": "wide"}}, "model.params.dim", "valid integer"),
        ({"name": "os.system"}, "model.name", "String should match pattern"),
    ],
)
def test_bad_plugin_names_and_params_name_the_field(
    model: dict[str, Any], where: str, reason: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        ExperimentSpec.model_validate(mixer_spec(**model))
    message = describe_validation_error(caught.value)
    assert where in message and reason in message, message
    if model.get("name") == "nope":
        assert "mixer" in message
