"""Build the node's incident engine from its config and stream resolution."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import cv2
import numpy as np

from edge.analytics import Point as GeometryPoint
from edge.analytics import ReferenceFrame
from edge.config import NodeConfig
from edge.config_rules import (
    AbandonedObjectRuleConfig,
    CrowdingRuleConfig,
    IntrusionRuleConfig,
    LoiteringRuleConfig,
    RuleConfig,
    SpeedingRuleConfig,
    StoppedVehicleRuleConfig,
    WrongWayRuleConfig,
    rule_classes,
)
from edge.incidents import (
    AbandonedObjectRule,
    ArmingSchedule,
    ArmingWindow,
    CrowdingRule,
    EvidenceSettings,
    HealthSettings,
    IncidentEngine,
    IntrusionRule,
    Line,
    LoiteringRule,
    Rule,
    Severity,
    SourceHealthMonitor,
    SpeedingRule,
    StoppedVehicleRule,
    TamperingDetector,
    TamperingSettings,
    WrongWayRule,
    Zone,
)
from edge.incidents.rules import Box
from edge.scene import Scene
from edge.types import Image

logger = logging.getLogger(__name__)

ZoneRuleConfig = (
    IntrusionRuleConfig
    | LoiteringRuleConfig
    | CrowdingRuleConfig
    | AbandonedObjectRuleConfig
    | StoppedVehicleRuleConfig
)


class IncidentSetupError(ValueError):
    """A rule that cannot be built for this stream."""


def build_engine(
    config: NodeConfig,
    scene: Scene,
    resolution_wh: tuple[int, int],
    class_names: Sequence[str],
    sensitive_boxes: Callable[[Image], list[Box]] | None = None,
) -> IncidentEngine:
    """Return the incident engine for a stream of `resolution_wh`.

    Raises:
        IncidentSetupError: a rule, schedule or reference frame is invalid.
    """
    reference = scene.reference or ReferenceFrame.pixels(resolution_wh)
    zones = {
        zone.name: Zone.from_points(
            zone.name,
            [_scale(reference, point, resolution_wh) for point in zone.polygon],
        )
        for zone in config.zones
    }
    lines = {
        line.name: Line.from_points(
            line.name,
            _scale(reference, line.points[0], resolution_wh),
            _scale(reference, line.points[1], resolution_wh),
        )
        for line in config.lines
    }
    try:
        rules = [
            _build_rule(rule, config, scene, zones, lines) for rule in config.rules
        ]
        tampering = _build_tampering(config) if config.incidents.tampering else None
        health = SourceHealthMonitor(
            HealthSettings(
                target_fps=config.incidents.target_fps,
                degraded_hold_s=config.incidents.degraded_hold_s,
            )
        )
        evidence = EvidenceSettings(
            max_bytes=config.incidents.evidence_max_bytes,
            max_width_px=config.incidents.evidence_max_width_px,
        )
        return IncidentEngine(
            rules,
            class_names,
            tampering=tampering,
            health=health,
            evidence=evidence,
            privacy_masks=[list(mask) for mask in scene.masks],
            sensitive_boxes=sensitive_boxes,
        )
    except ValueError as error:
        raise IncidentSetupError(str(error)) from error


def _scale(
    reference: ReferenceFrame,
    point: tuple[float, float],
    resolution_wh: tuple[int, int],
) -> tuple[float, float]:
    scaled = reference.to_stream(GeometryPoint(*point), resolution_wh)
    return scaled.x, scaled.y


def _schedule(rule: RuleConfig, timezone: str) -> ArmingSchedule | None:
    if rule.schedule is None:
        return None
    windows = tuple(
        ArmingWindow.parse(window.days, window.start, window.end)
        for window in rule.schedule
    )
    ZoneInfo(timezone)
    return ArmingSchedule(timezone, windows)


def _build_rule(
    rule: RuleConfig,
    config: NodeConfig,
    scene: Scene,
    zones: dict[str, Zone],
    lines: dict[str, Line],
) -> Rule:
    common: dict[str, Any] = {
        "name": rule.name,
        "classes": frozenset(rule_classes(rule)),
        "severity": Severity(rule.severity),
        "min_size_px": rule.min_size_px,
        "min_size_m": rule.min_size_m,
        "ground_plane": scene.ground,
        "trigger_delay_s": rule.trigger_delay_s,
        "cooldown_s": rule.cooldown_s,
        "schedule": _schedule(rule, config.timezone),
        "evidence": rule.evidence,
        "anchor": config.geometry.anchor,
    }
    if isinstance(rule, WrongWayRuleConfig):
        watched = tuple(lines[name] for name in rule.lines)
        return WrongWayRule(
            **common,
            lines=watched,
            allowed_direction_xy=_allowed_direction(watched[0], rule.allowed),
            window_s=rule.window_s,
            hold_s=rule.hold_s,
            **_given(min_travel_px=rule.min_travel_px, min_travel_m=rule.min_travel_m),
        )
    watched_zones = tuple(zones[name] for name in rule.zones)
    if isinstance(rule, SpeedingRuleConfig):
        if scene.ground is None:
            raise IncidentSetupError(
                f"rule {rule.name!r} is a speeding rule, but the config has no "
                "ground section to measure speeds on; run `sitlab-calibrate ground`"
            )
        return SpeedingRule(
            **common,
            zones=watched_zones,
            limit_kmh=rule.limit_kmh,
            release_margin_kmh=rule.release_margin_kmh,
        )
    return _build_zone_rule(rule, common, watched_zones)


def _build_zone_rule(
    rule: ZoneRuleConfig, common: dict[str, Any], watched_zones: tuple[Zone, ...]
) -> Rule:
    if rule.type == "intrusion":
        return IntrusionRule(
            **common, zones=watched_zones, exit_grace_s=rule.exit_grace_s
        )
    if rule.type == "loitering":
        return LoiteringRule(
            **common,
            zones=watched_zones,
            limit_s=rule.limit_s,
            exit_grace_s=rule.exit_grace_s,
            update_every_s=rule.update_every_s,
        )
    if rule.type == "crowding":
        return CrowdingRule(
            **common,
            zones=watched_zones,
            min_count=rule.min_count,
            release_margin=rule.release_margin,
            release_delay_s=rule.release_delay_s,
            update_every_s=rule.update_every_s,
        )
    stationary: dict[str, Any] = {
        "zones": watched_zones,
        "limit_s": rule.limit_s,
        "missing_grace_s": rule.missing_grace_s,
        **_given(
            still_radius_px=rule.still_radius_px, still_radius_m=rule.still_radius_m
        ),
    }
    if rule.type == "abandoned_object":
        return AbandonedObjectRule(**common, **stationary)
    return StoppedVehicleRule(**common, **stationary)


def _given(**values: float | None) -> dict[str, Any]:
    """Return the settings that are set, so the rule's defaults fill the rest."""
    return {name: value for name, value in values.items() if value is not None}


def _allowed_direction(line: Line, allowed: str) -> tuple[float, float]:
    """Return the image direction of allowed travel across `line`.

    `in` is a move from the left-hand side of A->B to its right-hand side as
    seen on screen (image y down), which is the direction (-dy, dx).
    """
    dx = line.segment.end.x - line.segment.start.x
    dy = line.segment.end.y - line.segment.start.y
    inward = (-dy, dx)
    return inward if allowed == "in" else (dy, -dx)


def _build_tampering(config: NodeConfig) -> TamperingDetector:
    detector = TamperingDetector(
        TamperingSettings(hold_s=config.incidents.tampering_hold_s)
    )
    if config.tampering is None:
        return detector
    path = config.tampering.reference_frame
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise IncidentSetupError(
            f"tampering.reference_frame {path} cannot be read; take a new one with "
            "`sitlab-calibrate check --config FILE`"
        )
    detector.set_reference(np.asarray(image, dtype=np.uint8))
    logger.info("tampering reference loaded from %s", path)
    return detector
