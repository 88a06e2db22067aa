"""Node configuration: one YAML file per node, validated with pydantic.

The models here are the single source of truth for the file format: the JSON
Schema in `firmware-config/node-config.schema.json` is generated from them,
and every validation error names the field, its line in the file and the fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from edge.config_base import StrictSection
from edge.config_calibration import (
    GroundConfig,
    LensConfig,
    SpeedConfig,
    TamperingConfig,
)
from edge.config_rules import (
    IncidentsConfig,
    RuleConfig,
    ground_needs,
    rule_classes,
)
from edge.detector.classes import COCO80_NAMES
from edge.motion import MotionConfig
from edge.types import Anchor

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Free text that goes into every message: no control characters, which the
# gateway rejects (PostgreSQL cannot store NUL).
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]+$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,63}$"
COCO_TRAFFIC_CLASSES = ["person", "bicycle", "car", "motorcycle", "bus", "truck"]

Point = tuple[float, float]
Name = Annotated[
    str, Field(pattern=NAME_PATTERN, description="Name shown in messages.")
]


class ConfigError(ValueError):
    """A node configuration that cannot be loaded; the message lists every problem."""


_Strict = StrictSection


class SourceConfig(_Strict):
    """Source of the frames."""

    uri: str = Field(
        description=(
            "Video file path, image folder, rtsp:// or http(s):// URL, /dev/videoN, "
            "'gst:' followed by a GStreamer pipeline ending in appsink, or "
            "'picamera:N' for a Raspberry Pi camera."
        ),
        min_length=1,
    )
    fps: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description=(
            "Frame rate of an image folder (required there), and the fallback for a "
            "video file whose header reports no frame rate."
        ),
    )
    read_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description=(
            "A live stream that delivers no frame for this long is declared offline "
            "and reopened. Lower it to notice a dead camera sooner; raise it for "
            "streams with long keyframe gaps."
        ),
    )
    reconnect_max_s: float = Field(
        default=30.0,
        gt=0,
        description="Upper bound of the exponential back-off between reconnects.",
    )


class ModelConfig(_Strict):
    """The ONNX detector and how ONNX Runtime runs it."""

    path: Path = Field(description="ONNX model file, relative to the config file.")
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="Expected sha256 of the model file; the node rejects a mismatch.",
    )
    providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        min_length=1,
        description="ONNX Runtime execution providers in order of preference.",
    )
    intra_op_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description=(
            "Threads of one inference. More threads lower latency until they compete "
            "with decoding and MQTT for the same cores."
        ),
    )
    spin_wait: bool = Field(
        default=False,
        description=(
            "Let ONNX Runtime threads spin between operators. Slightly faster on an "
            "idle machine, much slower when another process shares the cores."
        ),
    )
    output_format: Literal["yolov8", "yolov5", "yolox", "end2end"] | None = Field(
        default=None,
        description="Output layout of the model; detected from shapes when omitted.",
    )


class DetectionConfig(_Strict):
    """Filter on the detections that go to the tracker."""

    classes: list[str] = Field(
        default_factory=lambda: list(COCO_TRAFFIC_CLASSES),
        min_length=1,
        description="Class names to keep; others are discarded before tracking.",
    )
    confidence: float = Field(
        default=0.35,
        gt=0,
        lt=1,
        description="Minimum score. Lower finds more objects and more false ones.",
    )
    class_confidence: dict[str, float] = Field(
        default_factory=dict,
        description="Per-class minimum scores that replace `confidence`.",
    )
    iou: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Overlap above which non-maximum suppression merges two boxes.",
    )
    max_detections: int = Field(default=300, ge=1, le=10000)

    @field_validator("class_confidence")
    @classmethod
    def _scores_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for name, score in value.items():
            if not 0 < score < 1:
                raise ValueError(
                    f"score for {name!r} is {score}; use a value in (0, 1)"
                )
        return value


class TrackerConfig(_Strict):
    """ByteTrack-style tracker; times are in seconds of stream time."""

    high_threshold: float = Field(default=0.5, gt=0, lt=1)
    low_threshold: float = Field(default=0.1, gt=0, lt=1)
    new_track_threshold: float = Field(default=0.6, gt=0, lt=1)
    match_iou: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Minimum overlap between a track's prediction and a detection.",
    )
    lost_track_buffer_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "How long a track that lost its detections can be recovered. Longer "
            "bridges occlusions; too long swaps identities in crowds."
        ),
    )
    confirm_hits: int = Field(
        default=3,
        ge=1,
        description="Matched detections before a track is confirmed and can count.",
    )


class GeometryConfig(_Strict):
    """Units and reference frame of line, zone and mask coordinates."""

    reference_resolution: tuple[int, int] | Literal["source"] | None = Field(
        default=None,
        description=(
            "Width and height of the picture the pixel coordinates were drawn on; "
            "they are scaled to the stream's real resolution. 'source' means the "
            "stream's own resolution (quick trials only)."
        ),
    )

    @field_validator("reference_resolution", mode="before")
    @classmethod
    def _resolution_shape(cls, value: Any) -> Any:  # noqa: ANN401
        if value is None or value == "source":
            return value
        if (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(isinstance(item, int) and item > 0 for item in value)
        ):
            return tuple(value)
        raise ValueError(
            f"{value!r} is not a resolution; give [width, height] in pixels, e.g. "
            "[1280, 720], or 'source' to use the stream's own resolution"
        )

    units: Literal["pixels", "normalized"] = Field(
        default="pixels",
        description="'normalized' coordinates run from 0 to 1 across the picture.",
    )
    anchor: Anchor = Field(
        default=Anchor.BOTTOM_CENTER,
        description="Point of a box that is tested against lines and zones.",
    )


class LineConfig(_Strict):
    """A directed counting line from `points[0]` to `points[1]`."""

    name: Name
    points: tuple[Point, Point] = Field(description="Start and end point.")
    classes: list[str] | None = Field(
        default=None,
        description="Classes counted here; all detection classes if omitted.",
    )
    hysteresis_px: float = Field(
        default=8.0,
        ge=0,
        description=(
            "Distance, in stream pixels, an anchor must move past the line before a "
            "crossing counts. Higher ignores more jitter but misses objects that "
            "only touch the line."
        ),
    )


class ZoneConfig(_Strict):
    """A polygon in which occupancy, entries and exits are counted."""

    name: Name
    polygon: list[Point] = Field(min_length=3)
    classes: list[str] | None = None
    enter_debounce_s: float = Field(
        default=0.3,
        ge=0,
        description="Time an anchor must stay inside before an entry counts.",
    )
    exit_debounce_s: float = Field(
        default=0.5,
        ge=0,
        description="Time an anchor must stay outside before an exit counts.",
    )


class MaskConfig(_Strict):
    """A privacy mask: blacked out before detection and in every image."""

    name: Name
    polygon: list[Point] = Field(min_length=3)


class CountsConfig(_Strict):
    """Aggregation of counts into messages."""

    interval_s: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="Seconds of stream time per counts message.",
    )


class MqttConfig(_Strict):
    """Broker connection; without `url` messages go nowhere but the log."""

    url: str | None = Field(
        default=None, description="mqtt://HOST:PORT or mqtts://HOST:PORT for TLS."
    )
    client_id: str | None = Field(
        default=None, description="Defaults to sitlab-SITE-NODE."
    )
    username: str | None = None
    password_env: str | None = Field(
        default=None, description="Environment variable that contains the password."
    )
    password_file: Path | None = Field(
        default=None, description="File whose first line is the password."
    )
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    inflight_max: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Unacknowledged QoS 1 publishes allowed on the wire at once.",
    )
    heartbeat_interval_s: float = Field(default=30.0, ge=1, le=3600)

    def password(self) -> str | None:
        """Return the password from the environment or the file, if one is set."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    f"mqtt.password_env names {self.password_env!r} but that "
                    "environment variable is not set"
                )
            return value
        if self.password_file:
            try:
                return self.password_file.read_text().splitlines()[0]
            except (OSError, IndexError) as error:
                raise ConfigError(
                    f"mqtt.password_file {self.password_file} cannot be read: {error}"
                ) from error
        return None


