"""Count run of the full node pipeline, for comparison with a technician's tally.

The node's own `Pipeline` runs on the configured source (or another one)
with a sink that sends nothing. The counts messages it produces are summed
per line and zone, with crossing speeds where the node has a ground plane,
and the incidents it raises are counted per rule.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from calibration.errors import CalibrationError
from edge.analytics.speed_stats import SPEED_FIELDS, merge_speed_fields
from edge.config import NodeConfig
from edge.pipeline import Pipeline, PipelineError, RunSummary
from edge.sinks import Sink, open_sink


class VerifyError(CalibrationError):
    """A pipeline run that could not be made."""


@dataclass(slots=True)
class ZoneTotals:
    """Sums of one zone and class over the run."""

    entries: int = 0
    exits: int = 0
    max_occupancy: int = 0


@dataclass(slots=True)
class VerifyReport:
    """Counts of the run.

    Attributes:
        lines: (line, class) -> (in, out).
        zones: (zone, class) -> totals.
        speeds: (line, class, direction) -> speed statistics of each counts
            interval that had crossings with a known speed.
        incidents: (rule, type) -> incidents started.
        summary: the pipeline's own run summary.
    """

    lines: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    zones: dict[tuple[str, str], ZoneTotals] = field(default_factory=dict)
    speeds: dict[tuple[str, str, str], list[dict[str, Any]]] = field(
        default_factory=dict
    )
    incidents: Counter[tuple[str, str]] = field(default_factory=Counter)
    summary: RunSummary | None = None

    def speed(
        self, line: str, class_name: str, direction: str
    ) -> dict[str, Any] | None:
        """Return the run's merged speed statistics of one line direction."""
        return merge_speed_fields(self.speeds.get((line, class_name, direction), []))


class _CountsCollector:
    """A sink that forwards to another and sums the counts messages."""

    def __init__(self, inner: Sink, report: VerifyReport) -> None:
        self._inner = inner
        self._report = report

    def send(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        payload = self._inner.send(kind, body)
        if kind == "counts":
            self._add(body)
        elif kind == "incident" and body.get("phase") == "start":
            self._report.incidents[(body["rule"], body["type"])] += 1
        return payload

    def _add(self, body: dict[str, Any]) -> None:
        for row in body.get("lines", []):
            totals = self._report.lines.setdefault((row["line"], row["class"]), [0, 0])
            totals[0] += int(row["in"])
            totals[1] += int(row["out"])
            for field_name in SPEED_FIELDS:
                if field_name in row:
                    key = (row["line"], row["class"], field_name.removeprefix("speed_"))
                    self._report.speeds.setdefault(key, []).append(row[field_name])
        for row in body.get("zones", []):
            zone = self._report.zones.setdefault(
                (row["zone"], row["class"]), ZoneTotals()
            )
            zone.entries += int(row["entries"])
            zone.exits += int(row["exits"])
            zone.max_occupancy = max(zone.max_occupancy, int(row["max"]))

    def send_transient(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._inner.send_transient(kind, body)

    def stats_fields(self) -> dict[str, Any]:
        return self._inner.stats_fields()

    def close(self) -> None:
        self._inner.close()


class _StreamTimeLimit(threading.Event):
    """A stop event that also fires once the stream passes `limit_s` seconds.

    `Pipeline.run` checks its stop event before each frame, so this ends a
    file run after the requested stream time without touching the pipeline.
    """

    def __init__(self, summary: RunSummary, limit_s: float | None) -> None:
        super().__init__()
        self._summary = summary
        self._limit_s = limit_s

    def is_set(self) -> bool:
        if self._limit_s is not None and self._summary.stream_s >= self._limit_s:
            return True
        return super().is_set()


def run_verify(
    config: NodeConfig,
    *,
    seconds: float | None = None,
    stop: threading.Event | None = None,
) -> VerifyReport:
    """Run the pipeline for `seconds` of stream time (None: to the end).

    Raises:
        VerifyError: when the model or the source cannot be opened, or the
            geometry does not fit the stream.
    """
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise VerifyError(f"--seconds is {seconds:g}; use a finite number above 0")
    report = VerifyReport()
    sink = _CountsCollector(open_sink("none", config), report)
    try:
        pipeline = Pipeline(config, sink)
        limit = _StreamTimeLimit(pipeline.summary, seconds)
        if stop is not None and stop.is_set():
            limit.set()
        report.summary = pipeline.run(limit)
    except PipelineError as error:
        raise VerifyError(str(error)) from None
    finally:
        sink.close()
    _add_configured_rows(config, report)
    return report


def _add_configured_rows(config: NodeConfig, report: VerifyReport) -> None:
    """Make sure every configured line and zone shows up, even with no count."""
    seen_lines = {line for line, _ in report.lines}
    for line in config.lines:
        if line.name not in seen_lines:
            report.lines[(line.name, "-")] = [0, 0]
    seen_zones = {zone for zone, _ in report.zones}
    for zone in config.zones:
        if zone.name not in seen_zones:
            report.zones[(zone.name, "-")] = ZoneTotals()


def format_table(report: VerifyReport) -> str:
    """Return the counts as an aligned plain-text table, then speeds and incidents.

    Speed and incident tables appear only when the run had any.
    """
    rows: list[tuple[str, ...]] = [
        ("kind", "name", "class", "in/entries", "out/exits", "max")
    ]
    grouped: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for (name, cls), (count_in, count_out) in sorted(report.lines.items()):
        grouped["line"].append(("line", name, cls, str(count_in), str(count_out), ""))
    for (name, cls), zone in sorted(report.zones.items()):
        grouped["zone"].append(
            (
                "zone",
                name,
                cls,
                str(zone.entries),
                str(zone.exits),
                str(zone.max_occupancy),
            )
        )
    rows.extend(grouped["line"])
    rows.extend(grouped["zone"])
    tables = [_align(rows)]
    speed_rows = _speed_rows(report)
    if speed_rows:
        tables.append(_align(speed_rows))
    if report.incidents:
        incident_rows: list[tuple[str, ...]] = [("rule", "type", "started")]
        for (rule, kind), started in sorted(report.incidents.items()):
            incident_rows.append((rule, kind, str(started)))
        tables.append(_align(incident_rows))
    return "\n\n".join(tables)


def _speed_rows(report: VerifyReport) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for line, class_name, direction in sorted(report.speeds):
        stats = report.speed(line, class_name, direction)
        if stats is None:
            continue
        rows.append(
            (
                line,
                class_name,
                direction,
                str(stats["n"]),
                f"{stats['mean_kmh']:.1f}",
                f"{stats['max_kmh']:.1f}",
            )
        )
    if not rows:
        return []
    return [("line", "class", "direction", "n", "mean km/h", "max km/h"), *rows]


def _align(rows: list[tuple[str, ...]]) -> str:
    """Return rows as left-aligned columns under a dashed header rule."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
