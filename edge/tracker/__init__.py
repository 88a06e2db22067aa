"""Multi-object tracking: detections of each frame in, tracks with ids out."""

from edge.tracker.bytetrack import ByteTracker
from edge.tracker.config import (
    TrackerConfig,
    TrackerConfigError,
    TrackerError,
    TrackerInputError,
)

__all__ = [
    "ByteTracker",
    "TrackerConfig",
    "TrackerConfigError",
    "TrackerError",
    "TrackerInputError",
]