class OutboxConfig(_Strict):
    """The on-disk queue that keeps messages until the broker acknowledges them."""

    path: Path = Field(
        default=Path("var/outbox.sqlite3"),
        description="SQLite file, relative to the config file.",
    )
    max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=64 * 1024,
        description="Disk budget; when full, old counts are merged, then dropped.",
    )


class NodeConfig(_Strict):
    """Configuration of one edge node."""

    site: str = Field(pattern=ID_PATTERN, description="Site id, used in topics.")
    node: str = Field(pattern=ID_PATTERN, description="Node id, used in topics.")
    timezone: str = Field(
        default="UTC", description="IANA time zone of the site, for arming schedules."
    )
    config_version: str = Field(
        default="1",
        min_length=1,
        max_length=64,
        pattern=PRINTABLE_PATTERN,
        description="Reported in the node's status; printable characters only.",
    )
    source: SourceConfig
    model: ModelConfig
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    motion: MotionConfig = Field(
        default_factory=MotionConfig,
        description=(
            "Motion gating, detection rate and the maximum interval between full "
            "detections."
        ),
    )
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    geometry: GeometryConfig = Field(default_factory=GeometryConfig)
    lines: list[LineConfig] = Field(default_factory=list)
    zones: list[ZoneConfig] = Field(default_factory=list)
    masks: list[MaskConfig] = Field(default_factory=list)
    counts: CountsConfig = Field(default_factory=CountsConfig)
    rules: list[RuleConfig] = Field(
        default_factory=list, description="Incident rules on the zones and lines."
    )
    incidents: IncidentsConfig = Field(default_factory=IncidentsConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    lens: LensConfig | None = None
    ground: GroundConfig | None = None
    speed: SpeedConfig | None = Field(
        default=None,
        description=(
            "How track speeds are measured; needs `ground`. Defaults apply when "
            "omitted."
        ),
    )
    tampering: TamperingConfig | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as "
                "'Europe/Prague' or 'UTC'"
            ) from error
        return value

    @model_validator(mode="after")
    def _geometry_is_anchored(self) -> NodeConfig:
        has_geometry = bool(self.lines or self.zones or self.masks)
        pixels = self.geometry.units == "pixels"
        if has_geometry and pixels and self.geometry.reference_resolution is None:
            raise ValueError(
                "lines, zones or masks are given in pixels but "
                "geometry.reference_resolution is missing, so the node cannot scale "
                "them to the stream; set it to the resolution the points were drawn "
                "on, e.g. [1280, 720], or set geometry.units to 'normalized'"
            )
        self._check_unique("lines", [line.name for line in self.lines])
        self._check_unique("zones", [zone.name for zone in self.zones])
        self._check_unique("rules", [rule.name for rule in self.rules])
        self._check_rules()
        self._check_ground_users()
        return self

    def _check_ground_users(self) -> None:
        if self.ground is not None:
            return
        if self.speed is not None:
            raise ValueError(
                "the speed section needs a ground plane, but the config has no "
                "ground section; run `sitlab-calibrate ground` to add one, or remove "
                "the speed section"
            )
        for rule in self.rules:
            needs = ground_needs(rule)
            if not needs:
                continue
            fix = "run `sitlab-calibrate ground` to add one"
            if rule.type != "speeding":
                fix += ", or give the distance in pixels (the *_px form)"
            raise ValueError(
                f"rule {rule.name!r} uses {' and '.join(needs)}, which needs a "
                f"ground plane, but the config has no ground section; {fix}"
            )

    def _check_rules(self) -> None:
        zones = {zone.name for zone in self.zones}
        lines = {line.name for line in self.lines}
        detected = set(self.detection.classes)
        for rule in self.rules:
            targets, known, kind = (
                (rule.lines, lines, "lines")
                if rule.type == "wrong_way"
                else (rule.zones, zones, "zones")
            )
            for name in targets:
                if name not in known:
                    raise ValueError(
                        f"rule {rule.name!r} refers to {kind[:-1]} {name!r}, which is "
                        f"not configured; configured {kind}: {sorted(known) or 'none'}"
                    )
            missing = [cls for cls in rule_classes(rule) if cls not in detected]
            unknown = [cls for cls in missing if cls not in COCO80_NAMES]
            if unknown:
                raise ValueError(
                    f"rule {rule.name!r} watches {unknown}, which are not COCO class "
                    "names; check the spelling (for example 'person', 'car'), or "
                    "list them in detection.classes if the model is trained on "
                    "them (`sitlab-models info MODEL` prints its classes)"
                )
            if missing:
                raise ValueError(
                    f"rule {rule.name!r} watches {missing}, which detection.classes "
                    "drops before tracking; add them to detection.classes"
                )

    @staticmethod
    def _check_unique(field: str, names: list[str]) -> None:
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(
                    f"{field} has two entries named {name!r}; names must be unique"
                )
            seen.add(name)


