"""Models: stable layer names, aliases counted from the output, shapes, clear shape errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dfp_engine.capture import capture_representations
from dfp_engine.models import build_model
from dfp_engine.spec import ExperimentSpec, capture_names, resolve_layer, resolve_layers


def model_spec(**fields: Any) -> Any:
    kind = fields.get("kind", "mlp")
    dataset = {"kind": "digits"} if kind != "mlp" else {}
    return ExperimentSpec.model_validate({"model": fields, "dataset": dataset}).model


def test_mlp_names_shapes_and_aliases() -> None:
    spec = model_spec(kind="mlp", depth=3, width=[5, 6, 7])
    names = capture_names(spec)
    assert names == ["input", "hidden.1", "hidden.2", "hidden.3", "output"]
    assert resolve_layer("-1", names) == "output"
    assert resolve_layer("-2", names) == "hidden.3"
    assert resolve_layer("-5", names) == "input"
    assert resolve_layer("0", names) == "input" and resolve_layer("2", names) == "hidden.2"
    assert resolve_layers("all", names) == names[:-1]
    assert resolve_layers(["-1", "hidden.1", "1", "input"], names) == [
        "input",
        "hidden.1",
        "output",
    ]
    with pytest.raises(ValueError, match=r"unknown layer 'hidden.4'.*hidden.3"):
        resolve_layer("hidden.4", names)

    model = build_model(spec, (2, 3), n_outputs=4)  # any sample shape: the MLP flattens
    reps, out = capture_representations(model, torch.randn(9, 2, 3), names)
    assert [tuple(reps[n].shape) for n in names] == [(9, 6), (9, 5), (9, 6), (9, 7), (9, 4)]
    assert torch.equal(reps["output"], out)


def test_mlp_hidden_layers_are_post_activation() -> None:
    model = build_model(model_spec(kind="mlp", depth=2, width=8, activation="relu"), (3,), 2)
    reps, _ = capture_representations(model, torch.randn(50, 3), ["hidden.1", "hidden.2"])
    assert float(reps["hidden.1"].min()) >= 0.0 and float(reps["hidden.2"].min()) >= 0.0


@pytest.mark.parametrize(
    "init", ["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "normal"]
)
def test_initialisations_zero_the_biases(init: str) -> None:
    model = build_model(model_spec(kind="mlp", depth=2, width=8, init=init), (3,), 2)
    assert all(
        float(m.bias.detach().abs().sum()) == 0
        for m in model.modules()
        if isinstance(m, torch.nn.Linear)
    )


def test_cnn_stage_and_head_names_and_shapes() -> None:
    spec = model_spec(
        kind="cnn", channels=[4, 6], convs_per_stage=1, head_widths=[10, 9], batch_norm=True
    )
    names = capture_names(spec)
    assert names == ["input", "stage.1", "stage.2", "head.1", "head.2", "output"]
    model = build_model(spec, (3, 8, 8), n_outputs=5)
    reps, _ = capture_representations(model, torch.randn(4, 3, 8, 8), names)
    shapes = {n: tuple(r.shape) for n, r in reps.items()}
    assert shapes == {
        "input": (4, 192),
        "stage.1": (4, 4 * 4 * 4),
        "stage.2": (4, 6 * 2 * 2),
        "head.1": (4, 10),
        "head.2": (4, 9),
        "output": (4, 5),
    }
    assert resolve_layer("-3", names) == "head.1"


def test_conv_nets_need_images_large_enough() -> None:
    with pytest.raises(ValueError, match=r"needs image inputs .* gives \(40,\)"):
        build_model(model_spec(kind="cnn"), (40,), 10)
    with pytest.raises(ValueError, match="needs at least 8x8"):
        build_model(model_spec(kind="cnn", channels=[2, 2, 2]), (1, 4, 4), 10)
    with pytest.raises(ValueError, match="needs image inputs"):
        build_model(model_spec(kind="resnet"), (1, 8), 10)


@pytest.mark.parametrize("variant", [0, 1, 2, 3])
def test_resnet_variants_drop_deep_stages_and_share_the_head(variant: int) -> None:
    spec = model_spec(
        kind="resnet",
        variant=variant,
        base_width=4,
        blocks_per_stage=[1, 2, 1, 1],
        head_widths=[12, 11],
    )
    names = capture_names(spec)
    stages = [f"stage.{i}" for i in range(1, 5 - variant)]
    assert names == ["input", "stem", *stages, "head.1", "head.2", "output"]
    assert resolve_layer("-3", names) == "head.1"
    model = build_model(spec, (3, 16, 16), n_outputs=10)
    reps, out = capture_representations(model, torch.randn(3, 3, 16, 16), names)
    assert (
        out.shape == (3, 10) and reps["head.1"].shape == (3, 12) and reps["head.2"].shape == (3, 11)
    )
    last = reps[stages[-1]]
    width, side = 4 * 2 ** (len(stages) - 1), 16 // 2 ** (len(stages) - 1)
    assert last.shape == (3, width * side * side)
    head_shapes = [tuple(p.shape) for p in model.head.parameters()][1:]  # after the input width
    assert head_shapes == [(12,), (11, 12), (11,)]
