"""Count buckets of 1 min, 15 min, 1 h and 1 day in UTC or an IANA time zone.

The database sums rows into fixed UTC slices first (the bucket itself when
the zone is UTC, else 15 minutes, or 1 minute for 1-minute buckets); Python
then maps each slice to its local bucket with zoneinfo. Every UTC offset in
use today is a whole number of 15-minute steps, so a slice never straddles
two local buckets.

A bucket is labelled by its local start and the UTC offset in force at the
counted instants. So on the night daylight saving ends, the repeated hour
gives two buckets, `02:00+11:00` and `02:00+10:00`, and a local day has 23
or 25 hours. A count row belongs to the bucket that contains its interval
start, and an interval that straddles a bucket boundary is not split.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway import line_speeds
from gateway.count_bounds import MAX_COUNT
from gateway.line_speeds import SpeedTotals
from gateway.store import Database

BUCKETS = {"1m": 60, "15m": 900, "1h": 3600, "1d": 86400}
KINDS = ("all", "lines", "zones")
DIRECTIONS = ("both", "in", "out")
LINE_COLUMNS = (
    "bucket_start",
    "site",
    "node",
    "line",
    "class",
    "in",
    "out",
    *line_speeds.COLUMNS,
)
ZONE_COLUMNS = (
    "bucket_start",
    "site",
    "node",
    "zone",
    "class",
    "entries",
    "exits",
    "max",
    "mean",
    "current",
)
# NOTE: offsets that are not multiples of 15 minutes exist only in local
# mean times before about 1980 (e.g. Africa/Monrovia, -00:44:30 until 1972);
# buckets for such dates may mix two local buckets.
_SLICE_S = 900
# SQLite raises "integer overflow" when a SUM of 64-bit integers leaves that
# range, and rows that an older gateway stored may hold up to 2**63 - 1
# each. So the database sums the quotient and the remainder by 2**32 apart,
# which stays in range for two billion rows, and Python joins them exactly.
_SUM_SPLIT = 2**32


class QueryError(ValueError):
    """Invalid count query parameters."""


@dataclass(frozen=True, slots=True)
class CountQuery:
    """Filters and bucketing of a count query."""

    bucket: str = "1h"
    tz: str = "UTC"
    site: str | None = None
    node: str | None = None
    line: str | None = None
    zone: str | None = None
    class_name: str | None = None
    direction: str = "both"
    from_ms: int | None = None
    to_ms: int | None = None
    kind: str = "all"

    def zone_info(self) -> tzinfo:
        """Return the time zone, raising QueryError for an unknown name."""
        if self.tz.upper() == "UTC":
            return UTC
        try:
            return ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise QueryError(
                f"unknown time zone {self.tz!r}; use an IANA name such as "
                f"Europe/Prague or UTC"
            ) from None

    def check(self) -> None:
        """Raise QueryError naming the first invalid parameter."""
        for name, value, allowed in (
            ("bucket", self.bucket, tuple(BUCKETS)),
            ("direction", self.direction, DIRECTIONS),
            ("kind", self.kind, KINDS),
        ):
            if value not in allowed:
                raise QueryError(
                    f"{name} {value!r} is invalid; use one of {', '.join(allowed)}"
                )
        if (
            self.from_ms is not None
            and self.to_ms is not None
            and self.from_ms >= self.to_ms
        ):
            raise QueryError("from must be earlier than to")
        self.zone_info()


def bucket_start(instant_ms: int, bucket: str, zone: tzinfo) -> datetime:
    """Return the local start, with its offset, of the bucket containing an instant."""
    local = datetime.fromtimestamp(instant_ms / 1000, UTC).astimezone(zone)
    if bucket == "1d":
        midnight = datetime.combine(local.date(), time(0), tzinfo=zone)
        # Normalise through UTC so the label carries the offset in force at
        # midnight, which zoneinfo resolves for us.
        return midnight.astimezone(UTC).astimezone(zone)
    step_min = BUCKETS[bucket] // 60
    minute = local.minute - local.minute % step_min if step_min > 1 else local.minute
    if bucket == "1h":
        minute = 0
    return local.replace(minute=minute, second=0, microsecond=0)


def _slice_s(query: CountQuery, zone: tzinfo) -> int:
    if query.bucket == "1m":
        return 60
    if zone is UTC:
        return BUCKETS[query.bucket]
    return _SLICE_S


def _where(
    query: CountQuery, name_column: str, name: str | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = ["1 = 1"]
    params: list[Any] = []
    for column, value in (
        ("site", query.site),
        ("node", query.node),
        (name_column, name),
        ("class", query.class_name),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if query.from_ms is not None:
        clauses.append("start_ms >= ?")
        params.append(query.from_ms)
    if query.to_ms is not None:
        clauses.append("start_ms < ?")
        params.append(query.to_ms)
    return " AND ".join(clauses), params


def _split_sum_sql(column: str) -> str:
    # Integer division truncates in both databases. The remainder is written
    # out because psycopg reads `%` as a placeholder.
    quotient = f"{column} / {_SUM_SPLIT}"
    return f"SUM({quotient}), SUM({column} - ({quotient}) * {_SUM_SPLIT})"


def _join_split_sum(
    quotients: Any,  # noqa: ANN401 - int on SQLite, Decimal from a PostgreSQL SUM
    remainders: Any,  # noqa: ANN401
) -> int:
    return int(quotients) * _SUM_SPLIT + int(remainders)


@dataclass(slots=True)
class _LineTotals:
    n_in: int = 0
    n_out: int = 0
    speed_in: SpeedTotals = field(default_factory=SpeedTotals)
    speed_out: SpeedTotals = field(default_factory=SpeedTotals)


def line_buckets(db: Database, query: CountQuery) -> list[dict[str, Any]]:
    """Return in/out totals and speeds per bucket, site, node, line and class.

    A bucket row carries `speed_in` or `speed_out` only when one of its
    interval rows has speeds for that direction. `line_speeds` explains how
    they merge and when `p85_kmh` is left out.
    """
    zone = query.zone_info()
    slice_ms = _slice_s(query, zone) * 1000
    where, params = _where(query, "line", query.line)
    rows = db.query(
        f"SELECT site, node, line, class, (start_ms / {slice_ms}) * {slice_ms} AS "
        f"slice, {_split_sum_sql('n_in')}, {_split_sum_sql('n_out')}, "
        f"{line_speeds.SLICE_SQL} "
        f"FROM count_lines WHERE {where} GROUP BY site, node, line, class, slice",
        params,
    )
    totals: dict[tuple[Any, ...], _LineTotals] = {}
    width = line_speeds.SLICE_WIDTH
    for site, node, line, class_name, slice_start, *sums in rows:
        start = bucket_start(int(slice_start), query.bucket, zone)
        key = (start.astimezone(UTC), start.isoformat(), site, node, line, class_name)
        figures = totals.setdefault(key, _LineTotals())
        figures.n_in += _join_split_sum(sums[0], sums[1])
        figures.n_out += _join_split_sum(sums[2], sums[3])
        speeds = sums[4:]
        figures.speed_in.add_slice(*speeds[:width])
        figures.speed_out.add_slice(*speeds[width:])
    result = []
    for key in sorted(totals):
        _, label, site, node, line, class_name = key
        figures = totals[key]
        row: dict[str, Any] = {
            "bucket_start": label,
            "site": site,
            "node": node,
            "line": line,
            "class": class_name,
        }
        if query.direction in ("both", "in"):
            row["in"] = figures.n_in
        if query.direction in ("both", "out"):
            row["out"] = figures.n_out
        for direction, merged in (("in", figures.speed_in), ("out", figures.speed_out)):
            stats = merged.stats()
            if query.direction in ("both", direction) and stats is not None:
                row[f"speed_{direction}"] = stats
        result.append(row)
    return result


def _plausible_mean(mean: float | None) -> bool:
    """Return whether a stored zone mean lies within the ingest bounds.

    An older gateway may have stored a mean of 1.7e308, which turns the
    weighted sum infinite, so such a row is left out of the bucket mean.
    """
    return mean is not None and 0 <= float(mean) <= MAX_COUNT


def zone_buckets(db: Database, query: CountQuery) -> list[dict[str, Any]]:
    """Return entries, exits, max, time-weighted mean and last occupancy per bucket."""
    zone_info = query.zone_info()
    where, params = _where(query, "zone", query.zone)
    rows = db.query(
        "SELECT site, node, zone, class, start_ms, end_ms, current_count, max_count, "
        f"mean_count, entries, exits FROM count_zones WHERE {where} ORDER BY end_ms",
        params,
    )
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for (
        site,
        node,
        zone,
        class_name,
        start_ms,
        end_ms,
        current,
        peak,
        mean,
        entries,
        exits,
    ) in rows:
        start = bucket_start(int(start_ms), query.bucket, zone_info)
        key = (start.astimezone(UTC), start.isoformat(), site, node, zone, class_name)
        group = groups.setdefault(
            key,
            {
                "entries": 0,
                "exits": 0,
                "max": 0,
                "weighted": 0.0,
                "span": 0,
                "current": 0,
            },
        )
        span = max(int(end_ms) - int(start_ms), 0)
        group["entries"] += int(entries)
        group["exits"] += int(exits)
        group["max"] = max(group["max"], int(peak))
        if _plausible_mean(mean):
            group["weighted"] += float(mean) * span
            group["span"] += span
        group["current"] = int(current)  # rows come by end time, so the last wins
    result = []
    for key in sorted(groups):
        _, label, site, node, zone, class_name = key
        group = groups[key]
        mean = group["weighted"] / group["span"] if group["span"] else 0.0
        result.append(
            {
                "bucket_start": label,
                "site": site,
                "node": node,
                "zone": zone,
                "class": class_name,
                "entries": group["entries"],
                "exits": group["exits"],
                "max": group["max"],
                "mean": round(mean, 3),
                "current": group["current"],
            }
        )
    return result


def run_query(db: Database, query: CountQuery) -> dict[str, Any]:
    """Check the query and return the bucket rows of the requested kinds."""
    query.check()
    result: dict[str, Any] = {"bucket": query.bucket, "tz": query.tz}
    if query.kind in ("all", "lines"):
        result["lines"] = line_buckets(db, query)
    if query.kind in ("all", "zones"):
        result["zones"] = zone_buckets(db, query)
    return result


def to_csv(rows: Iterable[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """Render bucket rows as CSV with a header line."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buffer.getvalue()
