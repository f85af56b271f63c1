"""The exact frequency analysis of arrays captured elsewhere (any framework, uploaded to the
service): one `LayerAnalysis` per named feature array, all against the same targets."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from dfp_engine.fanout import ExactSums
from dfp_engine.frequency import analyze_frequency
from dfp_engine.results import LayerAnalysis


class AnalysisCancelledError(Exception):
    """Raised through the analysis when `should_cancel` answers True."""


def analyze_arrays(
    features: Mapping[str, Any],
    targets: Any,
    *,
    grid: Mapping[str, Any],
    normalization: str = "max_abs_per_dim",
    predictions: Any = None,
    device: str = "cpu",
    on_progress: Callable[[float], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    ci: float | None = None,
    exact_sums: ExactSums | None = None,
) -> Iterator[LayerAnalysis]:
    """Analyse each feature array (n, ...) in order against `targets`; yields each layer as it
    is done. `grid` is one of deltas / inverse_deltas / auto_deltas as analyze_frequency takes
    it; `on_progress` sees the fraction over all layers; `should_cancel`, polled as the tiles
    progress, stops the work with AnalysisCancelledError; `ci` asks for the row-sampled
    estimate (analyze_frequency's `ci`); `exact_sums` replaces the exact pass's sums
    (analyze_frequency's, e.g. a fan-out over workers)."""
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
            ci=ci,
            exact_sums=exact_sums,
            **grid,
        )
        yield LayerAnalysis.from_frequency(name, result)
