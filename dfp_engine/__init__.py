"""dfp_engine: frequency analysis of the effective target functions of trained networks.

Exports load on first use, so importing a light module (the spec, say) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dfp_engine.version import __version__

_EXPORTS = {
    "FrequencyResult": "dfp_engine.frequency",
    "RatioDensity": "dfp_engine.frequency",
    "analyze_frequency": "dfp_engine.frequency",
    "as_targets": "dfp_engine.frequency",
    "filtering_test": "dfp_engine.frequency",
    "ratio_density": "dfp_engine.frequency",
    "auto_deltas": "dfp_engine.deltas",
    "resolve_deltas": "dfp_engine.deltas",
    "validate_deltas": "dfp_engine.deltas",
    "NORMALIZATION_MODES": "dfp_engine.normalization",
    "ModelAnalysis": "dfp_engine.model_analysis",
    "analyze_model": "dfp_engine.model_analysis",
    "FrequencyMonitor": "dfp_engine.monitor",
    "normalize": "dfp_engine.normalization",
}

if TYPE_CHECKING:
    from dfp_engine.deltas import auto_deltas, resolve_deltas, validate_deltas
    from dfp_engine.frequency import (
        FrequencyResult,
        RatioDensity,
        analyze_frequency,
        as_targets,
        filtering_test,
        ratio_density,
    )
    from dfp_engine.model_analysis import ModelAnalysis, analyze_model
    from dfp_engine.monitor import FrequencyMonitor
    from dfp_engine.normalization import NORMALIZATION_MODES, normalize


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dfp_engine' has no attribute '{name}'")


__all__ = [
    "NORMALIZATION_MODES",
    "FrequencyMonitor",
    "FrequencyResult",
    "ModelAnalysis",
    "RatioDensity",
    "__version__",
    "analyze_frequency",
    "analyze_model",
    "as_targets",
    "auto_deltas",
    "filtering_test",
    "normalize",
    "ratio_density",
    "resolve_deltas",
    "validate_deltas",
]
