"""Tracker settings, their validation, and the tracker's exception family."""

from __future__ import annotations

import math
from dataclasses import dataclass

# Buffers round up to whole frames. This slack keeps 0.28 s at 25 fps, which
# is 7.000000000000001 frames in floating point, at 7 frames rather than 8.
_FRAME_ROUNDING_SLACK = 1e-6


class TrackerError(Exception):
    """Base class of the errors raised by `edge.tracker`."""


class TrackerConfigError(TrackerError, ValueError):
    """A tracker setting is invalid. The message names the setting and its value."""


class TrackerInputError(TrackerError, ValueError):
    """Detections or a timestamp passed to `update` are invalid."""


def _require_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise TrackerConfigError(f"{name} must be a finite number, got {value!r}")


def _require_positive(name: str, value: float, fix: str) -> None:
    _require_finite(name, value)
    if value <= 0:
        raise TrackerConfigError(f"{name} must be > 0, got {value!r}; {fix}")


def _require_unit(name: str, value: float) -> None:
    _require_finite(name, value)
    if not 0.0 <= value <= 1.0:
        raise TrackerConfigError(f"{name} must be in 0..1, got {value!r}")


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """Validated settings of a `ByteTracker`.

    Attributes:
        frame_rate: nominal frames per second of the stream; it converts
            `lost_track_buffer_s` into whole frames and sets the slack
            allowed for timestamp jitter.
        high_threshold: detections at or above this score take part in the
            first association. Raising it leaves more detections to the
            stricter second pass, which only extends existing tracks.
        low_threshold: detections below this score are ignored. Lowering it
            keeps tracks alive through occlusion, at the risk of matching
            clutter.
        new_track_threshold: unmatched detections at or above this score
            start a tentative track. Raising it cuts false tracks but starts
            real ones later.
        match_iou: minimum IoU between a track's predicted box and a
            detection for the first and third associations. Lowering it
            follows fast or badly predicted objects but swaps ids more often.
        low_match_iou: minimum IoU for the second association of
            low-score detections; kept high because those detections are
            less trustworthy.
        lost_track_buffer_s: how long a track that lost its detection may
            still be recovered, in seconds of frames on which detection ran.
        confirm_hits: matched detections a track needs before it is
            confirmed.
        min_confirm_s: minimum age in seconds before a track is confirmed,
            on top of `confirm_hits`.
        class_agnostic: when True, a detection may extend a track of another
            class; the track's class stays the majority vote.
    """

    frame_rate: float
    high_threshold: float = 0.5
    low_threshold: float = 0.1
    new_track_threshold: float = 0.6
    match_iou: float = 0.2
    low_match_iou: float = 0.5
    lost_track_buffer_s: float = 1.0
    confirm_hits: int = 3
    min_confirm_s: float = 0.0
    class_agnostic: bool = False

    def __post_init__(self) -> None:
        _require_positive(
            "frame_rate", self.frame_rate, "pass the stream's frames per second"
        )
        _require_positive(
            "lost_track_buffer_s",
            self.lost_track_buffer_s,
            "use at least one frame period, e.g. 1 / frame_rate",
        )
        self._validate_thresholds()
        if self.confirm_hits < 1:
            raise TrackerConfigError(
                f"confirm_hits must be >= 1, got {self.confirm_hits!r}"
            )
        _require_finite("min_confirm_s", self.min_confirm_s)
        if self.min_confirm_s < 0:
            raise TrackerConfigError(
                f"min_confirm_s must be >= 0, got {self.min_confirm_s!r}"
            )

    def _validate_thresholds(self) -> None:
        for name in ("high_threshold", "low_threshold", "new_track_threshold"):
            _require_unit(name, getattr(self, name))
        for name in ("match_iou", "low_match_iou"):
            value = getattr(self, name)
            _require_unit(name, value)
            if value == 0.0:
                raise TrackerConfigError(
                    f"{name} must be > 0, got 0.0; with 0 every track could "
                    "match every detection"
                )
        if self.low_threshold > self.high_threshold:
            raise TrackerConfigError(
                f"low_threshold ({self.low_threshold}) must be <= high_threshold "
                f"({self.high_threshold})"
            )
        if self.new_track_threshold < self.high_threshold:
            raise TrackerConfigError(
                f"new_track_threshold ({self.new_track_threshold}) must be >= "
                f"high_threshold ({self.high_threshold}) because only "
                "high-score detections can start tracks"
            )

    @property
    def lost_track_buffer_frames(self) -> int:
        """The lost-track buffer in whole frames, rounded up and at least 1."""
        frames = self.lost_track_buffer_s * self.frame_rate - _FRAME_ROUNDING_SLACK
        return max(1, math.ceil(frames))

    @property
    def max_missed_s(self) -> float:
        """Missed time after which a lost track is removed.

        The buffer in whole frames, plus half a frame period so that
        timestamp jitter and float sums of frame periods do not remove a
        track one frame early.
        """
        return (self.lost_track_buffer_frames + 0.5) / self.frame_rate
