"""Crossing speed statistics of line rows: their columns and their bucket merge.

A counts line row may carry `speed_in` and `speed_out`, each with the
crossings of known speed (`n`) and their mean, 85th percentile and maximum
in km/h. Counts, means and maxima merge across intervals exactly, apart
from the rounding of the mean, because `n` adds up, the mean is weighted by
`n`, and the maximum is the largest maximum.

A percentile does not merge. The 85th percentiles of two intervals do not
fix the 85th percentile of their union, because that depends on every
speed, not on each interval's summary. So a bucket carries `p85_kmh` only
when exactly one of its interval rows has speeds for that direction, and
then it is that row's own value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.count_bounds import MAX_COUNT, MAX_SPEED_KMH

DIRECTIONS = ("in", "out")
# The figures of a `speed_stats` object in counts.json, in schema order.
FIELDS = ("n", "mean_kmh", "p85_kmh", "max_kmh")
# Speed columns of count_lines, which are also the CSV column names.
COLUMNS = tuple(
    f"speed_{direction}_{field}" for direction in DIRECTIONS for field in FIELDS
)
# Digits of a merged mean. Summing n * mean in floating point leaves noise
# in the last bits (3 * 12.3 / 3 is 12.300000000000002).
MEAN_DIGITS = 3


def row_values(stats: dict[str, Any] | None) -> tuple[Any, ...]:
    """Return one direction's column values from a line row's speed object.

    A direction with no crossing of known speed has no speed object, and all
    four of its columns stay NULL. A message that the node's outbox merged
    has no `p85_kmh`, and that column stays NULL.
    """
    if stats is None:
        return (None,) * len(FIELDS)
    p85 = stats.get("p85_kmh")
    return (
        int(stats["n"]),
        float(stats["mean_kmh"]),
        None if p85 is None else float(p85),
        float(stats["max_kmh"]),
    )


def _plausible(prefix: str) -> str:
    """Return an SQL condition that holds for a row whose speeds ingest accepts.

    Rows that an older gateway stored may break the bounds, such as a mean of
    1.7e308 km/h. Their `n * mean` overflows, which PostgreSQL raises as an
    error and SQLite returns as infinity, so such rows are left out. The
    comparisons are false for NULL, infinity and PostgreSQL's NaN.
    """
    speed_range = f"BETWEEN 0 AND {MAX_SPEED_KMH}"
    return (
        f"{prefix}_n BETWEEN 1 AND {MAX_COUNT} "
        f"AND {prefix}_mean_kmh {speed_range} "
        f"AND {prefix}_max_kmh {speed_range} "
        f"AND ({prefix}_p85_kmh IS NULL OR {prefix}_p85_kmh {speed_range})"
    )


def _slice_expressions(direction: str) -> list[str]:
    prefix = f"speed_{direction}"
    condition = _plausible(prefix)

    def only_plausible(column: str) -> str:
        return f"CASE WHEN {condition} THEN {column} END"

    return [
        f"SUM({only_plausible(f'{prefix}_n')})",
        f"SUM({only_plausible(f'{prefix}_n * {prefix}_mean_kmh')})",
        f"MAX({only_plausible(f'{prefix}_max_kmh')})",
        # COUNT skips NULL, so this counts the rows that carry speeds.
        f"COUNT({only_plausible(f'{prefix}_n')})",
        # The row's own value whenever the count above is 1.
        f"MAX({only_plausible(f'{prefix}_p85_kmh')})",
    ]


# Aggregates per slice in `SpeedTotals.add_slice` order, five for `in` and
# then five for `out`. SQLite and PostgreSQL both accept them.
SLICE_SQL = ", ".join(
    expression
    for direction in DIRECTIONS
    for expression in _slice_expressions(direction)
)
SLICE_WIDTH = 5


@dataclass(slots=True)
class SpeedTotals:
    """Speed statistics of one direction, merged over the slices of a bucket."""

    n: int = 0
    weighted_kmh: float = 0.0  # sum of n * mean_kmh over the rows
    max_kmh: float = 0.0
    rows: int = 0
    p85_kmh: float | None = None

    def add_slice(
        self,
        n: Any,  # noqa: ANN401 - int on SQLite, Decimal from a PostgreSQL SUM
        weighted_kmh: float | None,
        max_kmh: float | None,
        rows: int,
        p85_kmh: float | None,
    ) -> None:
        """Add the aggregates of one slice, in `SLICE_SQL` order."""
        if not rows:
            return
        self.n += int(n)
        self.weighted_kmh += float(weighted_kmh or 0.0)
        self.max_kmh = max(self.max_kmh, float(max_kmh or 0.0))
        self.p85_kmh = float(p85_kmh) if p85_kmh is not None else None
        self.rows += int(rows)

    def stats(self) -> dict[str, Any] | None:
        """Return the bucket's speed object, or None when no row had speeds."""
        if not self.n:
            return None
        result: dict[str, Any] = {
            "n": self.n,
            "mean_kmh": round(self.weighted_kmh / self.n, MEAN_DIGITS),
        }
        if self.rows == 1 and self.p85_kmh is not None:
            result["p85_kmh"] = self.p85_kmh
        result["max_kmh"] = self.max_kmh
        return result


def csv_fields(row: dict[str, Any]) -> dict[str, Any]:
    """Return a bucket row with its speed objects spread over `COLUMNS`."""
    flat = {key: value for key, value in row.items() if not key.startswith("speed_")}
    for direction in DIRECTIONS:
        stats = row.get(f"speed_{direction}") or {}
        for field in FIELDS:
            flat[f"speed_{direction}_{field}"] = stats.get(field)
    return flat
