"""Camera offline and node degraded incidents, from source events and frame times."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from edge.incidents.lifecycle import (
    IncidentBook,
    IncidentEvent,
    IncidentType,
    Moment,
    Severity,
)
from edge.incidents.rules import RuleError, require_non_negative, require_rule_name

logger = logging.getLogger(__name__)

_KEY = "node"


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthSettings:
    """Limits of the camera-offline and node-degraded incidents.

    Attributes:
        offline_rule: rule name of camera-offline incidents.
        offline_severity: their severity.
        degraded_rule: rule name of node-degraded incidents.
        degraded_severity: their severity.
        target_fps: frame rate the node should process; 0 turns the
            degraded check off.
        min_fps_ratio: the node is degraded while its measured rate is below
            this share of `target_fps`. Lower it to tolerate slower phases.
        rate_window_s: stream seconds over which the rate is measured.
        degraded_hold_s: the rate must stay low this long before an
            incident starts. Raise it to ride out short load spikes.
        recover_hold_s: the rate must be back this long before it ends.
        cooldown_s: no new degraded incident for this long after one ends.
    """

    offline_rule: str = "camera_offline"
    offline_severity: Severity = Severity.HIGH
    degraded_rule: str = "node_degraded"
    degraded_severity: Severity = Severity.LOW
    target_fps: float = 0.0
    min_fps_ratio: float = 0.8
    rate_window_s: float = 5.0
    degraded_hold_s: float = 30.0
    recover_hold_s: float = 10.0
    cooldown_s: float = 60.0

    def __post_init__(self) -> None:
        require_rule_name(self.offline_rule)
        require_rule_name(self.degraded_rule)
        for field_name in (
            "target_fps",
            "rate_window_s",
            "degraded_hold_s",
            "recover_hold_s",
            "cooldown_s",
        ):
            require_non_negative(
                self.degraded_rule, field_name, getattr(self, field_name)
            )
        if not 0 < self.min_fps_ratio <= 1:
            raise RuleError(
                f"rule {self.degraded_rule!r}: min_fps_ratio={self.min_fps_ratio} is "
                "invalid; use a share above 0 and at most 1"
            )
        if self.target_fps > 0 and self.rate_window_s <= 0:
            raise RuleError(
                f"rule {self.degraded_rule!r}: rate_window_s must be above 0 when "
                "target_fps is set"
            )


class SourceHealthMonitor:
    """Turns source state changes and frame times into health incidents."""

    def __init__(self, settings: HealthSettings | None = None) -> None:
        self.settings = settings or HealthSettings()
        self._offline = IncidentBook(
            self.settings.offline_rule,
            IncidentType.CAMERA_OFFLINE,
            self.settings.offline_severity,
            0.0,
        )
        self._degraded = IncidentBook(
            self.settings.degraded_rule,
            IncidentType.NODE_DEGRADED,
            self.settings.degraded_severity,
            self.settings.cooldown_s,
        )
        self._frame_pts: deque[float] = deque()
        self._low_since: Moment | None = None
        self._ok_since: Moment | None = None
        self._online = True

    def on_source_state(self, online: bool, at: datetime) -> list[IncidentEvent]:
        """Record that the video source went offline or came back online.

        Args:
            online: the new state of the source.
            at: aware UTC time of the change.
        """
        now = Moment(at.timestamp(), at)
        if online == self._online:
            return []
        self._online = online
        self._frame_pts.clear()
        self._low_since = None
        if online:
            event = self._offline.end(_KEY, now)
            logger.info("video source back online")
        else:
            event = self._offline.start(_KEY, now)
            logger.warning("video source offline")
        return [event] if event is not None else []

    def on_frame(self, now: Moment) -> list[IncidentEvent]:
        """Record one processed frame and judge the frame rate."""
        if not self._online:
            # A frame proves the source is back even without an online event.
            return self.on_source_state(True, now.at) + self.on_frame(now)
        if self.settings.target_fps <= 0:
            return []
        rate = self._measure(now.pts_s)
        if rate is None:
            return []
        low = rate < self.settings.target_fps * self.settings.min_fps_ratio
        return self._judge(low, rate, now)

    def _measure(self, pts_s: float) -> float | None:
        frames = self._frame_pts
        frames.append(pts_s)
        while frames and frames[0] < pts_s - self.settings.rate_window_s:
            frames.popleft()
        span = frames[-1] - frames[0]
        if span < self.settings.rate_window_s * 0.9 or len(frames) < 2:
            return None
        return (len(frames) - 1) / span

    def _judge(self, low: bool, rate: float, now: Moment) -> list[IncidentEvent]:
        detail = {
            "measured_fps": round(rate, 2),
            "target_fps": self.settings.target_fps,
        }
        if low:
            self._ok_since = None
            self._low_since = self._low_since or now
            if now.pts_s - self._low_since.pts_s < self.settings.degraded_hold_s:
                return []
            event = self._degraded.start(_KEY, now, detail=detail)
            if event is not None:
                logger.warning(
                    "node degraded: %.2f fps against a target of %.2f",
                    rate,
                    self.settings.target_fps,
                )
            return [event] if event is not None else []
        self._low_since = None
        if not self._degraded.is_open(_KEY):
            return []
        self._ok_since = self._ok_since or now
        if now.pts_s - self._ok_since.pts_s < self.settings.recover_hold_s:
            return []
        event = self._degraded.end(_KEY, now, ended_at=self._ok_since.at, detail=detail)
        self._ok_since = None
        return [event] if event is not None else []
