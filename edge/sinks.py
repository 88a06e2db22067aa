"""Where outgoing messages go: standard output for trials, or MQTT.

Counts and incident messages are durable: `send` hands them to a sink that
gives them the next sequence number. Status and heartbeat messages are
transient and repeat the last sequence number (see `edge.messages`).
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, Protocol, TextIO

from edge import messages


class Sink(Protocol):
    """Destination of a node's messages."""

    def send(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Queue a durable message and return the full payload."""
        ...

    def send_transient(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send a message that is not kept if it cannot be delivered now."""
        ...

    def close(self) -> None:
        """Flush what can be flushed and release resources."""
        ...


class StdoutSink:
    """Writes each message as one JSON line `{"topic": ..., "payload": {...}}`.

    Sequence numbers live in memory and restart at 1 with each run, because
    nothing is kept on disk.
    """

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
        record = {"topic": messages.topic_for(self.site, self.node, kind), "payload": payload}
        self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.stream.flush()
        return payload

    def close(self) -> None:
        """Flush the stream."""
        self.stream.flush()
