"""Snapshots: one frame of the node's source saved as PNG with a JSON sidecar.

Lines, zones and masks are drawn on a snapshot, so its resolution becomes the
config's `geometry.reference_resolution`. The sidecar (`NAME.json` next to
`NAME.png`) records that resolution, the source and when the frame was taken.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from calibration.errors import CalibrationError
from edge.messages import utc_iso
from edge.sources import SourceError, open_source
from edge.sources.live import redact_uri
from edge.types import Frame, Image

logger = logging.getLogger(__name__)

# A live camera that is down is retried this many times before the snapshot
# gives up, so the command ends instead of waiting forever.
_LIVE_RECONNECTS = 3


class SnapshotError(CalibrationError):
    """A snapshot that cannot be taken, written or read."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A saved frame and where it came from.

    Attributes:
        image: BGR pixels.
        path: the PNG file.
        resolution_wh: width and height in pixels.
        source: source URI with any password removed; None when unknown.
        pts_s: stream time of the frame in seconds; None when unknown.
        captured_at: UTC time of the frame as ISO 8601; None when unknown.
    """

    image: Image
    path: Path
    resolution_wh: tuple[int, int]
    source: str | None = None
    pts_s: float | None = None
    captured_at: str | None = None


def sidecar_path(png: Path) -> Path:
    """Return the JSON sidecar path of a snapshot PNG."""
    return png.with_suffix(".json")


def grab_frame(uri: str, *, fps: float | None = None, at_s: float = 0.0) -> Frame:
    """Read the first frame at or after `at_s` seconds of stream time.

    Raises:
        SnapshotError: when the source cannot be opened or ends before
            `at_s`.
    """
    if at_s < 0:
        raise SnapshotError(f"--at is {at_s:g} s; use 0 or a positive number")
    try:
        with open_source(uri, fps=fps, max_reconnects=_LIVE_RECONNECTS) as source:
            last: Frame | None = None
            for frame in source:
                last = frame
                if frame.pts_s >= at_s - 1e-6:
                    return frame
    except SourceError as error:
        raise SnapshotError(f"cannot read a frame: {error}") from None
    if last is None:
        raise SnapshotError(f"{redact_uri(uri)} delivered no frame")
    raise SnapshotError(
        f"{redact_uri(uri)} ended at {last.pts_s:.2f} s, before --at {at_s:g} s; "
        "choose an earlier time"
    )


def save_snapshot(frame: Frame, out: Path, source: str) -> Snapshot:
    """Write `frame` as a PNG and its sidecar; return the snapshot.

    Raises:
        SnapshotError: when `out` does not end in .png or cannot be written.
    """
    if out.suffix.lower() != ".png":
        raise SnapshotError(
            f"--out {out} must end in .png; PNG keeps every pixel exact"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), frame.image):
        raise SnapshotError(f"cannot write {out}; check the folder and free space")
    snapshot = Snapshot(
        image=frame.image,
        path=out,
        resolution_wh=frame.resolution_wh,
        source=redact_uri(source),
        pts_s=round(frame.pts_s, 3),
        captured_at=utc_iso(frame.captured_at),
    )
    sidecar: dict[str, Any] = {
        "resolution": list(snapshot.resolution_wh),
        "source": snapshot.source,
        "pts_s": snapshot.pts_s,
        "captured_at": snapshot.captured_at,
    }
    sidecar_path(out).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    logger.info("snapshot %s: %dx%d", out, *snapshot.resolution_wh)
    return snapshot


def load_snapshot(png: Path) -> Snapshot:
    """Read a snapshot PNG and its sidecar, if there is one.

    Raises:
        SnapshotError: when the PNG cannot be read, or the sidecar's
            resolution differs from the picture's (the PNG was resized after
            it was taken, so points drawn on it would be off).
    """
    raw = cv2.imread(str(png), cv2.IMREAD_COLOR)
    if raw is None:
        raise SnapshotError(
            f"cannot read snapshot {png}; take one with `sitlab-calibrate snapshot`"
        )
    image = np.asarray(raw, dtype=np.uint8)
    height, width = image.shape[:2]
    resolution = (int(width), int(height))
    sidecar = sidecar_path(png)
    if not sidecar.exists():
        return Snapshot(image=image, path=png, resolution_wh=resolution)
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        recorded = (int(data["resolution"][0]), int(data["resolution"][1]))
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise SnapshotError(
            f"snapshot sidecar {sidecar} is unreadable ({error}); delete it or take "
            "the snapshot again"
        ) from None
    if recorded != resolution:
        raise SnapshotError(
            f"snapshot {png} is {width}x{height} but its sidecar records "
            f"{recorded[0]}x{recorded[1]}; the picture was resized, so take the "
            "snapshot again"
        )
    return Snapshot(
        image=image,
        path=png,
        resolution_wh=resolution,
        source=data.get("source"),
        pts_s=data.get("pts_s"),
        captured_at=data.get("captured_at"),
    )
