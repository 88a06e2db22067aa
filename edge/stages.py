"""Per-stage timing of the frame loop, for the heartbeat and the benchmark."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

STAGES = (
    "decode",
    "mask",
    "motion",
    "preprocess",
    "inference",
    "postprocess",
    "tracking",
    "speed",
    "analytics",
    "incidents",
    "publish",
)


@dataclass(slots=True)
class StageTimer:
    """Accumulates wall seconds per pipeline stage.

    Totals grow without bound only as floats, so the timer is safe on 24/7
    streams; `window()` gives the figures since the previous call.
    """

    totals_s: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(STAGES, 0.0)
    )
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    _window_totals: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(STAGES, 0.0)
    )
    _window_calls: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(STAGES, 0)
    )

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the body of a `with` block as stage `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        """Add `seconds` to stage `name`."""
        self.totals_s[name] = self.totals_s.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1
        self._window_totals[name] = self._window_totals.get(name, 0.0) + seconds
        self._window_calls[name] = self._window_calls.get(name, 0) + 1

    def window(self) -> dict[str, tuple[float, int]]:
        """Return (seconds, calls) per stage since the last call, and reset."""
        result = {
            name: (self._window_totals[name], self._window_calls[name])
            for name in self._window_totals
        }
        self._window_totals = dict.fromkeys(self._window_totals, 0.0)
        self._window_calls = dict.fromkeys(self._window_calls, 0)
        return result

    def mean_ms(self, name: str) -> float:
        """Return the mean milliseconds of one call of stage `name`."""
        calls = self.calls.get(name, 0)
        return 1000.0 * self.totals_s.get(name, 0.0) / calls if calls else 0.0
