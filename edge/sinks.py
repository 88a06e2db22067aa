"""Destinations of outgoing messages: standard output for trials, or MQTT.

Counts and incident messages are durable: `send` hands them to a sink that
gives them the next sequence number. Status and heartbeat messages are
transient and repeat the last sequence number (see `edge.messages`).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TextIO

from edge import messages
from edge.config import ConfigError, NodeConfig


class Sink(Protocol):
    """Destination of a node's messages."""

    def send(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Queue a durable message and return the full payload."""
        ...

    def send_transient(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send a message that is not kept if it cannot be delivered now."""
        ...

    def stats_fields(self) -> dict[str, Any]:
        """Return heartbeat fields about the link, empty when there is none."""
        ...

    def close(self) -> None:
        """Flush what can be flushed and release resources."""
        ...


class StdoutSink:
    """Writes each message as one JSON line `{"topic": ..., "payload": {...}}`.

    Sequence numbers live in memory and restart at 1 with each run, because
    nothing is kept on disk.
    """

    durable = False

    def __init__(self, site: str, node: str, stream: TextIO | None = None) -> None:
        self.site = site
        self.node = node
        self.stream = stream or sys.stdout
        self._seq = 0
        self._lock = threading.Lock()

    def send(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Validate, number and write a durable message."""
        with self._lock:
            self._seq += 1
            return self._write(kind, body, self._seq)

    def send_transient(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Validate and write a status or heartbeat message."""
        with self._lock:
            return self._write(kind, body, self._seq)

    def _write(self, kind: str, body: dict[str, Any], seq: int) -> dict[str, Any]:
        payload = messages.envelope(kind, self.site, self.node, seq)
        payload.update(body)
        messages.validate(payload, kind)
        record = {
            "topic": messages.topic_for(self.site, self.node, kind),
            "payload": payload,
        }
        self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.stream.flush()
        return payload

    def stats_fields(self) -> dict[str, Any]:
        """Return no link fields: nothing is queued."""
        return {}

    def close(self) -> None:
        """Flush the stream."""
        self.stream.flush()


class NullSink(StdoutSink):
    """Validates and numbers messages but writes them nowhere (benchmarks)."""

    def __init__(self, site: str, node: str) -> None:
        super().__init__(site, node, stream=open(os.devnull, "w"))  # noqa: SIM115

    def close(self) -> None:
        """Close the null stream."""
        self.stream.close()


class MqttSink:
    """Sends durable messages through the outbox and the rest straight to MQTT.

    The publisher starts on the first status message, so that the retained
    online status already names the model and config version.
    """

    durable = True

    def __init__(
        self,
        config: NodeConfig,
        *,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_message: Callable[[str, bytes], None] | None = None,
    ) -> None:
        from edge.mqtt import MqttPublisher  # noqa: PLC0415
        from edge.mqtt_endpoint import TlsSettings  # noqa: PLC0415
        from edge.outbox import Outbox  # noqa: PLC0415

        mqtt = config.mqtt
        if mqtt.url is None:
            raise ConfigError("the mqtt sink needs mqtt.url or --mqtt URL")
        self.outbox = Outbox(
            config.outbox.path,
            config.site,
            config.node,
            max_bytes=config.outbox.max_bytes,
        )
        tls = None
        if mqtt.ca_file or mqtt.cert_file or mqtt.key_file:
            tls = TlsSettings(
                ca_file=mqtt.ca_file, cert_file=mqtt.cert_file, key_file=mqtt.key_file
            )
        self._status_fields: dict[str, Any] = {}
        self.publisher = MqttPublisher(
            self.outbox,
            url=mqtt.url,
            client_id=mqtt.client_id or f"sitlab-{config.site}-{config.node}",
            site=config.site,
            node=config.node,
            username=mqtt.username,
            password=mqtt.password(),
            tls=tls,
            keepalive_s=mqtt.keepalive_s,
            inflight_max=mqtt.inflight_max,
            status_payload_factory=lambda: dict(self._status_fields),
            subscriptions=subscriptions,
            on_message=on_message,
        )
        self._started = False

    def send(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store a counts or incident message; it leaves once the broker is up."""
        return self.publisher.add(kind, body)

    def send_transient(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Publish a heartbeat now, or set the fields of the retained status."""
        if kind == "status":
            self._status_fields = {
                key: value
                for key, value in body.items()
                if key not in ("state", "reason")
            }
            if not self._started:
                self.publisher.start()
                self._started = True
            return body
        self.publisher.publish_transient(kind, body)
        return body

    def stats_fields(self) -> dict[str, Any]:
        """Return the outbox and reconnect fields of the heartbeat."""
        return self.publisher.stats().as_heartbeat()

    def close(self) -> None:
        """Drain what the broker accepts in time, publish offline, disconnect."""
        if self._started:
            self.publisher.stop()
        self.outbox.close()


def open_sink(kind: str, config: NodeConfig) -> Sink:
    """Return the sink named `kind`: "mqtt", "stdout" or "none"."""
    if kind == "mqtt":
        return MqttSink(config)
    if kind == "stdout":
        return StdoutSink(config.site, config.node)
    if kind == "none":
        return NullSink(config.site, config.node)
    raise ValueError(f"unknown sink {kind!r}; expected 'mqtt', 'stdout' or 'none'")