def _line_of(document: Any, location: tuple[int | str, ...]) -> int | None:  # noqa: ANN401
    """Return the 1-based line of a pydantic error location in a ruamel document."""
    node = document
    line: int | None = None
    for part in location:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif (
            isinstance(node, CommentedSeq)
            and isinstance(part, int)
            and part < len(node)
        ):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    return line


def format_validation_error(
    error: ValidationError,
    source_name: str,
    document: Any = None,  # noqa: ANN401
) -> str:
    """Render every pydantic error as `file:line: field: message`."""
    lines = []
    for item in error.errors():
        location = tuple(part for part in item["loc"] if isinstance(part, int | str))
        where = ".".join(str(part) for part in location) or "(top level)"
        line = _line_of(document, location) if document is not None else None
        prefix = f"{source_name}:{line}" if line else source_name
        message = re.sub(r"^Value error, ", "", item["msg"])
        if item["type"] == "extra_forbidden":
            message = "unknown key; check its spelling and its place in the file"
        lines.append(f"{prefix}: {where}: {message}")
    return "\n".join(lines)


def parse_config(
    data: Any,  # noqa: ANN401
    source_name: str = "<config>",
    base_dir: Path | None = None,
) -> NodeConfig:
    """Validate already-parsed YAML or JSON data as a node config.

    Relative paths (model, outbox, TLS files) are resolved against `base_dir`.
    """
    try:
        config = NodeConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source_name, data)) from None
    if base_dir is None:
        return config
    return _resolve_paths(config, base_dir)


