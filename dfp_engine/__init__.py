"""dfp_engine: frequency analysis of the effective target functions of trained networks."""

from dfp_engine.deltas import auto_deltas, resolve_deltas, validate_deltas
from dfp_engine.frequency import (
    FrequencyResult,
    RatioDensity,
    analyze_frequency,
    as_targets,
    filtering_test,
    ratio_density,
)
from dfp_engine.normalization import NORMALIZATION_MODES, normalize

__version__ = "0.1.0"

__all__ = [
    "NORMALIZATION_MODES",
    "FrequencyResult",
    "RatioDensity",
    "__version__",
    "analyze_frequency",
    "as_targets",
    "auto_deltas",
    "filtering_test",
    "normalize",
    "ratio_density",
    "resolve_deltas",
    "validate_deltas",
]
