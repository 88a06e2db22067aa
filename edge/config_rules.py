"""Incident rules in the node config, and how they become rule objects.

Rules refer to the node's configured zones and lines by name, as the
commercial analytics do, so one drawing serves counting and alarms.
Distances can be given in pixels (`*_px`) or, on a node with a `ground`
section, in metres on the ground (`*_m`), one form per setting.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from edge.config_base import StrictSection
from edge.config_calibration import MAX_SPEED_KMH

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,63}$"
SEVERITIES = Literal["info", "low", "medium", "high", "critical"]


_Strict = StrictSection


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
    min_size_m: float = Field(
        default=0.0,
        ge=0,
        description=(
            "The same limit in metres, measured at the object's ground point; needs "
            "the `ground` section. Set min_size_px or min_size_m, not both."
        ),
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

    @model_validator(mode="after")
    def _one_size_form(self) -> Self:
        _require_one_form(self.name, "min_size", self.min_size_px, self.min_size_m)
        return self


def _require_one_form(
    rule: str, stem: str, pixels: float | None, metres: float | None
) -> None:
    """Raise ValueError when a distance is set both in pixels and in metres."""
    if pixels and metres:
        raise ValueError(
            f"rule {rule!r}: {stem}_px={pixels:g} and {stem}_m={metres:g} are both "
            f"set; give the distance once, as {stem}_px or as {stem}_m"
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


class _StationaryRule(_ZoneRule):
    still_radius_m: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Radius in metres on the ground within which the object counts as "
            "still; needs the `ground` section. Replaces still_radius_px."
        ),
    )

    @model_validator(mode="after")
    def _one_radius_form(self) -> Self:
        radius_px = getattr(self, "still_radius_px", None)
        _require_one_form(self.name, "still_radius", radius_px, self.still_radius_m)
        return self


class AbandonedObjectRuleConfig(_StationaryRule):
    """A bag left stationary in a zone beyond a time."""

    type: Literal["abandoned_object"]
    limit_s: float = Field(default=60.0, gt=0)
    still_radius_px: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Radius in pixels within which the object counts as still; 15 when "
            "neither this nor still_radius_m is set."
        ),
    )
    missing_grace_s: float = Field(default=10.0, ge=0)


class StoppedVehicleRuleConfig(_StationaryRule):
    """A vehicle stationary in a no-stopping zone beyond a time."""

    type: Literal["stopped_vehicle"]
    limit_s: float = Field(default=30.0, gt=0)
    still_radius_px: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Radius in pixels within which the vehicle counts as still; 20 when "
            "neither this nor still_radius_m is set."
        ),
    )
    missing_grace_s: float = Field(default=10.0, ge=0)


class WrongWayRuleConfig(_RuleBase):
    """A crossing of a line against its allowed direction."""

    type: Literal["wrong_way"]
    lines: list[str] = Field(min_length=1, description="Names of configured lines.")
    allowed: Literal["in", "out"] = Field(
        description="Direction of travel that is allowed, in the line's in/out terms."
    )
    window_s: float = Field(default=1.0, gt=0)
    min_travel_px: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Least travel across the line within window_s, in pixels; 10 when "
            "neither this nor min_travel_m is set."
        ),
    )
    min_travel_m: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Least travel across the line in metres on the ground; needs the "
            "`ground` section and a line drawn on the ground. Replaces min_travel_px."
        ),
    )
    hold_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _one_travel_form(self) -> Self:
        _require_one_form(
            self.name, "min_travel", self.min_travel_px, self.min_travel_m
        )
        return self


class SpeedingRuleConfig(_RuleBase):
    """An object faster than a speed limit on the calibrated ground plane."""

    type: Literal["speeding"]
    zones: list[str] = Field(
        default_factory=list,
        description=(
            "Names of configured zones where the limit applies; the whole frame "
            "when omitted."
        ),
    )
    limit_kmh: float = Field(
        gt=0,
        le=MAX_SPEED_KMH,
        description="Speed limit in km/h. Faster objects raise an incident.",
    )
    release_margin_kmh: float = Field(
        default=5.0,
        ge=0,
        description=(
            "The incident ends once the speed is this far below limit_kmh. Higher "
            "keeps a speed that hovers around the limit one incident."
        ),
    )
    trigger_delay_s: float = Field(
        default=0.5,
        ge=0,
        description=(
            "How long the speed must stay above the limit before an incident "
            "starts. Higher ignores spikes from a jumping box."
        ),
    )

    @model_validator(mode="after")
    def _margin_below_limit(self) -> Self:
        if self.release_margin_kmh >= self.limit_kmh:
            raise ValueError(
                f"rule {self.name!r}: release_margin_kmh={self.release_margin_kmh:g} "
                f"must be below limit_kmh={self.limit_kmh:g}"
            )
        return self


RuleConfig = Annotated[
    IntrusionRuleConfig
    | LoiteringRuleConfig
    | CrowdingRuleConfig
    | AbandonedObjectRuleConfig
    | StoppedVehicleRuleConfig
    | WrongWayRuleConfig
    | SpeedingRuleConfig,
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
    "speeding": ["bicycle", "car", "motorcycle", "bus", "truck"],
}
# Rule settings in metres. Each needs the node's ground plane.
METRE_FIELDS = ("min_size_m", "still_radius_m", "min_travel_m")


def rule_classes(rule: RuleConfig) -> list[str]:
    """Return the classes a rule watches, its type's default when not given."""
    return list(rule.classes) if rule.classes else DEFAULT_RULE_CLASSES[rule.type]


def ground_needs(rule: RuleConfig) -> list[str]:
    """Return what in a rule needs the ground plane, such as 'min_size_m'."""
    needs = ["type speeding"] if rule.type == "speeding" else []
    needs += [name for name in METRE_FIELDS if getattr(rule, name, None)]
    return needs