def _resolve_paths(config: NodeConfig, base_dir: Path) -> NodeConfig:
    def resolve(path: Path | None) -> Path | None:
        if path is None or path.is_absolute():
            return path
        return (base_dir / path).resolve()

    model = config.model.model_copy(update={"path": resolve(config.model.path)})
    outbox = config.outbox.model_copy(update={"path": resolve(config.outbox.path)})
    mqtt = config.mqtt.model_copy(
        update={
            name: resolve(getattr(config.mqtt, name))
            for name in ("password_file", "ca_file", "cert_file", "key_file")
        }
    )
    update: dict[str, Any] = {"model": model, "outbox": outbox, "mqtt": mqtt}
    if _is_relative_file(config.source.uri):
        uri = str((base_dir / config.source.uri).resolve())
        update["source"] = config.source.model_copy(update={"uri": uri})
    if config.tampering is not None:
        update["tampering"] = config.tampering.model_copy(
            update={"reference_frame": resolve(config.tampering.reference_frame)}
        )
    return config.model_copy(update=update)


# Source URIs that name no file: streams, devices, pipelines and cameras.
_NON_FILE_PREFIXES = ("/", "gst:", "picamera:", "v4l2:", "file://")


def _is_relative_file(uri: str) -> bool:
    """Return True when `uri` is a relative path of a file or image folder."""
    return (
        "://" not in uri
        and not uri.isdigit()
        and not uri.startswith(_NON_FILE_PREFIXES)
    )


def not_utf8_message(path: Path, error: UnicodeDecodeError) -> str:
    """Return the error text for a config file that is not UTF-8."""
    return (
        f"config file {path} is not UTF-8 (invalid byte at offset {error.start}); "
        "save it as UTF-8, for example with `iconv -f CP1250 -t UTF-8`"
    )


def load_yaml(path: Path) -> Any:  # noqa: ANN401
    """Read a YAML file with line information kept, raising ConfigError on syntax."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(not_utf8_message(path, error)) from None
    try:
        return YAML(typ="rt").load(text)
    except YAMLError as error:
        detail = str(error).replace('"<unicode string>"', f'"{path}"')
        raise ConfigError(f"{path}: invalid YAML: {detail}") from None


def load_config(path: Path) -> NodeConfig:
    """Load and validate a node config file."""
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return parse_config(data, str(path), base_dir=path.resolve().parent)


def json_schema() -> dict[str, Any]:
    """Return the JSON Schema of the node config file."""
    schema = NodeConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "SITLab Edge node configuration"
    return schema
