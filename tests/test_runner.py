"""The runner: determinism, checkpoints, targets, cancellation, divergence, callbacks, and the
properties every analysed layer must have."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from tiny_specs import tiny_1d

from dfp_engine.results import Checkpoint, ExperimentResult, RunResult
from dfp_engine.runner import (
    Progress,
    assemble,
    checkpoint_epochs,
    environment,
    run_experiment,
    run_one,
    summarize,
)
from dfp_engine.spec import AnalysisSpec, ExperimentSpec

TINY_DELTAS = [1e-10, 1e-2, 1e-1, 1.0, 1e10]


def numbers(run: RunResult) -> dict[str, Any]:
    """Everything a run records except wall-clock timings."""
    return run.model_dump(exclude={"elapsed_seconds", "analysis_seconds"})


def test_checkpoint_schedule_always_has_zero_and_the_last_epoch() -> None:
    assert checkpoint_epochs(AnalysisSpec(checkpoints={"every": 4}), 10) == [0, 4, 8, 10]
    assert checkpoint_epochs(AnalysisSpec(checkpoints=[3, 5]), 7) == [0, 3, 5, 7]
    assert checkpoint_epochs(AnalysisSpec(checkpoints={"every": 20}), 10) == [0, 10]


def test_a_run_records_history_checkpoints_and_every_layer() -> None:
    spec = tiny_1d()
    run = run_one(spec, 0)
    assert run.status == "succeeded" and run.error is None and run.stop_reason == "epochs"
    assert [c.epoch for c in run.checkpoints] == [0, 4, 8, 12]
    assert [c.step for c in run.checkpoints] == [0, 4, 8, 12]
    assert [h.epoch for h in run.history] == list(range(13))
    assert run.layer_names == ["input", "hidden.1", "hidden.2"]
    assert run.n_train == 41 and run.n_analysis == 41 and run.n_test == 0
    for checkpoint in run.checkpoints:
        assert [la.layer for la in checkpoint.layers] == run.layer_names
        for la in checkpoint.layers:
            assert len(la.deltas) == len(la.lfr) == 8 and len(la.rdf) == 7
            assert la.inverse_deltas == sorted(la.inverse_deltas)
            assert all(math.isfinite(v) for v in la.lfr + la.rdf)
            assert la.peak_inverse_delta in la.rdf_inverse_deltas
            assert la.e_low is None and la.e_high is None
    assert 0 < run.analysis_seconds < run.elapsed_seconds
    first, last = run.history[0].train_loss, run.history[-1].train_loss
    assert last < first


def test_same_spec_and_seed_give_identical_numbers_without_disturbing_global_rngs() -> None:
    spec = tiny_1d(training={"batch_size": 8})
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = run_one(spec, 0)
    assert torch.equal(torch.get_rng_state(), before)
    b = run_one(spec, 0)
    assert numbers(a) == numbers(b)
    c = run_one(tiny_1d(training={"batch_size": 8, "seed": 1}), 0)
    assert numbers(c)["history"] != numbers(a)["history"]


def test_lfr_is_one_at_tiny_delta_and_the_mean_ratio_at_huge_delta_regression() -> None:
    spec = tiny_1d(analysis={"deltas": TINY_DELTAS})
    run = run_one(spec, 0)
    x = np.linspace(-math.pi, math.pi, 41)
    y = np.cos(3 * x) + 0.5
    limit = y.mean() ** 2 / (y**2).mean()
    for checkpoint in run.checkpoints:
        for la in checkpoint.layers:
            assert la.deltas[0] == 1e10 and la.deltas[-1] == 1e-10
            assert la.lfr[-1] == pytest.approx(1.0, abs=1e-6)
            assert la.lfr[0] == pytest.approx(limit, rel=1e-4)
            assert la.lfr_limit == pytest.approx(limit, rel=1e-6)


def test_lfr_limits_for_one_hot_classes_on_a_fixed_analysis_subset() -> None:
    spec = ExperimentSpec.model_validate(
        {
            "dataset": {"kind": "digits", "max_train_samples": 300},
            "model": {"kind": "mlp", "depth": 2, "width": 12},
            "training": {"epochs": 2, "batch_size": 64},
            "analysis": {"deltas": TINY_DELTAS, "checkpoints": {"every": 1}, "n_samples": 120},
        }
    )
    run = run_one(spec, 0)
    assert run.n_train == 300 and run.n_analysis == 120 and run.analysis_subset_sha256
    first_input = run.checkpoints[0].layers[0]
    for checkpoint in run.checkpoints:
        for la in checkpoint.layers:
            assert la.n_samples == 120
            assert la.lfr[-1] == pytest.approx(1.0, abs=1e-6)
            assert la.lfr[0] == pytest.approx(la.lfr_limit, rel=1e-4)
            assert 0.08 < la.lfr_limit < 0.2  # Σ p_c² for ten roughly balanced classes
        # The input representation never changes, so the same subset gives the same curve.
        assert checkpoint.layers[0] == first_input
    assert run_one(spec, 0).analysis_subset_sha256 == run.analysis_subset_sha256


def test_time_to_target_and_stopping_there() -> None:
    history = run_one(tiny_1d(training={"epochs": 30}), 0).history
    # Full batch: the loss of epoch e is computed before its update, i.e. after e - 1 steps.
    assert history[0].train_loss == pytest.approx(history[1].train_loss, rel=1e-6)
    target = history[10].train_loss
    first = next(h.epoch for h in history[1:] if h.train_loss <= target)
    plain = run_one(tiny_1d(training={"target_loss": target, "epochs": 30}), 0)
    assert plain.steps_to_target == plain.epochs_to_target == first - 1
    assert plain.history[-1].epoch == 30
    stopped = run_one(
        tiny_1d(training={"target_loss": target, "epochs": 30, "stop_at_target": True}), 0
    )
    assert stopped.stop_reason == "target_reached"
    assert stopped.steps_to_target == plain.steps_to_target
    # Stopped before the update that would have followed: epoch, step and target agree.
    assert stopped.checkpoints[-1].epoch == stopped.history[-1].epoch == plain.steps_to_target
    assert stopped.checkpoints[-1].step == plain.steps_to_target
    # History keeps its convention (epoch e's loss is computed before that epoch's update).
    assert stopped.history[-1] == plain.history[stopped.history[-1].epoch]
    never = run_one(tiny_1d(training={"target_loss": 1e-9}), 0)
    assert never.steps_to_target is None and never.epochs_to_target is None


def test_minibatch_time_to_target_is_counted_at_epoch_ends() -> None:
    history = run_one(tiny_1d(training={"epochs": 30, "batch_size": 10}), 0).history
    target = history[12].train_loss
    first = next(h.epoch for h in history[1:] if h.train_loss <= target)
    run = run_one(tiny_1d(training={"target_loss": target, "epochs": 30, "batch_size": 10}), 0)
    assert run.epochs_to_target == first and run.steps_to_target == 5 * first


def test_max_steps_ends_the_run_with_a_final_checkpoint() -> None:
    run = run_one(tiny_1d(training={"max_steps": 5}), 0)
    assert run.status == "succeeded" and run.stop_reason == "max_steps"
    assert [c.epoch for c in run.checkpoints] == [0, 4, 5]
    assert run.checkpoints[-1].step == 5


def cancel_after(calls: int) -> Any:
    count = [0]

    def should_cancel() -> bool:
        count[0] += 1
        return count[0] >= calls

    return should_cancel


def test_cancelling_between_epochs_keeps_the_partial_record() -> None:
    seen: list[tuple[int, Checkpoint]] = []
    run = run_one(
        tiny_1d(), 0, should_cancel=cancel_after(7), on_checkpoint=lambda i, c: seen.append((i, c))
    )
    assert run.status == "cancelled" and run.error is not None and run.error.code == "cancelled"
    assert [c.epoch for c in run.checkpoints] == [0, 4]
    assert run.history[-1].epoch == 5
    assert [c for _, c in seen] == run.checkpoints and {i for i, _ in seen} == {0}


def test_cancelling_is_checked_within_long_epochs() -> None:
    spec = ExperimentSpec.model_validate(
        {
            "dataset": {"kind": "digits"},
            "model": {"depth": 1, "width": 4},
            "training": {"epochs": 3, "batch_size": 8},
            "analysis": {"n_samples": 50},
        }
    )
    run = run_one(spec, 0, should_cancel=cancel_after(3))  # start, epoch 1, batch 50
    assert run.status == "cancelled" and [c.epoch for c in run.checkpoints] == [0]
    assert [h.epoch for h in run.history] == [0]


def test_cancelling_before_the_start_returns_at_once() -> None:
    result = run_experiment(
        tiny_1d(sweep={"field": "model.depth", "values": [1, 2]}), should_cancel=lambda: True
    )
    assert result.status == "cancelled" and result.error is not None
    assert [r.status for r in result.runs] == ["cancelled", "cancelled"]
    assert all(not r.checkpoints for r in result.runs)


def test_divergence_fails_the_run_and_keeps_what_was_recorded() -> None:
    spec = tiny_1d(
        dataset={"expression": "1000 * cos(3*x)"},
        training={"optimizer": "sgd", "lr": 10.0, "epochs": 50},
        analysis={"checkpoints": {"every": 1}},
    )
    run = run_one(spec, 0)
    assert run.status == "failed" and run.error is not None and run.error.code == "diverged"
    assert "epoch" in run.error.message
    assert run.checkpoints and run.checkpoints[0].epoch == 0
    assert all(math.isfinite(h.train_loss) for h in run.history)
    result = run_experiment(spec)
    assert result.status == "failed" and result.error is not None
    assert result.error.code == "diverged" and result.error.message.startswith("run 0:")
    ExperimentResult.model_validate_json(result.model_dump_json())


def test_progress_reports_the_whole_experiment_in_order() -> None:
    reports: list[Progress] = []
    spec = tiny_1d(sweep={"field": "model.width", "values": [4, 8]})
    run_experiment(spec, on_progress=reports.append)
    fractions = [p.fraction for p in reports]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert {p.run_index for p in reports} == {0, 1} and all(p.n_runs == 2 for p in reports)
    assert all(p.epochs == 12 and 0 <= p.epoch <= 12 for p in reports)
    assert any("analysing" in p.message for p in reports)


def test_filtering_test_adds_e_low_and_e_high_in_input_space() -> None:
    spec = ExperimentSpec.model_validate(
        {
            "dataset": {"kind": "digits", "max_train_samples": 200},
            "model": {"depth": 2, "width": 16, "activation": "relu"},
            "training": {"epochs": 4, "batch_size": 50, "loss": "cross_entropy", "lr": 0.01},
            "analysis": {
                "layers": ["-2"],
                "checkpoints": {"every": 2},
                "deltas": [0.3, 1, 3],
                "normalize": "none",
                "filtering_test": True,
            },
        }
    )
    run = run_one(spec, 0)
    assert run.layer_names == ["input", "hidden.2"]
    for checkpoint in run.checkpoints:
        inp, hidden = checkpoint.layers
        assert inp.e_low is not None and inp.e_high is not None and len(inp.e_low) == 3
        assert all(v is not None and 0 <= v < 2 for v in inp.e_low + inp.e_high)
        assert hidden.e_low is None
    first, last = run.checkpoints[0].layers[0], run.checkpoints[-1].layers[0]
    assert first.e_low is not None and last.e_low is not None
    assert last.e_low[0] < first.e_low[0]  # training fits the low frequencies


def test_analysis_ci_estimates_each_layer_from_sampled_rows() -> None:
    spec = tiny_1d(
        dataset={"n_points": 3000},
        training={"epochs": 2},
        analysis={"checkpoints": [0, 2], "ci": 0.05},
    )
    run = run_one(spec, 0)
    for checkpoint in run.checkpoints:
        for layer in checkpoint.layers:
            assert layer.estimator == "row_sampled", layer.layer
            assert layer.rows_evaluated is not None and layer.rows_evaluated <= 1000
            assert layer.lfr_ci_half_width is not None and max(layer.lfr_ci_half_width) <= 0.05
            assert layer.rdf_ci_half_width is not None
            assert len(layer.rdf_ci_half_width) == len(layer.rdf)


def test_bad_data_or_devices_raise_value_errors(tmp_path: Any) -> None:
    missing = ExperimentSpec.model_validate({"dataset": {"kind": "mnist", "root": str(tmp_path)}})
    with pytest.raises(ValueError, match="no mnist data"):
        run_one(missing, 0)
    with pytest.raises(ValueError, match=r"training\.device"):
        run_one(tiny_1d(training={"device": "cuda:99"}), 0)
    with pytest.raises(ValueError, match="out of range"):
        run_one(tiny_1d(), 3)
    zero = tiny_1d(dataset={"expression": "0*x"})
    with pytest.raises(ValueError, match="all zero"):
        run_one(zero, 0)
    np.savez(tmp_path / "v.npz", x=np.zeros((10, 3)), y=np.arange(10) % 2)
    vectors = {
        "dataset": {"kind": "npz", "path": str(tmp_path / "v.npz")},
        "model": {"kind": "cnn"},
    }
    with pytest.raises(ValueError, match=r"cnn.* needs image inputs"):
        run_one(ExperimentSpec.model_validate(vectors), 0)


def test_summary_assemble_and_environment() -> None:
    spec = tiny_1d(training={"target_loss": 0.3}, sweep={"field": "model.depth", "values": [1, 3]})
    runs = [run_one(spec, i) for i in range(2)]
    rows = summarize(spec, runs)
    assert [r.sweep_value for r in rows] == [1, 3]
    assert [r.layer for r in rows] == ["hidden.1", "hidden.3"]
    assert list(rows[0].peak_inverse_delta_by_checkpoint) == ["0", "4", "8", "12"]
    assert rows[1].steps_to_target == runs[1].steps_to_target
    env = environment(spec, "cpu")
    assert env.torch == torch.__version__ and env.spec_hash == spec.spec_hash()
    result = assemble(spec, runs, env)
    assert result.status == "succeeded" and result.summary == rows
    assert result.spec == spec.model_dump(mode="json")
    again = ExperimentResult.model_validate_json(result.model_dump_json())
    assert again == result
