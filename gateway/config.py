"""Gateway configuration: one pydantic model, loaded from YAML, overridden by flags."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from edge.config import not_utf8_message

_LISTEN = re.compile(r"^(?P<host>[^\s:]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")
_GROUP = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ConfigError(ValueError):
    """A configuration file that cannot be read or does not validate."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class MqttSettings(_Section):
    """Broker connection and subscription."""

    url: str = Field(
        "mqtt://127.0.0.1:1883",
        description=(
            "Broker URL, mqtt://[user:password@]host[:port] or mqtts:// for TLS."
        ),
    )
    client_id: str = Field(
        "sitlab-gateway",
        min_length=1,
        max_length=128,
        description=(
            "Stable MQTT client id; the broker keeps the persistent session under it, "
            "so every gateway instance needs its own."
        ),
    )
    shared_group: str | None = Field(
        None,
        description=(
            "Shared subscription group; instances with the same group split the "
            "message stream between them."
        ),
    )
    session_expiry_s: int = Field(
        86400,
        ge=0,
        le=2**32 - 1,
        description=(
            "How long the broker keeps the session and queues QoS 1 messages while the"
            " gateway is away. Longer survives longer outages at the cost of broker "
            "memory."
        ),
    )
    keepalive_s: int = Field(
        30,
        ge=5,
        le=3600,
        description="MQTT keepalive; lower detects a dead broker sooner.",
    )
    receive_maximum: int = Field(
        2000,
        ge=1,
        le=65535,
        description=(
            "Most QoS 1 messages the broker sends before the gateway acknowledges "
            "them (MQTT 5 Receive Maximum). It bounds the writer queue. Lower "
            "than store.batch_max starves the batches."
        ),
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError(f"mqtt url {value!r} must start with mqtt:// or mqtts://")
        return value

    @field_validator("shared_group")
    @classmethod
    def _check_group(cls, value: str | None) -> str | None:
        if value is not None and not _GROUP.match(value):
            raise ValueError(
                f"shared_group {value!r} must be 1-64 letters, digits, '_' or '-'"
            )
        return value


class StoreSettings(_Section):
    """Database and the writer thread's batching."""

    url: str = Field(
        "sqlite:///sitlab-gateway.db",
        description=(
            "sqlite:///PATH (a relative PATH is relative to the working folder) or "
            "postgresql://user@host:port/db."
        ),
    )
    batch_max: int = Field(
        500,
        ge=1,
        le=10000,
        description=(
            "Most messages committed in one transaction. Higher raises throughput and "
            "the work redone after a crash."
        ),
    )
    max_readers: int = Field(
        8,
        ge=1,
        le=100,
        description=(
            "PostgreSQL connections for API reads per instance. Higher serves more "
            "concurrent requests and takes more of the server's max_connections."
        ),
    )
    batch_linger_ms: int = Field(
        10,
        ge=0,
        le=1000,
        description=(
            "How long the writer waits for more messages before it commits a batch. "
            "Higher batches more under light load and adds latency."
        ),
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(
                f"store url {value!r} must start with sqlite:/// or postgresql://"
            )
        return value


class IngestSettings(_Section):
    """Limits on incoming messages."""

    max_payload_bytes: int = Field(
        1_000_000,
        ge=1024,
        description=(
            "Larger payloads go to the dead letters. Incident evidence may take up to "
            "400 kB of base64."
        ),
    )
    dead_letter_keep_bytes: int = Field(
        4096,
        ge=0,
        le=1_000_000,
        description="Bytes of a rejected payload kept for inspection.",
    )


class NodeSettings(_Section):
    """When a silent node counts as offline."""

    heartbeat_interval_s: float = Field(
        30.0, gt=0, description="Heartbeat period the nodes are configured with."
    )
    offline_after_heartbeats: float = Field(
        3.0,
        ge=1.0,
        description=(
            "Missed heartbeats after which a node is offline and a node_offline "
            "incident opens. Lower alerts sooner and raises false alarms on a flaky "
            "link."
        ),
    )
    sweep_interval_s: float = Field(
        5.0, gt=0, description="How often the gateway looks for silent nodes."
    )

    @property
    def offline_after_s(self) -> float:
        """Seconds of silence after which a node is offline."""
        return self.heartbeat_interval_s * self.offline_after_heartbeats


class RetentionSettings(_Section):
    """How many days each kind of data is kept; 0 keeps it forever."""

    raw_messages_days: float = Field(30, ge=0, description="Raw message log.")
    dead_letters_days: float = Field(30, ge=0, description="Rejected messages.")
    count_rows_days: float = Field(
        400, ge=0, description="Per-interval line and zone count rows."
    )
    incidents_days: float = Field(
        365, ge=0, description="Resolved incidents, by their last change."
    )
    events_days: float = Field(
        7,
        ge=0,
        description="Server-sent event log that reconnecting clients resume from.",
    )
    audit_log_days: float = Field(
        730,
        ge=0,
        description="Audit log of evidence views, acknowledgements and exports.",
    )
    interval_s: float = Field(
        3600, gt=0, description="How often the retention task runs."
    )


class ApiSettings(_Section):
    """HTTP API."""

    listen: str = Field("127.0.0.1:8080", description="HOST:PORT of the HTTP API.")
    stream_poll_s: float = Field(
        0.1,
        gt=0,
        le=5,
        description=(
            "How often an SSE stream looks for new events. Lower cuts latency and "
            "costs queries."
        ),
    )
    session_ttl_h: float = Field(
        12, gt=0, description="Lifetime of a token issued by POST /api/v1/login."
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        match = _LISTEN.match(value)
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ValueError(f"listen {value!r} must be HOST:PORT with PORT 1-65535")
        return value

    @property
    def host(self) -> str:
        """Host part of `listen`."""
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        """Port part of `listen`."""
        return int(self.listen.rsplit(":", 1)[1])


class GatewayConfig(_Section):
    """The whole gateway configuration."""

    mqtt: MqttSettings = Field(default_factory=MqttSettings)  # type: ignore[arg-type]
    store: StoreSettings = Field(default_factory=StoreSettings)  # type: ignore[arg-type]
    ingest: IngestSettings = Field(default_factory=IngestSettings)  # type: ignore[arg-type]
    nodes: NodeSettings = Field(default_factory=NodeSettings)  # type: ignore[arg-type]
    retention: RetentionSettings = Field(default_factory=RetentionSettings)  # type: ignore[arg-type]
    api: ApiSettings = Field(default_factory=ApiSettings)  # type: ignore[arg-type]
    log_level: str = Field(
        "INFO",
        pattern="^(DEBUG|INFO|WARNING|ERROR)$",
        description="Log level of the gateway process.",
    )

    def with_overrides(self, overrides: dict[str, Any]) -> GatewayConfig:
        """Return a copy with dotted keys (`mqtt.url`) replaced; None skips a key."""
        data = self.model_dump()
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, key = dotted.split(".", 1)
            data[section][key] = value
        return parse_config(data, source="command line")


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"invalid gateway configuration in {source}:"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        got = item.get("input")
        lines.append(f"  {where}: {item['msg']} (got {got!r})")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config") -> GatewayConfig:  # noqa: ANN401
    """Validate decoded configuration data.

    Raises:
        ConfigError: listing each invalid field with its value.
    """
    if data is None:
        data = {}
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a YAML configuration file.

    Raises:
        ConfigError: when the file is missing, is not YAML or does not validate.
    """
    try:
        text = path.read_text("utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(not_utf8_message(path, error)) from None
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    return parse_config(data, source=str(path))
