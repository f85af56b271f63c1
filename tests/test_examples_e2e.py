"""Each example family end to end at reduced size: result structure and required properties."""

from __future__ import annotations

import math
from pathlib import Path

from tiny_specs import EXAMPLES, write_cifar, write_mnist

from dfp_engine.results import ExperimentResult
from dfp_engine.runner import run_experiment
from dfp_engine.spec import load_spec


def check_result(result: ExperimentResult, n_runs: int) -> None:
    """Structure and properties every successful result must have."""
    assert result.status == "succeeded" and result.error is None
    assert len(result.runs) == len(result.summary) == n_runs
    assert result.environment.spec_hash and result.environment.torch
    for run in result.runs:
        assert run.status == "succeeded"
        epochs = [c.epoch for c in run.checkpoints]
        assert epochs[0] == 0 and epochs == sorted(set(epochs))
        assert epochs[-1] == run.history[-1].epoch
        for checkpoint in run.checkpoints:
            assert [la.layer for la in checkpoint.layers] == run.layer_names
            for la in checkpoint.layers:
                values = la.lfr + la.rdf + la.deltas + [la.peak_inverse_delta or 0.0]
                assert all(math.isfinite(v) for v in values)
                assert la.n_samples == run.n_analysis
        if "input" in run.layer_names:  # a fixed analysis subset: the input curve never moves
            curves = {tuple(c.layers[0].lfr) for c in run.checkpoints}
            assert len(curves) == 1
    assert len({run.analysis_subset_sha256 for run in result.runs}) == 1
    assert ExperimentResult.model_validate_json(result.model_dump_json()) == result


def test_deeper_is_faster() -> None:
    spec = load_spec(
        EXAMPLES / "deeper_is_faster_1d.yaml",
        [
            "training.epochs=30",
            "analysis.checkpoints={every: 15}",
            "sweep.values=[2, 4]",
            "model.width=12",
            "training.target_loss=0.4",
            "training.stop_at_target=false",
        ],
    )
    result = run_experiment(spec)
    check_result(result, 2)
    assert [run.layer_names[-1] for run in result.runs] == ["hidden.2", "hidden.4"]
    assert [row.layer for row in result.summary] == ["hidden.2", "hidden.4"]
    assert list(result.summary[0].peak_inverse_delta_by_checkpoint) == ["0", "15", "30"]


def test_lower_frequency_is_faster() -> None:
    spec = load_spec(
        EXAMPLES / "lower_frequency_is_faster_1d.yaml",
        [
            "training.epochs=40",
            "model.width=12",
            "training.target_loss=0.3",
            "sweep.values=['sin(x)', 'sin(5*x)']",
        ],
    )
    result = run_experiment(spec)
    check_result(result, 2)
    assert [run.sweep_value for run in result.runs] == ["sin(x)", "sin(5*x)"]


def test_within_network_on_mnist1d() -> None:
    spec = load_spec(
        EXAMPLES / "within_network_mnist1d.yaml",
        [
            "dataset.n_samples=200",
            "model.width=16",
            "training.epochs=2",
            "analysis.checkpoints={every: 1}",
            "analysis.n_samples=100",
        ],
    )
    result = run_experiment(spec)
    check_result(result, 1)
    run = result.runs[0]
    assert run.layer_names == ["input", *[f"hidden.{i}" for i in range(1, 6)]]
    assert run.n_train == 160 and run.n_analysis == 100 and run.n_test == 40
    assert run.history[-1].test_accuracy is not None


def test_within_network_on_a_local_mnist_copy(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=60, n_test=20)
    spec = load_spec(
        EXAMPLES / "within_network_mnist.yaml",
        [
            f"dataset.root={tmp_path}",
            "model.width=8",
            "training.epochs=2",
            "analysis.checkpoints=[1]",
        ],
    )
    result = run_experiment(spec)
    check_result(result, 1)
    assert [c.epoch for c in result.runs[0].checkpoints] == [0, 1, 2]
    assert result.runs[0].checkpoints[0].layers[0].dim == 784


def test_resnet_variants_smoke() -> None:
    spec = load_spec(
        EXAMPLES / "resnet_variants_digits.yaml",
        [
            "dataset.max_train_samples=96",
            "model.base_width=2",
            "model.head_widths=[8, 8]",
            "model.blocks_per_stage=[1, 1, 1, 1]",
            "training.epochs=2",
            "analysis.checkpoints=[1]",
            "analysis.n_samples=60",
            "sweep.values=[0, 3]",
        ],
    )
    result = run_experiment(spec)
    check_result(result, 2)
    assert all(run.layer_names == ["head.1"] for run in result.runs)
    assert all(c.layers[0].dim == 8 for run in result.runs for c in run.checkpoints)


def test_resnet_cifar10_configuration_on_a_local_copy(tmp_path: Path) -> None:
    write_cifar(tmp_path, per_batch=8)
    spec = load_spec(
        EXAMPLES / "resnet_variants_cifar10.yaml",
        [
            f"dataset.root={tmp_path}",
            "training.device=cpu",
            "model.base_width=2",
            "model.head_widths=[6, 6]",
            "model.blocks_per_stage=[1, 1, 1, 1]",
            "training.epochs=1",
            "analysis.checkpoints=[]",
            "sweep.values=[1]",
            "training.batch_size=16",
        ],
    )
    result = run_experiment(spec)
    check_result(result, 1)
    assert result.runs[0].n_train == 40 and result.runs[0].n_test == 8


def test_filtering_test() -> None:
    spec = load_spec(
        EXAMPLES / "filtering_test_digits.yaml",
        [
            "dataset.max_train_samples=200",
            "model.width=16",
            "training.epochs=4",
        ],
    )
    result = run_experiment(spec)
    check_result(result, 1)
    for checkpoint in result.runs[0].checkpoints:
        (inp,) = checkpoint.layers
        assert inp.e_low is not None and inp.e_high is not None
        assert len(inp.e_low) == len(inp.e_high) == len(inp.deltas) == 6
