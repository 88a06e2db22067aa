"""Security incidents on the node: zone, line and speed rules, tampering, health.

`IncidentEngine` runs every rule on each tracked frame and returns incident
message bodies (start, update, end) that validate against the `incident`
schema once the envelope is added.
"""

from edge.incidents.engine import IncidentEngine, Rule
from edge.incidents.evidence import EvidenceError, EvidenceSettings, render_evidence
from edge.incidents.health import HealthSettings, SourceHealthMonitor
from edge.incidents.lifecycle import IncidentEvent, IncidentType, Moment, Severity
from edge.incidents.line_rules import WrongWayRule
from edge.incidents.rules import Line, RuleError, RuleSettings, Zone
from edge.incidents.schedule import ArmingSchedule, ArmingWindow, ScheduleError
from edge.incidents.speed_rules import SpeedingRule
from edge.incidents.tampering import TamperCause, TamperingDetector, TamperingSettings
from edge.incidents.zone_rules import (
    AbandonedObjectRule,
    CrowdingRule,
    IntrusionRule,
    LoiteringRule,
    StoppedVehicleRule,
)

__all__ = [
    "AbandonedObjectRule",
    "ArmingSchedule",
    "ArmingWindow",
    "CrowdingRule",
    "EvidenceError",
    "EvidenceSettings",
    "HealthSettings",
    "IncidentEngine",
    "IncidentEvent",
    "IncidentType",
    "IntrusionRule",
    "Line",
    "LoiteringRule",
    "Moment",
    "Rule",
    "RuleError",
    "RuleSettings",
    "ScheduleError",
    "Severity",
    "SourceHealthMonitor",
    "SpeedingRule",
    "StoppedVehicleRule",
    "TamperCause",
    "TamperingDetector",
    "TamperingSettings",
    "WrongWayRule",
    "Zone",
    "render_evidence",
]
