"""Experiment specs: the issue's example, defaults, one-line errors naming the field path."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from spec_fields import NumericField, absurd_values, numeric_fields
from tiny_specs import EXAMPLES, merge

from dfp_engine.spec import (
    ExperimentSpec,
    apply_overrides,
    describe_validation_error,
    load_spec,
    spec_json_schema,
)

ISSUE_EXAMPLE = (
    "name: deeper-is-faster-1d\n"
    'dataset: {kind: synthetic_1d, expression: "cos(3*x) + cos(5*x)", n_points: 61, '
    "interval: [-3.14159, 3.14159]}\n"
    "model: {kind: mlp, depth: 3, width: 50, activation: tanh}\n"
    "training: {optimizer: adam, lr: 0.0005, batch_size: null, epochs: 5000, loss: mse, "
    "target_loss: 0.001, seed: 0}\n"
    "analysis: {layers: all, checkpoints: {every: 500}, deltas: auto, normalize: max_abs_per_dim}\n"
    "sweep: {field: model.depth, values: [3, 4, 5, 6, 7]}\n"
)


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        ExperimentSpec.model_validate(data)
    return describe_validation_error(info.value)


def test_the_issue_example_validates_and_expands_to_five_runs(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(ISSUE_EXAMPLE)
    spec = load_spec(path)
    assert spec.run_values() == [3, 4, 5, 6, 7]
    runs = [spec.run_spec(v) for v in spec.run_values()]
    assert [r.model.depth for r in runs] == [3, 4, 5, 6, 7]
    assert all(r.sweep is None and r.model.width == 50 for r in runs)
    assert load_spec(EXAMPLES / "deeper_is_faster_1d.yaml") == spec


def test_every_example_validates() -> None:
    names = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    assert len(names) >= 5
    for name in names:
        assert load_spec(EXAMPLES / name).name


def test_an_empty_spec_has_runnable_defaults() -> None:
    spec = ExperimentSpec.model_validate({})
    assert spec.dataset.kind == "synthetic_1d" and spec.model.kind == "mlp"
    assert spec.run_values() == [None] and spec.run_spec(None) is spec


def test_an_omitted_kind_means_the_default_kind() -> None:
    spec = ExperimentSpec.model_validate({"model": {"depth": 2}, "dataset": {"n_points": 9}})
    assert spec.model.kind == "mlp" and spec.model.depth == 2
    assert spec.dataset.kind == "synthetic_1d"


def test_json_and_yaml_load_alike(tmp_path: Path) -> None:
    data = yaml.safe_load(ISSUE_EXAMPLE)
    (tmp_path / "s.json").write_text(json.dumps(data))
    (tmp_path / "s.yml").write_text(ISSUE_EXAMPLE)
    assert load_spec(tmp_path / "s.json") == load_spec(tmp_path / "s.yml")
    assert load_spec(tmp_path / "s.json").spec_hash() == load_spec(tmp_path / "s.yml").spec_hash()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"dataset": {"kind": "synthetic_1d", "n_points": 1}}, "dataset.n_points: Input should be"),
        ({"dataset": {"kind": "synthetic_1d", "interval": [1, 0]}}, "dataset.interval: must be"),
        ({"dataset": {"kind": "imagenet"}}, "dataset: kind must be one of"),
        ({"dataset": {"kind": "mnist", "rooot": "x"}}, "dataset.rooot: Extra inputs"),
        ({"model": {"kind": "mlp", "depth": 2, "width": [8]}}, "model.width: lists 1 widths"),
        ({"model": {"kind": "mlp", "width": 0}}, "model.width: widths must be positive"),
        ({"model": {"kind": "resnet", "variant": 4}}, "model.variant: Input should be less"),
        ({"training": {"lr": -1}}, "training.lr: Input should be greater than 0"),
        ({"training": {"nesterov": True}}, "training.nesterov: needs optimizer 'sgd'"),
        ({"training": {"stop_at_target": True}}, "training.stop_at_target: needs target_loss"),
        ({"training": {"device": "tpu"}}, "training.device: String should match"),
        ({"training": {"loss": "cross_entropy"}}, "training.loss: cross_entropy needs class"),
        ({"model": {"kind": "cnn"}}, "model.kind: 'cnn' needs an image dataset"),
        ({"analysis": {"deltas": "often"}}, "analysis.deltas: Input should be 'auto'"),
        ({"analysis": {"deltas": 3}}, "analysis.deltas: must be 'auto', a list"),
        ({"analysis": {"deltas": {"auto": 1}}}, "analysis.deltas.auto: Input should be greater"),
        ({"analysis": {"deltas": [1, 1]}}, "analysis.deltas: Value error, deltas contains dup"),
        ({"analysis": {"checkpoints": {"every": 0}}}, "analysis.checkpoints.every: Input should"),
        ({"analysis": {"checkpoints": [0, 500]}}, "analysis.checkpoints: epochs [500] are after"),
        ({"analysis": {"layers": ["hidden.9"]}}, "analysis.layers[0]: unknown layer 'hidden.9'"),
        ({"analysis": {"layers": [-9]}}, "analysis.layers[0]: unknown layer '-9'"),
        ({"analysis": {"summary_layer": "head.1"}}, "analysis.summary_layer: unknown layer"),
        ({"analysis": {"normalize": "l2"}}, "analysis.normalize: Input should be"),
        ({"analysis": {"ci": 0}}, "analysis.ci: Input should be greater than 0"),
        (
            {"analysis": {"ci": 0.01, "filtering_test": True}},
            "analysis.ci: the row-sampled estimator does not run the filtering test",
        ),
        ({"sweep": {"field": "model.depth", "values": []}}, "sweep.values: List should have"),
        ({"sweep": {"field": "model.nope", "values": [1]}}, "sweep.field: 'model.nope' names no"),
        ({"sweep": {"field": "name.x", "values": [1]}}, "sweep.field: 'name.x' cannot be swept"),
        ({"sweep": {"field": "__class__", "values": [1]}}, "sweep.field: String should match"),
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_errors_name_the_field_path(data: dict[str, Any], expected: str) -> None:
    message = error_of(data)
    assert message.startswith(expected.replace("Value error, ", "")), message
    assert "\n" not in message


def test_sweep_values_are_validated_with_the_field_and_value_named() -> None:
    message = error_of({"sweep": {"field": "model.depth", "values": [3, 0, 5]}})
    assert message.startswith("sweep.values[1]: model.depth = 0 is invalid: model.depth:")
    message = error_of({"sweep": {"field": "dataset.expression", "values": ["x", "open(x)"]}})
    assert "sweep.values[1]: dataset.expression = 'open(x)' is invalid" in message
    assert "unknown function 'open'" in message


def test_a_sweep_may_need_its_values_to_make_the_layers_valid() -> None:
    spec = ExperimentSpec.model_validate(
        {"analysis": {"layers": ["hidden.5"]}, "sweep": {"field": "model.depth", "values": [5, 6]}}
    )
    assert [s.model.depth for s in map(spec.run_spec, spec.run_values())] == [5, 6]
    assert "hidden.5" in error_of(
        {"analysis": {"layers": ["hidden.5"]}, "sweep": {"field": "model.depth", "values": [4]}}
    )


@pytest.mark.parametrize(
    "expression",
    ['__import__("os").system("id")', "x.__class__", "open(x)", "(lambda: 1)()", "x ** x"],
)
def test_expressions_outside_the_whitelist_are_spec_errors(expression: str) -> None:
    message = error_of({"dataset": {"kind": "synthetic_1d", "expression": expression}})
    assert message.startswith("dataset.expression: ")


def test_integers_in_layer_lists_become_names() -> None:
    spec = ExperimentSpec.model_validate({"analysis": {"layers": [-2, 0], "summary_layer": -2}})
    assert spec.analysis.layers == ["-2", "0"] and spec.analysis.summary_layer == "-2"


def test_overrides_set_nested_fields_from_yaml_values() -> None:
    data = apply_overrides(
        {"training": {"epochs": 5}},
        ["training.epochs=7", "model.width=[4,4]", "model.depth=2", "training.target_loss=null"],
    )
    spec = ExperimentSpec.model_validate(data)
    assert spec.training.epochs == 7 and spec.model.widths() == [4, 4]
    with pytest.raises(ValueError, match=r"must look like field\.path=value"):
        apply_overrides({}, ["training.epochs"])


def test_spec_files_with_bad_syntax_or_shape_raise_value_errors(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: [unclosed")
    (tmp_path / "b.yaml").write_text("- a list\n")
    with pytest.raises(ValueError, match="is not valid yaml"):
        load_spec(tmp_path / "a.yaml")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_spec(tmp_path / "b.yaml")
    with pytest.raises(ValueError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")


def test_yaml_loading_is_safe(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "evil.yaml").write_text(
        f"name: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    with pytest.raises(ValueError, match="not valid yaml"):
        load_spec(tmp_path / "evil.yaml")
    assert not marker.exists()


def test_spec_hash_is_stable_and_sensitive() -> None:
    a = ExperimentSpec.model_validate({"training": {"seed": 1}})
    b = ExperimentSpec.model_validate({"training": {"seed": 1}})
    c = ExperimentSpec.model_validate({"training": {"seed": 2}})
    assert a.spec_hash() == b.spec_hash() != c.spec_hash()


def test_the_json_schema_describes_every_part() -> None:
    schema = spec_json_schema()
    assert set(schema["properties"]) == {
        "name",
        "dataset",
        "model",
        "training",
        "analysis",
        "sweep",
        "repeats",
    }
    json.dumps(schema)


def test_importing_the_spec_does_not_import_torch() -> None:
    code = (
        "import sys; from dfp_engine.spec import ExperimentSpec; "
        "ExperimentSpec.model_validate({'analysis': {'layers': [-2]}}); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
SPEC_KEYS = st.sampled_from(
    [
        "dataset",
        "model",
        "training",
        "analysis",
        "sweep",
        "name",
        "kind",
        "expression",
        "depth",
        "width",
        "values",
        "field",
        "layers",
        "deltas",
        "checkpoints",
        "every",
        "auto",
        "inverse",
        "epochs",
        "lr",
        "interval",
        "root",
        "variant",
        "summary_layer",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(SPEC_KEYS, JSON_VALUES | st.dictionaries(SPEC_KEYS, JSON_VALUES), max_size=5)
)
def test_arbitrary_spec_documents_validate_or_raise_validation_errors(data: dict[str, Any]) -> None:
    try:
        runs = len(ExperimentSpec.model_validate(data).run_values())
    except ValidationError as exc:
        runs = len(describe_validation_error(exc).splitlines())
    assert runs >= 1


@settings(max_examples=100, deadline=None)
@given(
    st.lists(JSON_VALUES, min_size=1, max_size=4),
    st.sampled_from(
        [
            "model.depth",
            "model.width",
            "dataset.expression",
            "training.lr",
            "analysis.layers",
            "analysis.deltas",
            "dataset.interval",
        ]
    ),
)
def test_arbitrary_sweep_values_validate_or_raise_validation_errors(
    values: list[Any], field: str
) -> None:
    message = ""
    try:
        ExperimentSpec.model_validate({"sweep": {"field": field, "values": values}})
    except ValidationError as exc:
        message = describe_validation_error(exc)
    assert not message or message.startswith(("sweep.values", "sweep.field")), message


# ------------------------------------------------------------------ hostile specs

NUMERIC_FIELDS = numeric_fields()


def test_the_numeric_field_walk_finds_every_section() -> None:
    paths = {field.path for field in NUMERIC_FIELDS}
    assert {"training.lr", "model.depth", "dataset.interval", "analysis.deltas.inverse"} <= paths
    assert len(NUMERIC_FIELDS) >= 50


@pytest.mark.parametrize("field", NUMERIC_FIELDS, ids=str)
def test_absurd_numbers_in_every_numeric_field_are_errors_naming_it(field: NumericField) -> None:
    for value in absurd_values(field.number):
        message = error_of(field.spec_with(value))
        assert message.startswith((f"{field.path}:", f"{field.path}[")), (value, message)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"name": "a\x00b"}, "name: must not contain control characters"),
        ({"name": "tab\there"}, "name: must not contain control characters"),
        ({"name": "lone \ud800 surrogate"}, "name: Input should be a valid string"),
        ({"dataset": {"kind": "npz", "path": "x\x00.npz"}}, "dataset.path: must not contain"),
        ({"dataset": {"kind": "mnist", "root": "\x1b[31m"}}, "dataset.root: must not contain"),
        ({"analysis": {"layers": ["hidden.1\x00"]}}, "analysis.layers[0]: must not contain"),
        ({"analysis": {"layers": "most"}}, "analysis.layers: Input should be 'all'"),
        ({"training": {"device": "cuda:99999999999"}}, "training.device: String should match"),
    ],
)
def test_control_characters_in_free_text_are_errors(data: dict[str, Any], expected: str) -> None:
    assert error_of(data).startswith(expected)


def test_unicode_names_are_kept_as_written() -> None:
    name = "Δ-sweep 深さ 🧪 e\u0301"
    assert ExperimentSpec.model_validate({"name": name}).name == name


def test_deeply_nested_or_huge_sweep_values_are_refused_quickly() -> None:
    deep: Any = 3
    for _ in range(200):
        deep = [deep]
    start = time.perf_counter()
    message = error_of({"sweep": {"field": "model.width", "values": [deep]}})
    assert message.startswith("sweep.values: a value is nested deeper than 8")
    wide = [list(range(20))] * 1000
    message = error_of({"sweep": {"field": "model.width", "values": wide}})
    assert message.startswith("sweep.values: the values hold more than 10000")
    assert time.perf_counter() - start < 1.0


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines.append("sweep: {field: model.width, values: [*a8]}")
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises((ValidationError, ValueError)):
        load_spec(tmp_path / "bomb.yaml")
    assert time.perf_counter() - start < 2.0


EXTREME_SCALARS = (
    st.none()
    | st.booleans()
    | st.sampled_from([10**30, -(10**30), 2**63, -(2**63) - 1, 10**400])
    | st.floats()  # every float, NaN and infinities included
    | st.text(max_size=40)  # every code point: control characters, surrogates, emoji
)
HOSTILE_VALUES = st.recursive(
    EXTREME_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)
FIELD_PATHS = st.sampled_from(
    [field.path for field in NUMERIC_FIELDS]
    + ["name", "dataset.expression", "dataset.path", "dataset.root", "analysis.layers",
       "analysis.summary_layer", "training.device", "sweep.field", "sweep.values", "model.kind",
       "dataset.kind"]
)  # fmt: skip


def _set_path(path: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(FIELD_PATHS, HOSTILE_VALUES), min_size=1, max_size=4))
def test_hostile_values_at_real_fields_validate_or_raise_validation_errors_quickly(
    assignments: list[tuple[str, Any]],
) -> None:
    data: dict[str, Any] = {}
    for path, value in assignments:
        data = merge(data, _set_path(path, value))
    start = time.perf_counter()
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        line = describe_validation_error(exc)
        assert line and "\n" not in line
    else:  # whatever is accepted is finite, bounded and serialisable
        json.dumps(spec.model_dump(mode="json"), allow_nan=False)
    assert time.perf_counter() - start < 1.0
