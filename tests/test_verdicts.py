"""Verdicts: each claim where it holds, where it does not (initialisation, negative controls)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy.stats import spearmanr
from tiny_specs import merge

from dfp_engine.results import (
    Checkpoint,
    Environment,
    ExperimentResult,
    FourierAnalysis,
    LayerAnalysis,
    RunResult,
    Verdict,
)
from dfp_engine.runner import run_experiment
from dfp_engine.spec import ExperimentSpec
from dfp_engine.thresholds import VerdictThresholds
from dfp_engine.verdicts import across_seeds, compute_verdicts, spearman

ENV = Environment(seed=0, torch="x", device="cpu", dfp_version="x", spec_hash="x")


def layer(name: str, mean: float | None, **extra: Any) -> LayerAnalysis:
    return LayerAnalysis(
        layer=name,
        dim=2,
        normalization="none",
        deltas=[1.0, 0.5],
        inverse_deltas=[1.0, 2.0],
        lfr=[0.5, 0.6],
        rdf_inverse_deltas=[2.0],
        rdf=[0.1],
        peak_inverse_delta=mean,
        mean_inverse_delta=mean,
        **extra,
    )


def run_with(means_by_epoch: dict[int, list[float]], index: int = 0, **extra: Any) -> RunResult:
    names = ["input"] + [f"hidden.{i + 1}" for i in range(len(next(iter(means_by_epoch.values()))))]
    checkpoints = [
        Checkpoint(
            epoch=epoch,
            step=epoch,
            layers=[layer("input", 9.0)]
            + [layer(n, m) for n, m in zip(names[1:], means, strict=True)],
        )
        for epoch, means in means_by_epoch.items()
    ]
    return RunResult(
        index=index, status="succeeded", layer_names=names, checkpoints=checkpoints, **extra
    )


def result_of(runs: list[RunResult], spec: dict[str, Any] | None = None) -> ExperimentResult:
    return ExperimentResult(spec=spec or {}, status="succeeded", environment=ENV, runs=runs)


def by_claim(verdicts: list[Verdict], claim: str) -> list[Verdict]:
    return [v for v in verdicts if v.claim == claim]


def sweep_only(verdicts: list[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if "field" in v.scope]


def test_spearman_matches_scipy_with_ties_and_is_none_for_constants() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 4, size=7).astype(float)
        y = rng.normal(size=7)
        expected = spearmanr(x, y).statistic
        got = spearman(list(x), list(y))
        if np.ptp(x) == 0:
            assert got is None
        else:
            assert got == pytest.approx(expected, abs=1e-12)
    assert spearman([1, 2, 3], [math.inf, 1.0, math.inf]) == pytest.approx(
        spearmanr([1, 2, 3], [9, 1, 9]).statistic
    )


def test_within_network_holds_for_falling_frequency_not_for_rising_nor_two_layers() -> None:
    run = run_with({0: [0.3, 0.31, 0.33, 0.35, 0.36], 800: [1.28, 0.6, 0.4, 0.2, 0.18]})
    verdicts = compute_verdicts(result_of([run]))
    init, trained = by_claim(verdicts, "within_network_depth_ordering")
    assert trained.scope == {"run": 0, "epoch": 800}
    assert trained.outcome == "holds" and trained.value == -1.0 and trained.threshold == -0.7
    assert trained.detail == "mean 1/δ goes from 1.28 at hidden.1 to 0.18 at hidden.5, ρ = -1.00"
    assert init.outcome == "does_not_hold" and init.value == 1.0
    assert "reverse order" in init.detail
    two = compute_verdicts(result_of([run_with({5: [1.0, 0.1]})]))
    assert [v.outcome for v in two] == ["inconclusive"]
    assert "only 2 hidden layer(s)" in two[0].detail
    flat = compute_verdicts(result_of([run_with({5: [0.2, 0.2, 0.2]})]))
    assert flat[0].outcome == "inconclusive" and flat[0].value is None


def test_thresholds_are_parameters() -> None:
    run = run_with({3: [1.0, 0.5, 0.7, 0.2]})  # ρ = -0.8
    (lenient,) = compute_verdicts(result_of([run]), VerdictThresholds(rho=0.7))
    (strict,) = compute_verdicts(result_of([run]), VerdictThresholds(rho=0.9))
    assert lenient.value == strict.value == pytest.approx(-0.8)
    assert (lenient.outcome, strict.outcome) == ("holds", "does_not_hold")
    assert strict.threshold == -0.9


def sweep_result(
    field: str, values: list[Any], steps: list[int | None], means: list[float]
) -> ExperimentResult:
    runs = [
        RunResult(
            index=i,
            sweep_value=value,
            status="succeeded",
            steps_to_target=s,
            layer_names=["input", "hidden.1"],
            checkpoints=[Checkpoint(epoch=10, step=10, layers=[layer("hidden.1", m)])],
        )
        for i, (value, s, m) in enumerate(zip(values, steps, means, strict=True))
    ]
    spec = {"sweep": {"field": field, "values": values}, "training": {"target_loss": 1e-3}}
    return result_of(runs, spec)


def test_deeper_is_faster_and_across_network_order_hold_and_fail_by_the_data() -> None:
    good = compute_verdicts(sweep_result("model.depth", [3, 4, 5], [900, None, 300], [3, 2, 1]))
    (faster,) = by_claim(good, "deeper_is_faster")
    (across,) = by_claim(good, "across_network_depth_ordering")
    # The run that never reached the target ranks last: 4 is slowest, so ρ = 0.5.
    assert faster.value == pytest.approx(-0.5) and faster.outcome == "does_not_hold"
    assert "4: never" in faster.detail
    assert across.outcome == "holds" and across.scope == {"field": "model.depth", "epoch": "last"}
    clean = compute_verdicts(sweep_result("model.depth", [3, 4, 5], [900, 500, 300], [1, 2, 3]))
    assert by_claim(clean, "deeper_is_faster")[0].outcome == "holds"
    assert by_claim(clean, "across_network_depth_ordering")[0].outcome == "does_not_hold"
    # ResNet variants: a higher variant keeps fewer stages, so it is shallower.
    resnet = sweep_only(
        compute_verdicts(sweep_result("model.variant", [0, 1, 2], [100, 200, 300], [1, 2, 3]))
    )
    assert [v.outcome for v in resnet] == ["holds", "holds"]
    few = sweep_only(compute_verdicts(sweep_result("model.depth", [3, 4], [9, 5], [2, 1])))
    assert {v.outcome for v in few} == {"inconclusive"}
    lr = sweep_result("training.lr", [0.1, 0.2, 0.3], [1, 2, 3], [1, 2, 3])
    assert sweep_only(compute_verdicts(lr)) == []


def test_lower_frequency_is_faster_reads_the_frequency_of_each_expression() -> None:
    values = ["sin(x)", "sin(3*x)", "sin(2*x)"]
    base = sweep_result("dataset.expression", values, [100, 400, 250], [1, 1, 1])
    spec = {**base.spec, "dataset": {"kind": "synthetic_1d", "n_points": 61}}
    (verdict,) = sweep_only(compute_verdicts(base.model_copy(update={"spec": spec})))
    assert verdict.claim == "lower_frequency_is_faster" and verdict.outcome == "holds"
    assert verdict.value == 1.0 and verdict.threshold == 0.7
    reversed_steps = base.model_copy(update={"spec": spec})
    reversed_steps.runs[1].steps_to_target = 50
    (negative,) = sweep_only(compute_verdicts(reversed_steps))
    assert negative.outcome == "does_not_hold"


def filtering_run(lows: list[float], highs: list[float]) -> RunResult:
    checkpoints = [
        Checkpoint(epoch=e, step=e, layers=[layer("input", 1.0, e_low=[lo], e_high=[hi])])
        for e, (lo, hi) in enumerate(zip(lows, highs, strict=True))
    ]
    return RunResult(index=0, status="succeeded", layer_names=["input"], checkpoints=checkpoints)


def test_low_frequency_first_at_each_delta() -> None:
    (first,) = compute_verdicts(result_of([filtering_run([0.5, 0.05, 0.01], [0.9, 0.5, 0.08])]))
    assert (
        first.outcome == "holds" and first.value == 1.0 and first.scope == {"run": 0, "delta": 1.0}
    )
    assert first.detail == "at δ = 1 e_low reaches 0.1 at epoch 1, e_high at epoch 2"
    (never,) = compute_verdicts(result_of([filtering_run([0.5, 0.05], [0.9, 0.5])]))
    assert never.outcome == "holds" and "e_high never does" in never.detail
    (late,) = compute_verdicts(result_of([filtering_run([0.5, 0.3, 0.05], [0.9, 0.05, 0.01])]))
    assert late.outcome == "does_not_hold"
    (same,) = compute_verdicts(result_of([filtering_run([0.5, 0.05], [0.9, 0.05])]))
    assert same.outcome == "inconclusive"


def fourier_run(errors_by_epoch: list[list[float]], peaks: list[float]) -> RunResult:
    entries = [
        FourierAnalysis(
            epoch=10 * e,
            method="dft",
            direction=[1.0],
            frequencies=[0.0, 1.0, 2.0, 3.0],
            target_amplitude=[0, 1, 0, 1],
            output_amplitude=[0, 1, 0, 1],
            peaks=peaks,
            peak_indices=[int(p) for p in peaks],
            relative_error_at_peaks=errors,
        )
        for e, errors in enumerate(errors_by_epoch)
    ]
    return RunResult(index=0, status="succeeded", fourier=entries)


def test_fourier_low_frequency_first() -> None:
    ordered = fourier_run([[0.9, 0.9], [0.05, 0.8], [0.01, 0.05]], [1.0, 3.0])
    (verdict,) = compute_verdicts(result_of([ordered]))
    assert verdict.outcome == "holds" and verdict.value == 1.0
    assert verdict.detail == "relative error ≤ 0.1: k = 1 at epoch 10, k = 3 at epoch 20; ρ = 1.00"
    reverse = fourier_run([[0.9, 0.9], [0.8, 0.05], [0.05, 0.01]], [1.0, 3.0])
    assert compute_verdicts(result_of([reverse]))[0].outcome == "does_not_hold"
    one_peak = fourier_run([[0.9], [0.01]], [1.0])
    assert compute_verdicts(result_of([one_peak]))[0].outcome == "inconclusive"


def test_across_seeds_fraction_and_bootstrap_interval() -> None:
    def rho(value: float, outcome: str) -> Verdict:
        return Verdict(
            claim="c", scope={}, statistic="spearman_rho(a, b)", value=value,
            threshold=-0.7, outcome=outcome, detail="",  # type: ignore[arg-type]
        )  # fmt: skip

    t = VerdictThresholds()
    holds = across_seeds("c", {}, [rho(-1.0, "holds"), rho(-0.9, "holds"), rho(-0.8, "holds")], t)
    assert holds.outcome == "holds" and holds.scope == {"seeds": 3}
    assert holds.value == pytest.approx(-0.9) and "holds for 3 of 3 seeds" in holds.detail
    mixed = across_seeds("c", {}, [rho(-1.0, "holds"), rho(0.2, "does_not_hold")], t)
    assert mixed.outcome == "inconclusive"  # the interval [-1, 0.2] straddles -0.7
    assert "holds for 1 of 2 seeds" in mixed.detail
    fails = across_seeds("c", {}, [rho(0.1, "does_not_hold"), rho(0.3, "does_not_hold")], t)
    assert fails.outcome == "does_not_hold"


def trained_spec(**changes: Any) -> ExperimentSpec:
    """cos(3x) + cos(5x) fitted by a 3 x 50 tanh MLP: a few seconds."""
    base: dict[str, Any] = {
        "name": "within",
        "dataset": {"kind": "synthetic_1d", "expression": "sin(x) + sin(3*x) + sin(5*x)",
                    "n_points": 101, "interval": [-3.14159265, 3.14159265]},
        "model": {"kind": "mlp", "depth": 3, "width": 50},
        "training": {"epochs": 300, "lr": 0.002, "seed": 0},
        "analysis": {"checkpoints": [0, 300], "deltas": {"auto": 8}, "fourier": True},
    }  # fmt: skip
    return ExperimentSpec.model_validate(merge(base, changes))


def test_trained_network_orders_its_layers_untrained_one_does_not_and_rereads_agree() -> None:
    result = run_experiment(trained_spec(repeats=2))
    within = by_claim(result.verdicts, "within_network_depth_ordering")
    outcomes = {(tuple(sorted(v.scope.items()))): v.outcome for v in within}
    # At initialisation deeper layers are not lower-frequency; after training they are.
    for run in (0, 1):
        assert outcomes[(("epoch", 0), ("run", run))] == "does_not_hold"
        assert outcomes[(("epoch", 300), ("run", run))] == "holds"
    assert outcomes[(("epoch", 300), ("seeds", 2))] == "holds"
    assert [run.seed for run in result.runs] == [0, 1]
    (fourier,) = [
        v
        for v in result.verdicts
        if v.claim == "fourier_low_frequency_first" and "seeds" in v.scope
    ]
    assert fourier.outcome == "holds"
    # Read back from JSON, the stored result gives the same verdicts.
    again = ExperimentResult.model_validate_json(result.model_dump_json())
    assert compute_verdicts(again) == result.verdicts
    # Negative control: a learning rate too small to move the network keeps the initial order.
    frozen = run_experiment(trained_spec(training={"lr": 1e-9}))
    last = [v for v in frozen.verdicts if v.scope.get("epoch") == 300]
    assert [v.claim for v in last] == ["within_network_depth_ordering"]
    assert last[0].outcome == "does_not_hold"


def test_repeats_give_each_run_its_seed() -> None:
    spec = trained_spec(
        repeats=3, training={"seed": 7}, sweep={"field": "model.depth", "values": [1, 2]}
    )
    assert spec.run_values() == [1, 1, 1, 2, 2, 2]
    runs = list(spec.run_specs)
    assert [r.training.seed for r in runs] == [7, 8, 9, 7, 8, 9]
    assert [r.model.depth for r in runs] == [1, 1, 1, 2, 2, 2]  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="repeats"):
        trained_spec(repeats=2, training={"seed": 2**32 - 1})
