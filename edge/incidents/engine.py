"""The incident engine: runs every rule on every tracked frame.

It resolves class names, applies each rule's arming schedule, feeds the
rules, the tampering check and the health monitor, attaches evidence to
start events of rules that ask for it, and returns incident message bodies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from edge.incidents.evidence import EvidenceError, EvidenceSettings, render_evidence
from edge.incidents.health import SourceHealthMonitor
from edge.incidents.lifecycle import IncidentEvent, Moment
from edge.incidents.line_rules import WrongWayRule
from edge.incidents.rules import Box, FrameView, ObjectView, Point, RuleError, RuleState
from edge.incidents.speed_rules import SpeedingRule
from edge.incidents.tampering import TamperingDetector
from edge.incidents.zone_rules import (
    AbandonedObjectRule,
    CrowdingRule,
    IntrusionRule,
    LoiteringRule,
    StoppedVehicleRule,
)
from edge.types import Image, TrackedFrame

logger = logging.getLogger(__name__)

Rule = (
    IntrusionRule
    | LoiteringRule
    | CrowdingRule
    | AbandonedObjectRule
    | StoppedVehicleRule
    | WrongWayRule
    | SpeedingRule
)


class IncidentEngine:
    """Runs the node's incident rules frame by frame.

    Args:
        rules: object and zone rules; names must be unique.
        class_names: the detector's class names, indexed by class id.
        tampering: the camera tampering check, or None to skip it.
        health: the offline and frame-rate monitor; by default one that
            reports the camera offline but does not check the frame rate.
        evidence: limits of evidence images.
        privacy_masks: polygons, in frame pixels, pixelated in evidence.
        sensitive_boxes: returns boxes of people and vehicles on a frame with
            a low score threshold; they are pixelated in evidence on top of
            the tracked ones, so nobody below the counting threshold shows.
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        class_names: Sequence[str],
        *,
        tampering: TamperingDetector | None = None,
        health: SourceHealthMonitor | None = None,
        evidence: EvidenceSettings | None = None,
        privacy_masks: Sequence[Sequence[Point]] = (),
        sensitive_boxes: Callable[[Image], list[Box]] | None = None,
    ) -> None:
        names = [rule.name for rule in rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise RuleError(
                f"rule names {duplicates} are used more than once; name each rule once"
            )
        self._states: list[RuleState] = [rule.build() for rule in rules]
        self._armed = [True] * len(self._states)
        self._class_names = list(class_names)
        self._tampering = tampering
        self._health = health or SourceHealthMonitor()
        self._evidence = evidence or EvidenceSettings()
        self._masks = [list(mask) for mask in privacy_masks]
        self._sensitive_boxes = sensitive_boxes
        self._unknown_class_ids: set[int] = set()

    def process(self, tracked: TrackedFrame) -> list[dict[str, Any]]:
        """Run all rules on one frame; return incident bodies without envelope."""
        return [event.to_body() for event in self.process_events(tracked)]

    def process_events(self, tracked: TrackedFrame) -> list[IncidentEvent]:
        """Run all rules on one frame; return incident events."""
        frame = tracked.frame
        now = Moment(frame.pts_s, frame.captured_at)
        view = self._view(tracked, now)
        events: list[IncidentEvent] = []
        events.extend(self._health.on_frame(now))
        if self._tampering is not None:
            events.extend(self._tampering.process(frame))
        for index, state in enumerate(self._states):
            rule_events = self._run_rule(index, state, view)
            if state.settings.evidence:
                rule_events = [
                    self._with_evidence(event, tracked) for event in rule_events
                ]
            events.extend(rule_events)
        return events

    def on_source_state(self, online: bool, at: datetime) -> list[dict[str, Any]]:
        """Report the video source going offline or back online; return bodies."""
        return [event.to_body() for event in self._health.on_source_state(online, at)]

    def _run_rule(
        self, index: int, state: RuleState, view: FrameView
    ) -> list[IncidentEvent]:
        settings = state.settings
        armed = settings.schedule is None or settings.schedule.is_armed(view.now.at)
        if armed != self._armed[index]:
            self._armed[index] = armed
            logger.info("rule %s %s", settings.name, "armed" if armed else "disarmed")
            if not armed:
                return state.disarm(view.now)
        if not armed:
            return []
        return state.process(view)

    def _with_evidence(
        self, event: IncidentEvent, tracked: TrackedFrame
    ) -> IncidentEvent:
        if event.phase != "start":
            return event
        # Every track of a privacy class is hidden, confirmed or not, so a
        # person the tracker is still unsure of is hidden too.
        boxes: list[Box] = [
            track.xyxy
            for track in tracked.tracks
            if self._class_name(track.class_id) in self._evidence.privacy_classes
        ]
        if self._sensitive_boxes is not None:
            boxes.extend(self._sensitive_boxes(tracked.frame.image))
        try:
            evidence = render_evidence(
                tracked.frame.image, boxes, self._masks, self._evidence
            )
        except EvidenceError:
            logger.exception(
                "incident %s: evidence image failed; sent without it", event.incident_id
            )
            return event
        return replace(event, evidence=evidence)

    def _view(self, tracked: TrackedFrame, now: Moment) -> FrameView:
        objects = tuple(
            ObjectView(
                track.track_id,
                self._class_name(track.class_id),
                track.xyxy,
                track.detected,
                tracked.speeds_kmh.get(track.track_id),
            )
            for track in tracked.tracks
            if track.confirmed
        )
        return FrameView(
            now=now,
            detection_ran=tracked.frame.detection_ran,
            objects=objects,
            ended_track_ids=frozenset(tracked.ended_track_ids),
        )

    def _class_name(self, class_id: int) -> str:
        if 0 <= class_id < len(self._class_names):
            return self._class_names[class_id]
        if class_id not in self._unknown_class_ids:
            self._unknown_class_ids.add(class_id)
            logger.warning(
                "class id %d is outside the %d class names; rules see it as 'class_%d'",
                class_id,
                len(self._class_names),
                class_id,
            )
        return f"class_{class_id}"


def close_rules(engine: IncidentEngine, now: Moment) -> list[dict[str, Any]]:
    """End every open rule incident of `engine`, for a rule set being replaced.

    Tampering and camera-health incidents stay with the engine's monitors,
    which the replacement engine does not share; they are ended too.
    """
    events: list[IncidentEvent] = []
    for state in engine._states:  # noqa: SLF001
        events.extend(state.disarm(now))
    if engine._tampering is not None:  # noqa: SLF001
        events.extend(engine._tampering.disarm(now))  # noqa: SLF001
    return [event.to_body() for event in events]
