"""ByteTrack-style multi-object tracker driven by stream timestamps.

Each frame runs three associations, as in ByteTrack (Zhang et al., ECCV 2022):

1. High-score detections against every confirmed track, tracked or lost.
2. Low-score detections against the confirmed tracks still unmatched that
   were tracked on the previous frame with detection, with a stricter IoU
   gate. This keeps tracks alive through partial occlusion.
3. The remaining high-score detections against tentative tracks.

Unmatched high-score detections above `new_track_threshold` start tentative
tracks. A tentative track is dropped at its first miss, so a one-frame false
positive never becomes confirmed. Unlike supervision's ByteTrack, tentative
tracks carry their own ids with `confirmed=False` instead of a shared -1.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass

import numpy as np

from edge.tracker import kalman
from edge.tracker.config import TrackerConfig, TrackerInputError
from edge.tracker.matching import Array, IndexArray, assign, iou_matrix
from edge.tracker.state import TrackState
from edge.types import Detections, Track

logger = logging.getLogger(__name__)

# Ids start at a random 30-bit value and count up, so they differ between
# runs and stay below 2**31 for the first 2**30 tracks of a run.
_ID_BITS = 30
# Confirmation age is compared with this slack against float timestamps.
_AGE_SLACK_S = 1e-9


@dataclass(frozen=True, slots=True)
class _Rows:
    """Usable detections of one frame as float64 arrays."""

    boxes: Array
    scores: Array
    classes: IndexArray


class ByteTracker:
    """Multi-object tracker in the ByteTrack family.

    Args:
        frame_rate: nominal frames per second of the stream; must be > 0.
        high_threshold: score from which a detection joins the first
            association; see `TrackerConfig` for every setting.
        low_threshold: score below which detections are ignored.
        new_track_threshold: score from which an unmatched detection starts
            a track.
        match_iou: IoU gate of the first and third associations.
        low_match_iou: IoU gate of the second association.
        lost_track_buffer_s: seconds a lost track may be recovered; rounded
            up to whole frames of `frame_rate`, at least one.
        confirm_hits: matched detections before a track is confirmed.
        min_confirm_s: minimum track age in seconds before confirmation.
        class_agnostic: let detections of another class extend a track.

    Raises:
        TrackerConfigError: a setting is out of range.
    """

    def __init__(
        self,
        frame_rate: float,
        *,
        high_threshold: float = 0.5,
        low_threshold: float = 0.1,
        new_track_threshold: float = 0.6,
        match_iou: float = 0.2,
        low_match_iou: float = 0.5,
        lost_track_buffer_s: float = 1.0,
        confirm_hits: int = 3,
        min_confirm_s: float = 0.0,
        class_agnostic: bool = False,
    ) -> None:
        self.config = TrackerConfig(
            frame_rate=frame_rate,
            high_threshold=high_threshold,
            low_threshold=low_threshold,
            new_track_threshold=new_track_threshold,
            match_iou=match_iou,
            low_match_iou=low_match_iou,
            lost_track_buffer_s=lost_track_buffer_s,
            confirm_hits=confirm_hits,
            min_confirm_s=min_confirm_s,
            class_agnostic=class_agnostic,
        )
        self._tracks: dict[int, TrackState] = {}
        self._next_id = secrets.randbits(_ID_BITS) + 1
        self._last_timestamp_s: float | None = None
        self.dropped_detections = 0
        logger.info(
            "tracker ready: %.3g fps, lost buffer %.3g s (%d frames), "
            "confirm after %d hits",
            frame_rate,
            lost_track_buffer_s,
            self.config.lost_track_buffer_frames,
            confirm_hits,
        )

    def __len__(self) -> int:
        """Return the number of live tracks, tentative and lost included."""
        return len(self._tracks)

    def reset(self) -> list[int]:
        """Drop every track, for a stream that restarts or jumps.

        Ids keep counting, so no id of this tracker is ever reused.

        Returns:
            Ids of the tracks that were dropped, for analytics to purge.
        """
        ended = list(self._tracks)
        self._tracks.clear()
        self._last_timestamp_s = None
        return ended

    def update(
        self, detections: Detections, timestamp_s: float, detection_ran: bool = True
    ) -> tuple[list[Track], list[int]]:
        """Advance the tracks to `timestamp_s` and match them with detections.

        Args:
            detections: detector output of this frame; must be empty when
                `detection_ran` is False.
            timestamp_s: stream time of the frame in seconds, never
                decreasing between calls; Kalman steps use the real gaps.
            detection_ran: False for frames the detector skipped. Tracks then
                coast on their prediction, are not aged towards removal, and
                no track starts.

        Returns:
            The live tracks (tentative ones with `confirmed=False`, coasting
            ones with `detected=False`) and the ids of tracks that ended on
            this frame.

        Raises:
            TrackerInputError: the timestamp is not finite or goes backwards,
                the detection arrays disagree in length, or detections were
                passed with `detection_ran=False`.
        """
        dt_s = self._advance_clock(timestamp_s)
        _check_shapes(detections)
        if not detection_ran and len(detections):
            raise TrackerInputError(
                f"detections must be empty when detection_ran is False, got "
                f"{len(detections)} rows; pass Detections.empty() or set "
                "detection_ran=True"
            )
        tracks = list(self._tracks.values())
        _predict(tracks, dt_s)
        if not detection_ran:
            for track in tracks:
                track.detected = False
                track.detection_xyxy = None
            return [track.to_track() for track in tracks], []

        found = self._valid_rows(detections)
        matches, unmatched_high = self._associate(tracks, found)
        self._apply_matches(tracks, matches, found, timestamp_s)
        ended = self._age_unmatched(tracks, matches, dt_s)
        self._start_tracks(unmatched_high, found, timestamp_s)
        return [track.to_track() for track in self._tracks.values()], ended

    def _advance_clock(self, timestamp_s: float) -> float:
        if not math.isfinite(timestamp_s):
            raise TrackerInputError(
                f"timestamp_s must be a finite number of seconds, got {timestamp_s!r}"
            )
        previous = self._last_timestamp_s
        if previous is not None and timestamp_s < previous:
            raise TrackerInputError(
                f"timestamp_s went backwards from {previous} to {timestamp_s}; "
                "call reset() when the stream restarts"
            )
        self._last_timestamp_s = timestamp_s
        return 0.0 if previous is None else timestamp_s - previous

    def _valid_rows(self, detections: Detections) -> _Rows:
        boxes = np.asarray(detections.xyxy, dtype=np.float64)
        scores = np.asarray(detections.confidence, dtype=np.float64)
        classes = np.asarray(detections.class_id, dtype=np.intp)
        valid = (
            np.isfinite(boxes).all(axis=1)
            & np.isfinite(scores)
            & (boxes[:, 2] > boxes[:, 0])
            & (boxes[:, 3] > boxes[:, 1])
            & (scores >= self.config.low_threshold)
        )
        invalid = int(np.count_nonzero(~valid & ~(scores < self.config.low_threshold)))
        if invalid:
            self.dropped_detections += invalid
            logger.debug(
                "dropped %d detections with non-finite values or empty boxes "
                "(%d so far)",
                invalid,
                self.dropped_detections,
            )
        return _Rows(boxes[valid], scores[valid], classes[valid])

    def _associate(
        self, tracks: list[TrackState], found: _Rows
    ) -> tuple[dict[int, int], IndexArray]:
        """Return track index to detection index, and unmatched high detections."""
        # NOTE: ByteTrack also drops a lost track that overlaps a tracked one
        # with IoU > 0.85 as a duplicate. That step is missing here, so a
        # re-detected object can briefly carry two ids until the lost one ends.
        config = self.config
        predicted = kalman.state_to_xyxy(_stack_means(tracks))
        track_classes = np.asarray([t.class_id for t in tracks], dtype=np.intp)
        confirmed = np.asarray([t.confirmed for t in tracks], dtype=bool)
        was_tracked = np.asarray([not t.lost for t in tracks], dtype=bool)
        high = np.flatnonzero(found.scores >= config.high_threshold)
        low = np.flatnonzero(found.scores < config.high_threshold)
        matches: dict[int, int] = {}

        def match(rows: IndexArray, cols: IndexArray, min_iou: float) -> IndexArray:
            iou = iou_matrix(predicted[rows], found.boxes[cols])
            allowed = None
            if not config.class_agnostic:
                allowed = track_classes[rows][:, None] == found.classes[cols][None, :]
            matched_rows, matched_cols = assign(iou, min_iou, allowed)
            matches.update(
                zip(
                    rows[matched_rows].tolist(),
                    cols[matched_cols].tolist(),
                    strict=True,
                )
            )
            return np.delete(cols, matched_cols)

        high = match(np.flatnonzero(confirmed), high, config.match_iou)
        second = np.flatnonzero(confirmed & was_tracked)
        second = second[~np.isin(second, list(matches))]
        match(second, low, config.low_match_iou)
        high = match(np.flatnonzero(~confirmed), high, config.match_iou)
        return matches, high

    def _apply_matches(
        self,
        tracks: list[TrackState],
        matches: dict[int, int],
        found: _Rows,
        timestamp_s: float,
    ) -> None:
        if not matches:
            return
        rows = list(matches)
        cols = np.asarray(list(matches.values()), dtype=np.intp)
        matched = [tracks[row] for row in rows]
        mean, covariance = kalman.update(
            _stack_means(matched),
            np.stack([t.covariance for t in matched]),
            kalman.xyxy_to_measurement(found.boxes[cols]),
        )
        config = self.config
        for i, track in enumerate(matched):
            col = int(cols[i])
            track.mean = mean[i]
            track.covariance = covariance[i]
            track.hits += 1
            track.missed_s = 0.0
            track.lost = False
            track.detected = True
            track.confidence = float(found.scores[col])
            track.detection_xyxy = _box_tuple(found.boxes[col])
            track.vote(int(found.classes[col]))
            if not track.confirmed:
                old_enough = (
                    timestamp_s - track.born_s >= config.min_confirm_s - _AGE_SLACK_S
                )
                track.confirmed = track.hits >= config.confirm_hits and old_enough

    def _age_unmatched(
        self, tracks: list[TrackState], matches: dict[int, int], dt_s: float
    ) -> list[int]:
        ended: list[int] = []
        for row, track in enumerate(tracks):
            if row in matches:
                continue
            track.detected = False
            track.detection_xyxy = None
            track.lost = True
            track.missed_s += dt_s
            if not track.confirmed or track.missed_s > self.config.max_missed_s:
                ended.append(track.track_id)
                del self._tracks[track.track_id]
        if ended:
            logger.debug("tracks ended: %s", ended)
        return ended

    def _start_tracks(
        self,
        candidates: IndexArray,
        found: _Rows,
        timestamp_s: float,
    ) -> None:
        fresh = candidates[found.scores[candidates] >= self.config.new_track_threshold]
        if fresh.size == 0:
            return
        means, covariances = kalman.initiate(
            kalman.xyxy_to_measurement(found.boxes[fresh])
        )
        born_confirmed = (
            self.config.confirm_hits == 1 and self.config.min_confirm_s == 0
        )
        for i, col in enumerate(fresh.tolist()):
            track = TrackState(
                track_id=self._next_id,
                mean=means[i],
                covariance=covariances[i],
                born_s=timestamp_s,
                confidence=float(found.scores[col]),
                confirmed=born_confirmed,
                detection_xyxy=_box_tuple(found.boxes[col]),
            )
            track.vote(int(found.classes[col]))
            self._tracks[track.track_id] = track
            self._next_id += 1
        logger.debug("tracks started: %d", fresh.size)


def _check_shapes(detections: Detections) -> None:
    rows = detections.xyxy.shape[0] if detections.xyxy.ndim == 2 else -1
    if detections.xyxy.ndim != 2 or detections.xyxy.shape[1] != 4:
        raise TrackerInputError(
            f"detections.xyxy must have shape (N, 4), got {detections.xyxy.shape}"
        )
    lengths = (detections.confidence.shape, detections.class_id.shape)
    if lengths != ((rows,), (rows,)):
        raise TrackerInputError(
            f"detections.confidence and detections.class_id must have shape "
            f"({rows},) like xyxy, got {lengths[0]} and {lengths[1]}"
        )


def _stack_means(tracks: list[TrackState]) -> Array:
    if not tracks:
        return np.zeros((0, kalman.STATE_SIZE))
    return np.stack([t.mean for t in tracks])


def _predict(tracks: list[TrackState], dt_s: float) -> None:
    if not tracks or dt_s <= 0:
        return
    mean, covariance = kalman.predict(
        _stack_means(tracks), np.stack([t.covariance for t in tracks]), dt_s
    )
    for i, track in enumerate(tracks):
        track.mean = mean[i]
        track.covariance = covariance[i]


def _box_tuple(box: Array) -> tuple[float, float, float, float]:
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
