"""Value objects that flow through the node's pipeline.

Data flows one way: a source yields `Frame`s, the detector turns a frame into
`Detections`, the tracker turns detections into `Track`s, and analytics read
tracks. Boxes are always `xyxy` in pixels of the frame they came from.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Image = npt.NDArray[np.uint8]


@dataclass(slots=True)
class Frame:
    """One decoded picture and when it was taken.

    Attributes:
        image: BGR uint8 array of shape (height, width, 3).
        index: 0-based position in the stream, counting every frame read,
            including frames dropped later.
        pts_s: stream time in seconds since the source's first frame; for
            files it comes from the container, for live sources from a
            monotonic clock.
        captured_at: UTC wall-clock time of the frame.
        detection_ran: False while the frame has not been through the
            detector (frame skipping, motion gating); analytics then treat
            missing objects as not observed rather than gone.
    """

    image: Image
    index: int
    pts_s: float
    captured_at: datetime
    detection_ran: bool = True

    @property
    def resolution_wh(self) -> tuple[int, int]:
        """Width and height in pixels."""
        height, width = self.image.shape[:2]
        return int(width), int(height)


@dataclass(slots=True)
class Detections:
    """Detector output for one frame, as parallel arrays.

    Attributes:
        xyxy: float32 array (N, 4) of left, top, right, bottom in frame pixels.
        confidence: float32 array (N,) of scores in 0..1.
        class_id: int64 array (N,) of class indices of the model.
    """

    xyxy: FloatArray
    confidence: FloatArray
    class_id: IntArray

    @classmethod
    def empty(cls) -> Detections:
        """Return detections with no rows."""
        return cls(
            xyxy=np.zeros((0, 4), dtype=np.float32),
            confidence=np.zeros((0,), dtype=np.float32),
            class_id=np.zeros((0,), dtype=np.int64),
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def select(self, mask: npt.NDArray[np.bool_]) -> Detections:
        """Return the rows where `mask` is True."""
        return Detections(self.xyxy[mask], self.confidence[mask], self.class_id[mask])


class Anchor(enum.StrEnum):
    """Point of a box that stands for the object's position."""

    BOTTOM_CENTER = "bottom_center"
    CENTER = "center"
    TOP_CENTER = "top_center"

    def point(self, xyxy: tuple[float, float, float, float]) -> tuple[float, float]:
        """Return the anchor point of an `xyxy` box."""
        left, top, right, bottom = xyxy
        x = (left + right) / 2.0
        if self is Anchor.BOTTOM_CENTER:
            return x, bottom
        if self is Anchor.TOP_CENTER:
            return x, top
        return x, (top + bottom) / 2.0


@dataclass(slots=True)
class Track:
    """A tracked object as seen on one frame.

    Attributes:
        track_id: random per-run identifier; it never leaves the node.
        xyxy: box on this frame (the Kalman prediction when not detected).
        class_id: class index of the model, the majority over the track.
        confidence: score of the last matched detection.
        confirmed: True once the track has lived long enough to count.
        detected: True when a detection was matched on this frame.
        velocity_xy: Kalman velocity of the box centre in pixels per second.
    """

    track_id: int
    xyxy: tuple[float, float, float, float]
    class_id: int
    confidence: float
    confirmed: bool
    detected: bool
    velocity_xy: tuple[float, float] = (0.0, 0.0)


@dataclass(slots=True)
class TrackedFrame:
    """A frame with the tracker's view of it; what analytics consume.

    Attributes:
        frame: the frame.
        tracks: the tracker's tracks on it, confirmed or not.
        ended_track_ids: tracks the tracker dropped on this frame.
        speeds_kmh: ground speed in km/h per track id, for the tracks whose
            speed is known; empty on a node without a ground plane.
    """

    frame: Frame
    tracks: list[Track] = field(default_factory=list)
    ended_track_ids: list[int] = field(default_factory=list)
    speeds_kmh: dict[int, float] = field(default_factory=dict)
