"""Incident rules in the node config, and how they become rule objects.

Rules refer to the node's configured zones and lines by name, as the
commercial analytics do, so one drawing serves counting and alarms.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,63}$"
SEVERITIES = Literal["info", "low", "medium", "high", "critical"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArmingWindowConfig(_Strict):
    """Weekdays and local times during which a rule is armed."""

    days: list[str] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        min_length=1,
        description="Days the window starts on: mon, tue, wed, thu, fri, sat, sun.",
    )
    start: str = Field(pattern=r"^\d{2}:\d{2}$", description="Local start, HH:MM.")
    end: str = Field(
        pattern=r"^\d{2}:\d{2}$",
        description=(
            "Local end, HH:MM; an end at or before the start runs past midnight."
        ),
    )


class _RuleBase(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Rule name shown in incidents.")
    classes: list[str] | None = Field(
        default=None,
        description="Classes the rule watches; each rule type has its own default.",
    )
    severity: SEVERITIES = "medium"
    min_size_px: float = Field(
        default=0.0,
        ge=0,
        description="Objects whose box's longer side is shorter are ignored.",
    )
    trigger_delay_s: float = Field(
        default=0.0,
        ge=0,
        description="How long the condition must hold before an incident starts.",
    )
    cooldown_s: float = Field(
        default=30.0,
        ge=0,
        description="After an incident ends, no new one for the same object or zone.",
    )
    schedule: list[ArmingWindowConfig] | None = Field(
        default=None,
        description="Armed windows in the site's time zone; always armed if omitted.",
    )
    evidence: bool = Field(
        default=False,
        description="Attach one anonymised JPEG to each incident start.",
    )


class _ZoneRule(_RuleBase):
    zones: list[str] = Field(min_length=1, description="Names of configured zones.")


class IntrusionRuleConfig(_ZoneRule):
    """An object of the given classes inside a zone for the trigger delay."""

    type: Literal["intrusion"]
    exit_grace_s: float = Field(default=1.0, ge=0)


class LoiteringRuleConfig(_ZoneRule):
    """Wall-clock dwell in a zone beyond a limit, reset after a grace gap."""

    type: Literal["loitering"]
    limit_s: float = Field(gt=0, description="Dwell after which the incident starts.")
    exit_grace_s: float = Field(
        default=3.0,
        ge=0,
        description="Time out of the zone after which the dwell starts again.",
    )
    update_every_s: float = Field(default=30.0, gt=0)


class CrowdingRuleConfig(_ZoneRule):
    """Occupancy at or above a count for the trigger delay, with hysteresis."""

    type: Literal["crowding"]
    min_count: int = Field(ge=1, description="Occupancy that raises the incident.")
    release_margin: int = Field(
        default=2,
        ge=0,
        description="The incident ends once occupancy is this far below min_count.",
    )
    release_delay_s: float = Field(default=5.0, ge=0)
    update_every_s: float = Field(default=10.0, gt=0)


class AbandonedObjectRuleConfig(_ZoneRule):
    """A bag left stationary in a zone beyond a time."""

    type: Literal["abandoned_object"]
    limit_s: float = Field(default=60.0, gt=0)
    still_radius_px: float = Field(default=15.0, gt=0)
    missing_grace_s: float = Field(default=10.0, ge=0)


class StoppedVehicleRuleConfig(_ZoneRule):
    """A vehicle stationary in a no-stopping zone beyond a time."""

    type: Literal["stopped_vehicle"]
    limit_s: float = Field(default=30.0, gt=0)
    still_radius_px: float = Field(default=20.0, gt=0)
    missing_grace_s: float = Field(default=10.0, ge=0)


class WrongWayRuleConfig(_RuleBase):
    """A crossing of a line against its allowed direction."""

    type: Literal["wrong_way"]
    lines: list[str] = Field(min_length=1, description="Names of configured lines.")
    allowed: Literal["in", "out"] = Field(
        description="Direction of travel that is allowed, in the line's in/out terms."
    )
    window_s: float = Field(default=1.0, gt=0)
    min_travel_px: float = Field(default=10.0, ge=0)
    hold_s: float = Field(default=5.0, gt=0)


RuleConfig = Annotated[
    IntrusionRuleConfig
    | LoiteringRuleConfig
    | CrowdingRuleConfig
    | AbandonedObjectRuleConfig
    | StoppedVehicleRuleConfig
    | WrongWayRuleConfig,
    Field(discriminator="type"),
]


class IncidentsConfig(_Strict):
    """Frame-level incidents and evidence limits."""

    tampering: bool = Field(default=True, description="Detect camera tampering.")
    tampering_hold_s: float = Field(
        default=5.0,
        gt=0,
        description="How long a tampering condition must last before it is raised.",
    )
    target_fps: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Frame rate below which the node reports itself degraded; 0 is off."
        ),
    )
    degraded_hold_s: float = Field(default=30.0, gt=0)
    evidence_max_bytes: int = Field(default=150_000, ge=10_000, le=400_000)
    evidence_max_width_px: int = Field(default=960, ge=160)


DEFAULT_RULE_CLASSES = {
    "intrusion": ["person"],
    "loitering": ["person"],
    "crowding": ["person"],
    "abandoned_object": ["backpack", "handbag", "suitcase"],
    "stopped_vehicle": ["car", "motorcycle", "bus", "truck"],
    "wrong_way": ["person", "bicycle", "car", "motorcycle", "bus", "truck"],
}


def rule_classes(rule: RuleConfig) -> list[str]:
    """Return the classes a rule watches, its type's default when not given."""
    return list(rule.classes) if rule.classes else DEFAULT_RULE_CLASSES[rule.type]
