"""The node's frame loop: source, masks, detector, tracker, speeds, analytics, sink.

Data flows one way. Each stage is timed, so the heartbeat and the benchmark
report where the frame time goes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge import __version__
from edge.analytics import Analytics, CountsInterval, GeometryError
from edge.capture import CaptureThread
from edge.checkpoint import Checkpoint, CheckpointFile, run_key
from edge.config import NodeConfig
from edge.detector import Detector, DetectorError
from edge.ground import TrackSpeeds
from edge.health import HealthProbe
from edge.incident_setup import IncidentSetupError, build_engine
from edge.incidents import IncidentEngine, Moment
from edge.incidents.engine import close_rules
from edge.incidents.evidence import PRIVACY_CLASSES
from edge.masks import PrivacyMask
from edge.messages import MessageError, utc_iso
from edge.scene import Scene
from edge.schedule_detect import DetectionScheduler, detect_regions
from edge.sinks import Sink
from edge.sources import SourceError, open_source
from edge.stages import StageTimer
from edge.tracker import ByteTracker
from edge.types import Detections, Frame, Image, TrackedFrame

logger = logging.getLogger(__name__)


# Seconds of stream before a resume point that are tracked but not counted,
# enough for tracks to be confirmed (confirm_hits) before counting starts.
RESUME_WARM_UP_S = 3.0


class PipelineError(RuntimeError):
    """The node cannot start or go on; the message gives the cause and the fix."""


@dataclass(slots=True)
class RunSummary:
    """Totals of one run, for the log and the benchmark."""

    frames: int = 0
    detection_frames: int = 0
    wall_s: float = 0.0
    stream_s: float = 0.0
    messages: int = 0
    line_totals: dict[tuple[str, str, str], int] = field(default_factory=dict)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    invalid_messages: int = 0
    timer: StageTimer = field(default_factory=StageTimer)

    def describe(self) -> str:
        """Return a one-line human summary."""
        fps = self.frames / self.wall_s if self.wall_s else 0.0
        totals = ", ".join(
            f"{line} {cls} {direction}={count}"
            for (line, cls, direction), count in sorted(self.line_totals.items())
            if count
        )
        return (
            f"processed {self.frames} frames ({self.stream_s:.1f} s of stream) in "
            f"{self.wall_s:.1f} s, {fps:.1f} fps; {self.messages} counts and "
            f"incident messages; line totals: {totals or 'none'}"
        )


class Pipeline:
    """Runs one node: reads frames until the source ends or `stop` is set."""

    def __init__(
        self,
        config: NodeConfig,
        sink: Sink,
        *,
        on_frame: Callable[[Frame], None] | None = None,
        max_stream_s: float | None = None,
    ) -> None:
        """Load the model and prepare the run.

        Args:
            config: the node config.
            sink: where messages go.
            on_frame: called after each processed frame, on the frame loop's
                thread; the systemd watchdog and the model roll-out use it.
                It must return quickly.
            max_stream_s: stop after this many seconds of stream time.

        Raises:
            PipelineError: the model cannot be loaded.
        """
        self.config = config
        self.sink = sink
        self.summary = RunSummary()
        self._on_frame = on_frame
        self._max_stream_s = max_stream_s
        self._pending_config: NodeConfig | None = None
        self._config_lock = threading.Lock()
        self._started_at = datetime.now(UTC)
        try:
            self.detector = self._open_detector()
        except DetectorError as error:
            raise PipelineError(f"cannot load the model: {error}") from error
        self._resolution_wh: tuple[int, int] | None = None
        self._engine: IncidentEngine | None = None
        self._engine_lock = threading.Lock()
        self._source_online = True
        self._last_frame: Frame | None = None
        self._resume_from: float | None = None
        self._resume_done = False
        self._checkpoints: CheckpointFile | None = None
        self._run_key: str | None = None
        self._health = HealthProbe(config.outbox.path.parent)
        self._last_heartbeat = time.monotonic()
        self._window_frames = 0

    def _open_detector(self) -> Detector:
        model = self.config.model
        detection = self.config.detection
        return Detector(
            model.path,
            sha256=model.sha256,
            providers=tuple(model.providers),
            intra_op_threads=model.intra_op_threads,
            spin_wait=model.spin_wait,
            confidence=detection.confidence,
            class_confidence=detection.class_confidence or None,
            iou=detection.iou,
            classes=detection.classes,
            max_detections=detection.max_detections,
            output_format=model.output_format,
        )

    def run(self, stop: threading.Event | None = None) -> RunSummary:
        """Process the source to its end (files) or until `stop` is set."""
        stop = stop or threading.Event()
        source_config = self.config.source
        try:
            source = open_source(
                source_config.uri,
                fps=source_config.fps,
                read_timeout_s=source_config.read_timeout_s,
                reconnect_max_s=source_config.reconnect_max_s,
                on_status=self._on_source_status,
            )
        except SourceError as error:
            raise PipelineError(str(error)) from error

        self._prepare_resume(source)
        start = time.perf_counter()
        with source:
            self._send_status()
            self._loop(source, stop)
        self.summary.wall_s = time.perf_counter() - start
        return self.summary

    def _loop(self, source: Any, stop: threading.Event) -> None:  # noqa: ANN401
        timer = self.summary.timer
        # Decoding runs on its own thread, overlapping inference.
        capture = CaptureThread(source, live=bool(source.is_live))
        frames = iter(capture)
        state: _FrameState | None = None
        source_ended = False
        try:
            while not stop.is_set():
                wait_start = time.perf_counter()
                try:
                    frame = next(frames)
                except StopIteration:
                    source_ended = True
                    break
                except SourceError as error:
                    raise PipelineError(str(error)) from error
                timer.add("decode", time.perf_counter() - wait_start)
                phase = self._resume_phase(frame)
                if phase == "skip":
                    continue
                if state is None:
                    state = self._start_stream(frame, source)
                if phase == "warm-up":
                    self._warm_up(frame, state)
                    continue
                self._apply_pending(state, frame)
                self._process(frame, state)
                self._last_frame = frame
                if self._on_frame is not None:
                    self._on_frame(frame)
                if self._max_stream_s is not None and frame.pts_s >= self._max_stream_s:
                    break
        finally:
            capture.close()
            self.capture_stats = capture.stats
        if state is not None and self._resume_phase_done:
            self._finish(state, source_ended=source_ended)

    def _finish(self, state: _FrameState, *, source_ended: bool) -> None:
        """Flush the last interval, end open incidents and record progress."""
        last = state.analytics.flush()
        if last is not None:
            self._send_counts(last)
        self._close_incidents()
        if source_ended:
            self._save_checkpoint(0.0, completed=True)
        elif self._last_frame is not None:
            # Stopped early: the flushed partial interval ends at the last
            # frame, so a restart counts on from just after it.
            self._save_checkpoint(self._last_frame.pts_s + 1e-6)

    def _prepare_resume(self, source: Any) -> None:  # noqa: ANN401
        """Find where a durable file run stopped last time."""
        self._resume_from = None
        self._resume_done = False
        self._checkpoints = None
        self._run_key = None
        if source.is_live or not getattr(self.sink, "durable", False):
            return
        self._run_key = run_key(self.config)
        if self._run_key is None:
            return
        self._checkpoints = CheckpointFile(
            self.config.outbox.path.with_name(
                self.config.outbox.path.name + ".resume.json"
            )
        )
        checkpoint = self._checkpoints.load(self._run_key)
        if checkpoint is None:
            return
        if checkpoint.completed:
            logger.info(
                "%s was counted completely before; only the outbox is drained "
                "(delete %s to count it again)",
                self.config.source.uri,
                self._checkpoints.path,
            )
            self._resume_from = float("inf")
            return
        self._resume_from = checkpoint.resume_pts_s
        logger.info(
            "resuming %s at %.2f s of stream time after an interrupted run",
            self.config.source.uri,
            checkpoint.resume_pts_s,
        )

    @property
    def _resume_phase_done(self) -> bool:
        return self._resume_from is None or self._resume_done

    def _resume_phase(self, frame: Frame) -> str:
        """Return "skip", "warm-up" or "count" for a frame of a resumed run."""
        if self._resume_from is None or self._resume_done:
            return "count"
        if frame.pts_s < self._resume_from - RESUME_WARM_UP_S:
            return "skip"
        if frame.pts_s < self._resume_from:
            return "warm-up"
        self._resume_done = True
        return "count"

    def _warm_up(self, frame: Frame, state: _FrameState) -> None:
        """Track without counting, so tracks exist when counting resumes."""
        state.mask.apply(frame.image)
        detections = self._detect(frame)
        tracks, ended = state.tracker.update(
            detections, frame.pts_s, detection_ran=True
        )
        if state.speeds is not None:
            state.speeds.update(TrackedFrame(frame, tracks, ended))

    def _save_checkpoint(self, resume_pts_s: float, *, completed: bool = False) -> None:
        if self._checkpoints is None or self._run_key is None:
            return
        self._checkpoints.save(Checkpoint(self._run_key, resume_pts_s, completed))

    def _close_incidents(self) -> None:
        """End open incidents when the run ends, so none stays open upstream."""
        if self._last_frame is None:
            return
        moment = Moment(self._last_frame.pts_s, self._last_frame.captured_at)
        with self._engine_lock:
            bodies = close_rules(self._engine, moment) if self._engine else []
        for body in bodies:
            self._send_incident(body)

    def apply_live(self, config: NodeConfig) -> None:
        """Swap lines, zones and masks at the next frame, without a restart.

        Counts of the current interval are kept. The geometry is checked
        against the current stream resolution before it is accepted.

        Raises:
            PipelineError: the new geometry is invalid for this stream.
        """
        resolution = self._resolution_wh
        if resolution is not None:
            try:
                scene = Scene.from_config(config, resolution)
                Analytics(
                    scene.lines,
                    scene.zones,
                    reference=scene.reference,
                    class_names=self.detector.class_names,
                    detector_classes=config.detection.classes,
                )
                build_engine(
                    config,
                    scene,
                    resolution,
                    self.detector.class_names,
                    self._sensitive_boxes,
                )
            except (GeometryError, IncidentSetupError) as error:
                raise PipelineError(f"new geometry rejected: {error}") from error
        with self._config_lock:
            self._pending_config = config

    def _apply_pending(self, state: _FrameState, frame: Frame) -> None:
        with self._config_lock:
            config, self._pending_config = self._pending_config, None
        if config is None:
            return
        resolution = frame.resolution_wh
        scene = Scene.from_config(config, resolution)
        state.analytics.replace_geometry(scene.lines, scene.zones)
        state.mask = PrivacyMask(scene.masks, resolution)
        if _speed_settings(config) != _speed_settings(self.config):
            state.speeds = _track_speeds(scene, config)
        engine = build_engine(
            config, scene, resolution, self.detector.class_names, self._sensitive_boxes
        )
        with self._engine_lock:
            # Open incidents of the old rule set end now, so none stays open
            # at the gateway without an end.
            closing = (
                close_rules(self._engine, Moment(frame.pts_s, frame.captured_at))
                if self._engine is not None
                else []
            )
            self._engine = engine
        for body in closing:
            self._send_incident(body)
        self.config = config
        logger.info(
            "applied config version %s live: %d lines, %d zones, %d masks",
            config.config_version,
            len(scene.lines),
            len(scene.zones),
            len(scene.masks),
        )

    def _start_stream(self, frame: Frame, source: Any) -> _FrameState:  # noqa: ANN401
        resolution = frame.resolution_wh
        self._resolution_wh = resolution
        try:
            scene = Scene.from_config(self.config, resolution)
            analytics = Analytics(
                scene.lines,
                scene.zones,
                reference=scene.reference,
                class_names=self.detector.class_names,
                detector_classes=self.config.detection.classes,
                interval_s=self.config.counts.interval_s,
            )
            engine = build_engine(
                self.config,
                scene,
                resolution,
                self.detector.class_names,
                self._sensitive_boxes,
            )
        except (GeometryError, IncidentSetupError) as error:
            raise PipelineError(str(error)) from error
        frame_rate = source.fps or self.config.source.fps or 10.0
        tracker_config = self.config.tracker
        tracker = ByteTracker(
            frame_rate,
            high_threshold=tracker_config.high_threshold,
            low_threshold=tracker_config.low_threshold,
            new_track_threshold=tracker_config.new_track_threshold,
            match_iou=tracker_config.match_iou,
            lost_track_buffer_s=tracker_config.lost_track_buffer_s,
            confirm_hits=tracker_config.confirm_hits,
        )
        logger.info(
            "stream %dx%d at %.2f fps; %d lines, %d zones, %d masks",
            resolution[0],
            resolution[1],
            frame_rate,
            len(scene.lines),
            len(scene.zones),
            len(scene.masks),
        )
        with self._engine_lock:
            self._engine = engine
        return _FrameState(
            tracker=tracker,
            analytics=analytics,
            speeds=_track_speeds(scene, self.config),
            mask=PrivacyMask(scene.masks, resolution),
            scheduler=DetectionScheduler(
                self.config.motion,
                live=bool(source.is_live),
                input_wh=self.detector.input_size_wh,
            ),
        )

    def _process(self, frame: Frame, state: _FrameState) -> None:
        timer = self.summary.timer
        with timer.stage("mask"):
            state.mask.apply(frame.image)

        with timer.stage("motion"):
            plan = state.scheduler.plan(frame)
        if not frame.detection_ran:
            detections = Detections.empty()
        elif plan.regions:
            with timer.stage("inference"):
                detections = detect_regions(self.detector, frame, plan.regions)
        else:
            detections = self._detect(frame)

        with timer.stage("tracking"):
            tracks, ended = state.tracker.update(
                detections, frame.pts_s, detection_ran=frame.detection_ran
            )
        tracked = TrackedFrame(frame=frame, tracks=tracks, ended_track_ids=ended)
        if state.speeds is not None:
            with timer.stage("speed"):
                tracked.speeds_kmh = state.speeds.update(tracked)
        with timer.stage("analytics"):
            intervals = state.analytics.update(tracked)
        with timer.stage("incidents"), self._engine_lock:
            incidents = self._engine.process(tracked) if self._engine else []
        with timer.stage("publish"):
            for body in incidents:
                self._send_incident(body)
            for interval in intervals:
                self._send_counts(interval)
            if intervals:
                # This frame opened the next interval, so a restart counts on
                # from it; everything before it is in the outbox.
                self._save_checkpoint(frame.pts_s)
            self._maybe_heartbeat(frame)

        self.summary.frames += 1
        self.summary.detection_frames += int(frame.detection_ran)
        self.summary.stream_s = frame.pts_s
        self._window_frames += 1

    def _detect(self, frame: Frame) -> Detections:
        timer = self.summary.timer
        with timer.stage("preprocess"):
            tensor, transform = self.detector.preprocess(frame.image)
        with timer.stage("inference"):
            outputs = self.detector.infer(tensor)
        with timer.stage("postprocess"):
            return self.detector.postprocess(outputs, transform, frame.resolution_wh)

    def _send_counts(self, interval: CountsInterval) -> None:
        body = interval.to_fields()
        if not self._send("counts", body):
            return
        for row in body["lines"]:
            for direction in ("in", "out"):
                key = (row["line"], row["class"], direction)
                self.summary.line_totals[key] = (
                    self.summary.line_totals.get(key, 0) + row[direction]
                )

    def _sensitive_boxes(self, image: Image) -> list[tuple[float, float, float, float]]:
        """Return boxes of people and vehicles found with a low threshold."""
        detections = self.detector.detect_sensitive(image, sorted(PRIVACY_CLASSES))
        return [
            (float(x1), float(y1), float(x2), float(y2))
            for x1, y1, x2, y2 in detections.xyxy
        ]

    def _send_incident(self, body: dict[str, Any]) -> None:
        if self._send("incident", body):
            self.summary.incidents.append(body)

    def _send(self, kind: str, body: dict[str, Any]) -> bool:
        """Hand a durable message to the sink; an invalid one is logged, not fatal.

        A message that breaks its schema is a bug on the node. Stopping the
        frame loop for it would lose every later count, so it is dropped with
        an error that shows the offending body.
        """
        try:
            self.sink.send(kind, body)
        except MessageError as error:
            self.summary.invalid_messages += 1
            logger.error(  # noqa: TRY400
                "dropped an invalid %s message (%d so far): %s; body %s",
                kind,
                self.summary.invalid_messages,
                error,
                body,
            )
            return False
        self.summary.messages += 1
        return True

    def _on_source_status(self, event: Any) -> None:  # noqa: ANN401
        """Turn a live source's offline/online event into camera incidents.

        Called on the source's own thread, so the engine is locked.
        """
        online = str(event.status) == "online"
        self._source_online = online
        with self._engine_lock:
            if self._engine is None:
                return
            bodies = self._engine.on_source_state(online, event.at)
        for body in bodies:
            self._send_incident(body)

    def _send_status(self) -> None:
        info = self.detector.model_info
        self.sink.send_transient(
            "status",
            {
                "state": "online",
                "reason": "started",
                "software_version": __version__,
                "model": {
                    "name": info.name,
                    "sha256": info.sha256,
                    "input_size": int(max(info.input_wh)),
                },
                "config_version": self.config.config_version,
                "started_at": utc_iso(self._started_at),
            },
        )

    def _maybe_heartbeat(self, frame: Frame) -> None:
        now = time.monotonic()
        elapsed = now - self._last_heartbeat
        if elapsed < self.config.mqtt.heartbeat_interval_s:
            return
        window = self.summary.timer.window()
        seconds, calls = window.get("inference", (0.0, 0))
        body: dict[str, Any] = {
            "uptime_s": round(
                (datetime.now(UTC) - self._started_at).total_seconds(), 1
            ),
            "fps": round(self._window_frames / elapsed, 2),
            "inference_ms": round(1000.0 * seconds / calls, 2) if calls else 0.0,
            "source_state": "online" if self._source_online else "offline",
            "config_version": self.config.config_version,
        }
        body.update(self._health.sample())
        body.update(self.sink.stats_fields())
        self.sink.send_transient("heartbeat", body)
        self._last_heartbeat = now
        self._window_frames = 0
        del frame


@dataclass(slots=True)
class _FrameState:
    tracker: ByteTracker
    analytics: Analytics
    speeds: TrackSpeeds | None
    mask: PrivacyMask
    scheduler: DetectionScheduler


def _track_speeds(scene: Scene, config: NodeConfig) -> TrackSpeeds | None:
    """Return the per-track speed state, or None without a ground plane."""
    if scene.ground is None:
        return None
    return TrackSpeeds.from_config(scene.ground, config.speed)


def _speed_settings(config: NodeConfig) -> tuple[object, ...]:
    """Return the config sections whose change needs a new speed state."""
    return (config.ground, config.lens, config.speed)
