"""Thresholds of the verdicts: the engine's defaults, which the service's settings override."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VerdictThresholds:
    """What counts as a claim holding (docs/method.md, "Verdicts")."""

    # |Spearman ρ| an ordering claim needs: 0.7 on five layers allows one swap of neighbours.
    rho: float = 0.7
    # e_low / e_high at or below this count as learned (the filtering test).
    filter_error: float = 0.1
    # |ĥ(k) − f̂(k)| / |f̂(k)| at or below this counts as converged (the Fourier view).
    fourier_error: float = 0.1
    # Two-sided coverage of the bootstrap interval over seeds.
    confidence: float = 0.9
    # Bootstrap resamples of the seeds (seeded, so a re-read gives the same interval).
    bootstrap_samples: int = 2000
