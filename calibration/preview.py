"""Preview images: the snapshot with everything the node will count drawn on it.

A preview shows masks as the detector sees them (filled black), zones as
tinted areas, and lines as arrows from A to B with the `in` side marked. The
side rule is that of `edge.analytics.lines`: `in` is a crossing from the
left-hand side of A->B to its right-hand side as seen on screen, so the `in`
arrow points to the right of the line's arrow. With detections, each box is
drawn with the anchor point the node tests against lines and zones. With a
ground plane, the marked ground points carry their metres and a grid of the
ground is drawn, so a wrong point or a bent plane shows at a glance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge.analytics import LineSpec, ReferenceFrame, ZoneSpec
from edge.config import NodeConfig
from edge.config_calibration import GroundConfig
from edge.ground import GroundPlane
from edge.masks import PrivacyMask
from edge.scene import Scene
from edge.types import Anchor, Detections, Image

# BGR colours that stay apart on street scenes and for colour-blind viewers
# (Okabe-Ito palette without black).
PALETTE = (
    (0, 159, 230),
    (233, 180, 86),
    (115, 158, 0),
    (66, 228, 240),
    (178, 114, 0),
    (0, 94, 213),
    (167, 121, 204),
)
_MASK_OUTLINE = (160, 160, 160)
_ANCHOR_COLOUR = (0, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_ZONE_ALPHA = 0.25
_GROUND_COLOUR = (255, 255, 255)
_GRID_COLOUR = (200, 200, 200)
# Grid spacings in metres; the finest one giving at most this many lines
# across the marked points' extent is drawn.
_GRID_STEPS_M = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
_GRID_MAX_LINES = 12
# Samples per grid line. A homography keeps lines straight, so the samples
# only find where a line passes the horizon.
_GRID_SAMPLES = 40


@dataclass(frozen=True, slots=True)
class PreviewDetections:
    """Detections to draw, with the names of their classes.

    Attributes:
        detections: boxes in pixels of the snapshot.
        class_names: class name per class id of the model.
        anchor: the box point the node tests.
    """

    detections: Detections
    class_names: Sequence[str]
    anchor: Anchor


def render_preview(
    image: Image, config: NodeConfig, detections: PreviewDetections | None = None
) -> Image:
    """Return a copy of `image` with masks, zones, lines and detections drawn.

    Raises:
        GeometryError: when the config's geometry does not fit the picture
            (a point outside, a degenerate line or polygon).
    """
    canvas = image.copy()
    height, width = canvas.shape[:2]
    scene = Scene.from_config(config, (width, height))
    reference = scene.reference or ReferenceFrame.pixels((width, height))
    scale = _text_scale(width)

    PrivacyMask(scene.masks, (width, height)).apply(canvas)
    for mask, entry in zip(scene.masks, config.masks, strict=True):
        _draw_mask(canvas, mask, entry.name, scale)
    for index, zone in enumerate(scene.zones):
        _draw_zone(canvas, zone, reference, PALETTE[index % len(PALETTE)], scale)
    for index, line in enumerate(scene.lines):
        colour = PALETTE[(index + len(scene.zones)) % len(PALETTE)]
        _draw_line(canvas, line, reference, colour, scale)
    if scene.ground is not None and config.ground is not None:
        _draw_ground(canvas, scene.ground, config.ground, scale)
    if detections is not None:
        _draw_detections(canvas, detections, scale)
    return canvas


def _draw_ground(
    canvas: Image, plane: GroundPlane, ground: GroundConfig, scale: float
) -> None:
    """Draw a metre grid over the marked points' area and the points themselves.

    The grid is mapped with the inverse homography only, so with a lens
    section (points undistorted before the fit) it is off by the lens
    distortion towards the picture's edges.
    """
    height, width = canvas.shape[:2]
    world = np.asarray(ground.world_points, dtype=np.float64)
    low, high = world.min(axis=0), world.max(axis=0)
    margin = 0.25 * (high - low).max()
    low, high = low - margin, high + margin
    step = _grid_step(float((high - low).max()))
    to_image = np.linalg.inv(plane.homography)
    for axis in (0, 1):
        start = math.floor(low[axis] / step) * step
        for value in np.arange(start, high[axis] + step / 2, step):
            along = np.linspace(low[1 - axis], high[1 - axis], _GRID_SAMPLES)
            points = np.zeros((_GRID_SAMPLES, 2))
            points[:, axis] = value
            points[:, 1 - axis] = along
            _draw_ground_polyline(canvas, to_image, plane.ground_sign, points)
    sx = width / ground.resolution[0]
    sy = height / ground.resolution[1]
    for number, ((x, y), (east, north)) in enumerate(
        zip(ground.image_points, ground.world_points, strict=True), start=1
    ):
        centre = (round(x * sx), round(y * sy))
        cv2.circle(canvas, centre, max(3, round(4 * scale)), _GROUND_COLOUR, -1)
        cv2.circle(canvas, centre, max(4, round(5 * scale)), (0, 0, 0), 1)
        text = f"{number}: {east:g}, {north:g} m"
        _label(canvas, text, (centre[0] + 6, centre[1] - 6), _GROUND_COLOUR, scale)
    _label(canvas, f"ground grid {step:g} m", (6, height - 8), _GRID_COLOUR, scale)


def _grid_step(extent_m: float) -> float:
    """Return the finest grid spacing that keeps the line count readable."""
    for step in _GRID_STEPS_M:
        if extent_m / step <= _GRID_MAX_LINES:
            return step
    return _GRID_STEPS_M[-1]


def _draw_ground_polyline(
    canvas: Image, to_image: np.ndarray, ground_sign: float, world: np.ndarray
) -> None:
    """Draw ground points as one line, split where they pass the horizon."""
    homogeneous = np.column_stack([world, np.ones(len(world))]) @ to_image.T
    w = homogeneous[:, 2]
    # Image points whose ground w has the plane's sign lie on the visible
    # ground; the others would wrap around through the horizon.
    image_points = np.column_stack([homogeneous[:, :2] / w[:, None], np.ones(len(w))])
    visible = (w * ground_sign > 0) & np.all(np.isfinite(image_points), axis=1)
    run: list[tuple[int, int]] = []
    height, width = canvas.shape[:2]
    limit = 4 * max(width, height)
    for keep, (x, y, _) in zip(visible, image_points, strict=True):
        if keep and abs(x) < limit and abs(y) < limit:
            run.append((round(x), round(y)))
            continue
        _flush_run(canvas, run)
        run = []
    _flush_run(canvas, run)


def _flush_run(canvas: Image, run: list[tuple[int, int]]) -> None:
    if len(run) >= 2:
        points = np.array(run, dtype=np.int32)
        cv2.polylines(canvas, [points], False, _GRID_COLOUR, 1, cv2.LINE_AA)


def _text_scale(width: int) -> float:
    return max(0.4, width / 1600.0)


def _to_pixels(
    points: Sequence[object], reference: ReferenceFrame, size: tuple[int, int]
) -> np.ndarray:
    scaled = [reference.to_stream(point, size) for point in points]  # type: ignore[arg-type]
    return np.array([[p.x, p.y] for p in scaled], dtype=np.float64)


def _label(
    canvas: Image,
    text: str,
    origin: tuple[float, float],
    colour: tuple[int, int, int],
    scale: float,
) -> None:
    """Write `text` on a dark box so it stays readable on any background."""
    thickness = max(1, round(scale * 2))
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    height, width = canvas.shape[:2]
    x = int(min(max(origin[0], 2), width - text_w - 4))
    y = int(min(max(origin[1], text_h + 4), height - baseline - 2))
    cv2.rectangle(
        canvas, (x - 2, y - text_h - 3), (x + text_w + 2, y + baseline), (0, 0, 0), -1
    )
    cv2.putText(canvas, text, (x, y), _FONT, scale, colour, thickness, cv2.LINE_AA)


def _draw_mask(
    canvas: Image, polygon: Sequence[tuple[float, float]], name: str, scale: float
) -> None:
    points = np.round(np.asarray(polygon)).astype(np.int32)
    cv2.polylines(canvas, [points], True, _MASK_OUTLINE, 1, cv2.LINE_AA)
    centre = points.mean(axis=0)
    _label(canvas, f"mask {name}", (centre[0], centre[1]), _MASK_OUTLINE, scale)


def _draw_zone(
    canvas: Image,
    zone: ZoneSpec,
    reference: ReferenceFrame,
    colour: tuple[int, int, int],
    scale: float,
) -> None:
    height, width = canvas.shape[:2]
    points = np.round(_to_pixels(zone.points, reference, (width, height)))
    polygon = points.astype(np.int32)
    overlay = canvas.copy()
    cv2.fillPoly(overlay, [polygon], colour)
    cv2.addWeighted(overlay, _ZONE_ALPHA, canvas, 1 - _ZONE_ALPHA, 0, dst=canvas)
    cv2.polylines(
        canvas, [polygon], True, colour, max(1, round(scale * 2)), cv2.LINE_AA
    )
    top = polygon[np.argmin(polygon[:, 1])]
    _label(
        canvas, f"zone {zone.name}", (top[0] + 4, top[1] + 22 * scale), colour, scale
    )


def _draw_line(
    canvas: Image,
    line: LineSpec,
    reference: ReferenceFrame,
    colour: tuple[int, int, int],
    scale: float,
) -> None:
    height, width = canvas.shape[:2]
    (ax, ay), (bx, by) = _to_pixels((line.start, line.end), reference, (width, height))
    thickness = max(2, round(scale * 3))
    length = math.hypot(bx - ax, by - ay)
    tip = min(0.08, 30.0 / length) if length else 0.1
    _draw_band(canvas, (ax, ay), (bx, by), line.hysteresis_px, colour)
    cv2.arrowedLine(
        canvas,
        (round(ax), round(ay)),
        (round(bx), round(by)),
        colour,
        thickness,
        cv2.LINE_AA,
        tipLength=tip,
    )
    _label(canvas, "A", (ax + 6, ay + 6), colour, scale)
    _label(canvas, "B", (bx + 6, by - 6), colour, scale)

    # The right-hand side of A->B on screen (y down) is along (-dy, dx).
    normal_x, normal_y = -(by - ay) / length, (bx - ax) / length
    arrow_px = max(25.0, min(60.0, length / 4)) * max(1.0, scale)
    mid_x, mid_y = (ax + bx) / 2, (ay + by) / 2
    tail = (round(mid_x - normal_x * arrow_px), round(mid_y - normal_y * arrow_px))
    head = (round(mid_x + normal_x * arrow_px), round(mid_y + normal_y * arrow_px))
    cv2.arrowedLine(canvas, tail, head, colour, thickness, cv2.LINE_AA, tipLength=0.3)
    _label(canvas, "in", (head[0] + 4, head[1] + 4), colour, scale)
    _label(canvas, "out", (tail[0] + 4, tail[1] + 4), colour, scale)
    quarter_x, quarter_y = ax + (bx - ax) / 4, ay + (by - ay) / 4
    _label(canvas, f"line {line.name}", (quarter_x + 8, quarter_y), colour, scale)


def _draw_band(
    canvas: Image,
    start: tuple[float, float],
    end: tuple[float, float],
    band_px: float,
    colour: tuple[int, int, int],
) -> None:
    """Draw the hysteresis band: thin lines `band_px` either side of the line."""
    if band_px <= 0:
        return
    (ax, ay), (bx, by) = start, end
    length = math.hypot(bx - ax, by - ay)
    offset_x, offset_y = -(by - ay) / length * band_px, (bx - ax) / length * band_px
    for sign in (-1.0, 1.0):
        cv2.line(
            canvas,
            (round(ax + sign * offset_x), round(ay + sign * offset_y)),
            (round(bx + sign * offset_x), round(by + sign * offset_y)),
            colour,
            1,
            cv2.LINE_AA,
        )


def _draw_detections(canvas: Image, found: PreviewDetections, scale: float) -> None:
    detections = found.detections
    radius = max(3, round(4 * scale))
    for index in range(len(detections)):
        left, top, right, bottom = (float(v) for v in detections.xyxy[index])
        class_id = int(detections.class_id[index])
        name = (
            found.class_names[class_id]
            if 0 <= class_id < len(found.class_names)
            else str(class_id)
        )
        cv2.rectangle(
            canvas,
            (round(left), round(top)),
            (round(right), round(bottom)),
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
        score = float(detections.confidence[index])
        _label(
            canvas, f"{name} {score:.2f}", (left, top - 4), (255, 255, 255), scale * 0.8
        )
        x, y = found.anchor.point((left, top, right, bottom))
        cv2.circle(canvas, (round(x), round(y)), radius, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(
            canvas, (round(x), round(y)), radius - 1, _ANCHOR_COLOUR, -1, cv2.LINE_AA
        )
