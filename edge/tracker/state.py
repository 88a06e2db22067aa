"""Mutable per-track state kept by the tracker between frames."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge.tracker.kalman import Array, state_to_xyxy
from edge.types import Track


@dataclass(slots=True, eq=False)
class TrackState:
    """One live track: its filter, its history counters and its class votes.

    Attributes:
        track_id: id reported in `Track.track_id`.
        mean: Kalman state (8,), see `edge.tracker.kalman`.
        covariance: Kalman covariance (8, 8).
        born_s: timestamp of the first detection.
        confidence: score of the last matched detection.
        hits: matched detections so far.
        missed_s: seconds of frames with detection since the last match;
            frames without detection do not add to it.
        detected: True when a detection was matched on the latest frame.
        lost: True after a miss on a frame with detection, until the next
            match.
        confirmed: True once `hits` and the age reached the thresholds.
        class_votes: matched detections per class id; at most one entry per
            class of the model.
        class_id: majority class of the matched detections; a tie goes to
            the class matched last.
        detection_xyxy: box of the detection matched on the latest frame,
            or None when `detected` is False.
    """

    track_id: int
    mean: Array
    covariance: Array
    born_s: float
    confidence: float
    hits: int = 1
    missed_s: float = 0.0
    detected: bool = True
    lost: bool = False
    confirmed: bool = False
    class_votes: dict[int, int] = field(default_factory=dict)
    class_id: int = -1
    detection_xyxy: tuple[float, float, float, float] | None = None

    def vote(self, class_id: int) -> None:
        """Count one matched detection of `class_id` and update the majority."""
        count = self.class_votes.get(class_id, 0) + 1
        self.class_votes[class_id] = count
        if count >= self.class_votes.get(self.class_id, 0):
            self.class_id = class_id

    def to_track(self) -> Track:
        """Return the track as reported to analytics.

        The box is the matched detection when there is one, because analytics
        place anchors on what the detector saw; otherwise it is the Kalman
        prediction.
        """
        xyxy = self.detection_xyxy if self.detected else None
        if xyxy is None:
            box = state_to_xyxy(self.mean[np.newaxis, :])[0]
            xyxy = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
        return Track(
            track_id=self.track_id,
            xyxy=xyxy,
            class_id=self.class_id,
            confidence=self.confidence,
            confirmed=self.confirmed,
            detected=self.detected,
            velocity_xy=(float(self.mean[4]), float(self.mean[5])),
        )
