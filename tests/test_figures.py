"""Figures are functions of a stored result: names that apply, PNG bytes, from JSON too."""

from __future__ import annotations

import json

import pytest
from tiny_specs import tiny_1d

from dfp.figures import figure_names, render_figure, write_figures
from dfp_engine.results import ExperimentResult
from dfp_engine.runner import run_experiment
from dfp_engine.spec import ExperimentSpec

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep_result() -> ExperimentResult:
    spec = tiny_1d(
        training={"target_loss": 0.5, "epochs": 8}, sweep={"field": "model.depth", "values": [1, 2]}
    )
    return run_experiment(spec)


def test_a_sweep_has_per_run_and_across_run_figures(sweep_result: ExperimentResult) -> None:
    names = figure_names(sweep_result)
    assert names == [
        "loss_curves",
        "rdf_across_runs",
        "steps_to_target",
        "rdf_layers_run_0",
        "rdf_peaks_run_0",
        "rdf_layers_run_1",
        "rdf_peaks_run_1",
    ]
    for name in names:
        assert render_figure(sweep_result, name).startswith(PNG)


def test_figures_render_from_the_stored_json(sweep_result: ExperimentResult) -> None:
    stored = json.loads(sweep_result.model_dump_json())
    assert figure_names(stored) == figure_names(sweep_result)
    assert render_figure(stored, "loss_curves").startswith(PNG)
    with pytest.raises(ValueError, match=r"no figure 'nope'.*loss_curves"):
        render_figure(stored, "nope")


def test_single_runs_and_the_filtering_heat_map(tmp_path: object) -> None:
    spec = ExperimentSpec.model_validate(
        {
            "dataset": {"kind": "digits", "max_train_samples": 100},
            "model": {"depth": 1, "width": 8},
            "training": {"epochs": 2, "batch_size": 50, "loss": "cross_entropy"},
            "analysis": {
                "layers": ["input"],
                "deltas": [0.5, 1, 2],
                "filtering_test": True,
                "checkpoints": {"every": 1},
            },
        }
    )
    result = run_experiment(spec)
    names = figure_names(result)
    # Only the input is analysed: its RDF is the same at every checkpoint, so one panel and
    # no (flat) peak curves.
    assert names == ["loss_curves", "rdf_layers_run_0", "filtering_run_0"]
    assert render_figure(result, "filtering_run_0").startswith(PNG)
    import matplotlib.pyplot as plt

    from dfp.figures import _as_result, _catalogue

    catalogue = _catalogue(_as_result(result))
    layers = catalogue["rdf_layers_run_0"]()
    assert len([ax for ax in layers.axes if ax.has_data()]) == 1
    heat = catalogue["filtering_run_0"]()
    bars = [ax for ax in heat.axes if ax.get_label() == "<colorbar>"]
    assert [bar.get_ylabel() for bar in bars] == [
        "e_low (relative error)",
        "e_high (relative error)",
    ]
    plt.close("all")


def test_write_figures_and_results_without_checkpoints(
    tmp_path: object, sweep_result: ExperimentResult
) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    paths = write_figures(sweep_result, folder)
    assert sorted(p.name for p in paths) == sorted(f"{n}.png" for n in figure_names(sweep_result))
    assert all(p.read_bytes().startswith(PNG) for p in paths)
    cancelled = run_experiment(tiny_1d(), should_cancel=lambda: True)
    assert figure_names(cancelled) == []
