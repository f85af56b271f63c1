"""The exact frequency analysis of representations captured elsewhere (any framework): one
`LayerAnalysis` per named feature array, all against the same targets."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from dfp_engine.frequency import FrequencyResult, analyze_frequency
from dfp_engine.results import LayerAnalysis


class AnalysisCancelledError(Exception):
    """Raised through the analysis when `should_cancel` answers True."""


def layer_analysis(name: str, result: FrequencyResult) -> LayerAnalysis:
    """The stored form of one layer's frequency result (non-finite e_low/e_high as None)."""
    return LayerAnalysis(
        layer=name,
        dim=result.dim,
        normalization=result.normalization,
        deltas=result.deltas,
        inverse_deltas=result.inverse_deltas,
        lfr=result.lfr,
        rdf_inverse_deltas=result.rdf_inverse_deltas,
        rdf=result.rdf,
        peak_inverse_delta=result.peak_inverse_delta,
        mean_inverse_delta=result.mean_inverse_delta,
        lfr_limit=result.lfr_limit,
        n_samples=result.n_samples,
        e_low=_finite_or_none(result.e_low),
        e_high=_finite_or_none(result.e_high),
    )


def _finite_or_none(values: Sequence[float | None] | None) -> list[float | None] | None:
    if values is None:
        return None
    return [v if v is not None and np.isfinite(v) else None for v in values]


def analyze_representations(
    features: Mapping[str, Any],
    targets: Any,
    *,
    grid: Mapping[str, Any],
    normalization: str = "max_abs_per_dim",
    predictions: Any = None,
    device: str = "cpu",
    on_progress: Callable[[float], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> Iterator[LayerAnalysis]:
    """Analyse each feature array (n, ...) in order against `targets`; yields each layer as it
    is done. `grid` is one of deltas / inverse_deltas / auto_deltas as analyze_frequency takes
    it; `on_progress` sees the fraction over all layers; `should_cancel`, polled as the tiles
    progress, stops the work with AnalysisCancelledError."""
    names = list(features)
    cancelled = should_cancel or (lambda: False)
    for index, name in enumerate(names):
        if cancelled():
            raise AnalysisCancelledError(f"cancelled before layer {name}")

        def progress(fraction: float, index: int = index) -> None:
            if cancelled():
                raise AnalysisCancelledError(f"cancelled during layer {names[index]}")
            if on_progress is not None:
                on_progress((index + fraction) / len(names))

        z = np.asarray(features[name])
        result = analyze_frequency(
            z.reshape(len(z), -1),  # (n, ...) -> (n, d): a layer of any shape is a vector
            targets,
            normalization=normalization,
            predictions=predictions,
            device=device,
            on_progress=progress,
            **grid,
        )
        yield layer_analysis(name, result)
