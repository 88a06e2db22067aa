"""Statistics of ground speeds at line crossings, for counts messages.

Counts carry only these figures, never the speed of a single track. The
85th percentile is the speed that 85% of the crossings did not exceed, a
common basis for setting speed limits. It is interpolated linearly between
the two nearest samples (numpy's default method), so with few crossings it
lies between observed values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Counts messages carry speeds to 0.01 km/h, because finer digits are noise.
_DECIMALS = 2
# Keys of a counts line row that hold `speed_stats` objects.
SPEED_FIELDS = ("speed_in", "speed_out")


@dataclass(frozen=True, slots=True)
class SpeedStats:
    """Speeds of the crossings of one line, class and direction in one interval.

    Attributes:
        n: crossings whose speed was known.
        mean_kmh: mean speed in km/h.
        p85_kmh: 85th percentile in km/h.
        max_kmh: highest speed in km/h.
    """

    n: int
    mean_kmh: float
    p85_kmh: float
    max_kmh: float

    @classmethod
    def from_samples(cls, speeds_kmh: Sequence[float]) -> SpeedStats | None:
        """Summarise speeds in km/h, or return None when none is finite."""
        finite = np.array([s for s in speeds_kmh if math.isfinite(s)], dtype=float)
        if finite.size == 0:
            return None
        return cls(
            n=int(finite.size),
            mean_kmh=float(finite.mean()),
            p85_kmh=float(np.percentile(finite, 85)),
            max_kmh=float(finite.max()),
        )

    def to_fields(self) -> dict[str, float | int]:
        """Return the `speed_stats` object of a counts message."""
        return {
            "n": self.n,
            "mean_kmh": round(self.mean_kmh, _DECIMALS),
            "p85_kmh": round(self.p85_kmh, _DECIMALS),
            "max_kmh": round(self.max_kmh, _DECIMALS),
        }


def merge_speed_fields(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Fold `speed_stats` objects of consecutive intervals into one.

    `n` is summed, the mean is weighted by `n` and the max is the max, all
    exact. A percentile of the whole cannot be computed from the parts'
    percentiles, so `p85_kmh` is kept only when a single part has speeds.
    """
    if not parts:
        return None
    if len(parts) == 1:
        return dict(parts[0])
    n = sum(int(part["n"]) for part in parts)
    mean = sum(float(part["mean_kmh"]) * int(part["n"]) for part in parts) / n
    return {
        "n": n,
        "mean_kmh": round(mean, _DECIMALS),
        "max_kmh": max(float(part["max_kmh"]) for part in parts),
    }
