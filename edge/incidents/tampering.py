"""Camera tampering: covered or dark lens, blinding, defocus, moved camera.

Every check runs on a greyscale copy about `work_width_px` wide (160 px by
default), at `eval_rate_hz` (2 Hz). On a 768x576 clip at 10 fps that cost
0.5-0.7 ms per frame on average on a shared 2-core x86 machine, with about
2-2.5 ms for each evaluated frame. A condition must hold for `hold_s` before an
incident starts, which also ignores short flashes such as the one an
infrared day/night switch makes. When the camera switches between colour and
greyscale (infrared) mode, the reference sharpness and edges are learnt
again once the new mode has lasted `mode_settle_s`.
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge.incidents.lifecycle import (
    IncidentBook,
    IncidentEvent,
    IncidentType,
    Moment,
    Severity,
)
from edge.incidents.rules import (
    RuleError,
    require_non_negative,
    require_positive,
    require_rule_name,
)
from edge.incidents.schedule import ArmingSchedule
from edge.types import Frame, Image

logger = logging.getLogger(__name__)

_KEY = "camera"
_CANNY_LOW = 60
_CANNY_HIGH = 140
# Below this share of edge pixels the reference has too little structure for
# the edge and shift checks to mean anything (a blank wall, fog).
_MIN_EDGE_DENSITY = 0.004


class TamperCause(enum.StrEnum):
    """Cause of a tampering incident, most severe first."""

    COVERED = "covered"
    DARK = "dark"
    BLINDED = "blinded"
    MOVED = "moved"
    DEFOCUSED = "defocused"
    SCENE_CHANGED = "scene_changed"


@dataclass(frozen=True, slots=True, kw_only=True)
class TamperingSettings:
    """Thresholds of the tampering checks.

    Attributes:
        name: rule name in incidents.
        severity: severity of tampering incidents.
        work_width_px: minimum width of the greyscale copy the checks run
            on. The frame is divided by the largest whole factor that keeps
            it at least this wide. Raise it to see finer detail at a higher
            cost.
        eval_rate_hz: evaluations per second of stream time.
        hold_s: a condition must last this long before an incident starts.
            Raise it to ignore longer flashes and passing vehicles that fill
            the view; lower it to alert sooner.
        clear_s: the view must look normal this long before the incident
            ends. Raise it to merge on-off tampering into one incident.
        cooldown_s: no new tampering incident for this long after one ends.
        uniform_tolerance: grey levels from the median that count as the
            same colour.
        covered_fraction: share of uniform pixels at which the lens counts
            as covered. Lower it to catch partial covers, at the risk of
            flagging fog or a plain wall.
        dark_luma: mean luma (0-255) under which, with `dark_std`, the view
            counts as dark.
        dark_std: luma standard deviation under which a dark view has no
            usable content.
        saturated_luma: luma from which a pixel counts as saturated.
        blinded_fraction: share of saturated pixels at which the camera
            counts as blinded.
        defocus_ratio: the view is defocused when its sharpness falls below
            this share of the reference sharpness. Raise it to catch
            slighter blur; lower it for scenes whose detail varies a lot.
        min_edge_match: share of reference edges that must still be found;
            below it the scene changed. Lower it for busy scenes where
            crowds hide much of the background.
        moved_fraction: image shift, as a share of the width, from which the
            camera counts as moved.
        greyscale_chroma: mean colour difference under which a frame counts
            as greyscale (infrared mode).
        mode_settle_s: a new colour mode must last this long before the
            reference is learnt again.
        schedule: when the check is armed; None means always.
    """

    name: str = "camera_tampering"
    severity: Severity = Severity.HIGH
    work_width_px: int = 160
    eval_rate_hz: float = 2.0
    hold_s: float = 5.0
    clear_s: float = 3.0
    cooldown_s: float = 30.0
    uniform_tolerance: int = 12
    covered_fraction: float = 0.85
    dark_luma: float = 35.0
    dark_std: float = 8.0
    saturated_luma: int = 250
    blinded_fraction: float = 0.6
    defocus_ratio: float = 0.35
    min_edge_match: float = 0.7
    moved_fraction: float = 0.04
    greyscale_chroma: float = 2.0
    mode_settle_s: float = 2.0
    schedule: ArmingSchedule | None = None

    def __post_init__(self) -> None:
        require_rule_name(self.name)
        if self.work_width_px < 32:
            raise RuleError(
                f"rule {self.name!r}: work_width_px={self.work_width_px} is too "
                "small; use 32 or more (160 is the default)"
            )
        require_positive(self.name, "eval_rate_hz", self.eval_rate_hz)
        for field_name in ("hold_s", "clear_s", "cooldown_s", "mode_settle_s"):
            require_non_negative(self.name, field_name, getattr(self, field_name))
        for field_name in (
            "covered_fraction",
            "blinded_fraction",
            "defocus_ratio",
            "min_edge_match",
            "moved_fraction",
        ):
            value = getattr(self, field_name)
            if not 0 < value <= 1:
                raise RuleError(
                    f"rule {self.name!r}: {field_name}={value} is invalid; use a "
                    "share above 0 and at most 1"
                )


@dataclass(frozen=True, slots=True)
class ViewMeasures:
    """Figures of one downscaled frame.

    Attributes:
        mean_luma: mean grey level, 0-255.
        std_luma: standard deviation of the grey level.
        uniform_fraction: share of pixels within the uniform tolerance of
            the median.
        saturated_fraction: share of saturated pixels.
        sharpness: variance of the Laplacian over the variance of the image,
            so it does not change with brightness or contrast.
        chroma: mean absolute difference between colour channels.
    """

    mean_luma: float
    std_luma: float
    uniform_fraction: float
    saturated_fraction: float
    sharpness: float
    chroma: float


@dataclass(slots=True)
class _Reference:
    grey: npt.NDArray[np.float32]
    edges: npt.NDArray[np.uint8]
    sharpness: float
    edge_density: float
    # None for a greyscale calibration image, until a live frame sets it.
    greyscale: bool | None


@dataclass(frozen=True, slots=True)
class Comparison:
    """Comparison of the current view with the reference.

    Attributes:
        sharpness_ratio: current sharpness over reference sharpness.
        edge_match: share of reference edges found in the current view.
        shift_fraction: image shift found by phase correlation, as a share
            of the width.
    """

    sharpness_ratio: float
    edge_match: float
    shift_fraction: float


class TamperingDetector:
    """Raises `tampering` incidents from frames alone.

    Call `set_reference` with a frame taken at calibration; without one, the
    first evaluated frame becomes the reference.
    """

    def __init__(self, settings: TamperingSettings | None = None) -> None:
        self.settings = settings or TamperingSettings()
        self._book = IncidentBook(
            self.settings.name,
            IncidentType.TAMPERING,
            self.settings.severity,
            self.settings.cooldown_s,
        )
        self._reference: _Reference | None = None
        self._last_eval_pts_s: float | None = None
        self._condition_since: Moment | None = None
        self._clear_since: Moment | None = None
        self._mode_switch_since: float | None = None
        self._cause: TamperCause | None = None

    @property
    def has_reference(self) -> bool:
        """True once a reference view is stored."""
        return self._reference is not None

    def set_reference(self, image: Image) -> None:
        """Store the view the camera should keep showing.

        Args:
            image: a BGR frame, or a 2-D greyscale image such as the
                calibration reference PNG. A greyscale image carries nothing
                about the camera's colour mode, so the mode is then taken
                from the first evaluated frame instead of being read as a
                day/night switch.
        """
        grey, measures = self._prepare(image)
        self._reference = _make_reference(
            grey, measures, self.settings.greyscale_chroma
        )
        if image.ndim == 2:
            self._reference.greyscale = None
        logger.info(
            "tampering reference set: sharpness %.3f, edge density %.4f, greyscale %s",
            measures.sharpness,
            self._reference.edge_density,
            self._reference.greyscale,
        )

    def measure(self, image: Image) -> ViewMeasures:
        """Return the figures of one BGR frame (for tuning and tests)."""
        return self._prepare(image)[1]

    def compare(self, image: Image) -> Comparison | None:
        """Compare a BGR frame with the reference; None without a reference."""
        if self._reference is None:
            return None
        grey, measures = self._prepare(image)
        return _compare(self._reference, grey, measures)

    def process(self, frame: Frame) -> list[IncidentEvent]:
        """Evaluate the frame if it is due and return incident events."""
        now = Moment(frame.pts_s, frame.captured_at)
        if not self._due(now.pts_s):
            return []
        schedule = self.settings.schedule
        if schedule is not None and not schedule.is_armed(now.at):
            return self.disarm(now)
        grey, measures = self._prepare(frame.image)
        if self._reference is None:
            self._reference = _make_reference(
                grey, measures, self.settings.greyscale_chroma
            )
            return []
        cause = self._classify(grey, measures, now.pts_s)
        return self._advance(cause, now, measures)

    def disarm(self, now: Moment) -> list[IncidentEvent]:
        """End an open tampering incident and reset the hold timers."""
        self._condition_since = None
        self._clear_since = None
        self._cause = None
        return self._book.end_all(now)

    def _due(self, pts_s: float) -> bool:
        period = 1.0 / self.settings.eval_rate_hz
        if (
            self._last_eval_pts_s is not None
            and pts_s - self._last_eval_pts_s < period - 1e-6
        ):
            return False
        self._last_eval_pts_s = pts_s
        return True

    def _prepare(self, image: Image) -> tuple[npt.NDArray[np.uint8], ViewMeasures]:
        single_channel = image.ndim == 2
        if not single_channel and (image.ndim != 3 or image.shape[2] != 3):
            raise ValueError(
                "tampering check expects a BGR image of shape (height, width, 3) "
                f"or a greyscale image of shape (height, width), got {image.shape}"
            )
        height, width = image.shape[:2]
        # A whole-number factor keeps OpenCV's area resampling on its fast
        # path: 0.4 ms against 2.9 ms for 768x576 to exactly 160 px wide.
        factor = max(1, width // self.settings.work_width_px)
        work_wh = (max(1, width // factor), max(1, height // factor))
        resized = cv2.resize(image, work_wh, interpolation=cv2.INTER_AREA)
        small: Image = np.asarray(resized, np.uint8)
        if single_channel:
            return small, _measure(small, None, self.settings)
        grey: Image = np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), np.uint8)
        return grey, _measure(grey, small, self.settings)

    def _classify(
        self, grey: npt.NDArray[np.uint8], measures: ViewMeasures, pts_s: float
    ) -> TamperCause | None:
        settings = self.settings
        if (
            measures.mean_luma < settings.dark_luma
            and measures.std_luma < settings.dark_std
        ):
            return TamperCause.DARK
        if measures.uniform_fraction >= settings.covered_fraction:
            return TamperCause.COVERED
        if measures.saturated_fraction >= settings.blinded_fraction:
            return TamperCause.BLINDED
        reference = self._reference
        assert reference is not None  # noqa: S101 - process() sets it first
        if not self._mode_settled(reference, grey, measures, pts_s):
            return None
        if reference.edge_density < _MIN_EDGE_DENSITY:
            return None
        comparison = _compare(reference, grey, measures)
        return self._reference_cause(comparison)

    def _reference_cause(self, comparison: Comparison) -> TamperCause | None:
        settings = self.settings
        if comparison.shift_fraction >= settings.moved_fraction:
            return TamperCause.MOVED
        if comparison.sharpness_ratio < settings.defocus_ratio:
            return TamperCause.DEFOCUSED
        if comparison.edge_match < settings.min_edge_match:
            return TamperCause.SCENE_CHANGED
        return None

    def _mode_settled(
        self,
        reference: _Reference,
        grey: npt.NDArray[np.uint8],
        measures: ViewMeasures,
        pts_s: float,
    ) -> bool:
        """Track colour/greyscale switches; re-learn once a new mode settles."""
        greyscale = measures.chroma < self.settings.greyscale_chroma
        if reference.greyscale is None:
            reference.greyscale = greyscale
        if greyscale == reference.greyscale:
            self._mode_switch_since = None
            return True
        if self._mode_switch_since is None:
            self._mode_switch_since = pts_s
            logger.info(
                "camera switched to %s mode", "greyscale" if greyscale else "colour"
            )
        if pts_s - self._mode_switch_since < self.settings.mode_settle_s:
            return False
        self._reference = _make_reference(
            grey, measures, self.settings.greyscale_chroma
        )
        self._mode_switch_since = None
        logger.info("tampering reference learnt again after a colour mode switch")
        return True

    def _advance(
        self, cause: TamperCause | None, now: Moment, measures: ViewMeasures
    ) -> list[IncidentEvent]:
        if cause is None:
            return self._advance_clear(now)
        self._clear_since = None
        if self._condition_since is None:
            self._condition_since = now
        if self._book.is_open(_KEY):
            if cause is self._cause:
                return []
            self._cause = cause
            event = self._book.update(_KEY, now, _detail(cause, measures))
            return [event] if event is not None else []
        if now.pts_s - self._condition_since.pts_s < self.settings.hold_s:
            return []
        self._cause = cause
        held_s = now.pts_s - self._condition_since.pts_s
        detail = {**_detail(cause, measures), "held_s": held_s}
        event = self._book.start(_KEY, now, detail=detail)
        if event is not None:
            logger.warning("camera tampering detected: %s after %.1f s", cause, held_s)
        return [event] if event is not None else []

    def _advance_clear(self, now: Moment) -> list[IncidentEvent]:
        self._condition_since = None
        if not self._book.is_open(_KEY):
            return []
        if self._clear_since is None:
            self._clear_since = now
        if now.pts_s - self._clear_since.pts_s < self.settings.clear_s:
            return []
        event = self._book.end(_KEY, now, ended_at=self._clear_since.at)
        self._clear_since = None
        self._cause = None
        return [event] if event is not None else []


def _detail(cause: TamperCause, measures: ViewMeasures) -> dict[str, float | str]:
    return {
        "cause": str(cause),
        "mean_luma": measures.mean_luma,
        "uniform_fraction": measures.uniform_fraction,
    }


def _measure(
    grey: npt.NDArray[np.uint8], small: Image | None, settings: TamperingSettings
) -> ViewMeasures:
    mean, std = cv2.meanStdDev(grey)
    mean_luma = float(mean[0, 0])
    std_luma = float(std[0, 0])
    hist = cv2.calcHist([grey], [0], None, [256], [0, 256]).ravel()
    total = float(grey.size)
    median = int(np.searchsorted(np.cumsum(hist), total / 2))
    low = max(0, median - settings.uniform_tolerance)
    high = min(255, median + settings.uniform_tolerance)
    uniform_fraction = float(hist[low : high + 1].sum()) / total
    saturated_fraction = float(hist[settings.saturated_luma :].sum()) / total
    laplacian = cv2.Laplacian(grey, cv2.CV_32F)
    variance = std_luma * std_luma
    sharpness = float(laplacian.var()) / variance if variance > 1.0 else 0.0
    chroma = 0.0
    if small is not None:
        blue, green, red = cv2.split(small)
        chroma = float(cv2.absdiff(blue, green).mean() + cv2.absdiff(green, red).mean())
        chroma /= 2
    return ViewMeasures(
        mean_luma=mean_luma,
        std_luma=std_luma,
        uniform_fraction=uniform_fraction,
        saturated_fraction=saturated_fraction,
        sharpness=sharpness,
        chroma=chroma,
    )


def _edges(
    grey: npt.NDArray[np.uint8], mean: float, std: float
) -> npt.NDArray[np.uint8]:
    """Return Canny edges of the grey image after contrast normalisation.

    Normalising to a fixed mean and spread first makes the edges of a scene
    the same at dusk and at noon, so brightness alone never reads as a
    scene change.
    """
    scale = 40.0 / max(std, 1.0)
    normalised = cv2.convertScaleAbs(grey, alpha=scale, beta=128.0 - mean * scale)
    return np.asarray(cv2.Canny(normalised, _CANNY_LOW, _CANNY_HIGH), np.uint8)


def _make_reference(
    grey: npt.NDArray[np.uint8], measures: ViewMeasures, greyscale_chroma: float
) -> _Reference:
    edges = _edges(grey, measures.mean_luma, measures.std_luma)
    return _Reference(
        grey=_windowed(grey),
        edges=edges,
        sharpness=measures.sharpness,
        edge_density=float(cv2.countNonZero(edges)) / float(grey.size),
        greyscale=measures.chroma < greyscale_chroma,
    )


def _windowed(grey: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    values = grey.astype(np.float32)
    return values - float(values.mean())


def _compare(
    reference: _Reference, grey: npt.NDArray[np.uint8], measures: ViewMeasures
) -> Comparison:
    current_edges = _edges(grey, measures.mean_luma, measures.std_luma)
    tolerant = cv2.dilate(current_edges, np.ones((3, 3), np.uint8))
    reference_count = cv2.countNonZero(reference.edges)
    found = cv2.countNonZero(cv2.bitwise_and(reference.edges, tolerant))
    edge_match = found / reference_count if reference_count else 1.0
    window = _hanning(grey.shape[1], grey.shape[0])
    (dx, dy), _response = cv2.phaseCorrelate(reference.grey, _windowed(grey), window)
    shift_fraction = math.hypot(dx, dy) / grey.shape[1]
    ratio = measures.sharpness / reference.sharpness if reference.sharpness > 0 else 1.0
    return Comparison(
        sharpness_ratio=ratio, edge_match=edge_match, shift_fraction=shift_fraction
    )


_HANNING: dict[tuple[int, int], npt.NDArray[np.float32]] = {}


def _hanning(width: int, height: int) -> npt.NDArray[np.float32]:
    window = _HANNING.get((width, height))
    if window is None:
        created = cv2.createHanningWindow((width, height), cv2.CV_32F)
        window = np.asarray(created, np.float32)
        _HANNING[(width, height)] = window
    return window
