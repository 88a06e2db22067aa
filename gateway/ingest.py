"""Turn one MQTT message into an accepted node message or a dead letter.

`classify` never raises: every failure becomes a `Rejected` with a reason code
from `REASONS`, so the caller can always either store or dead-letter.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from edge.messages import SCHEMA_VERSION, MessageError, Topic, kind_for_leaf, validate

logger = logging.getLogger(__name__)

REASONS = (
    "too_large",
    "invalid_utf8",
    "invalid_json",
    "invalid_text",
    "unknown_topic",
    "unknown_schema_version",
    "schema",
    "topic_mismatch",
    "store_error",
)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A message that passed every check."""

    topic: str
    kind: str
    payload: dict[str, Any]
    received_ms: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message for the dead letters."""

    topic: str
    reason: str
    detail: str
    raw: bytes
    size: int
    received_ms: int


def _reject(
    topic: str, reason: str, detail: str, raw: bytes, keep: int, now_ms: int
) -> Rejected:
    return Rejected(
        topic=clean_text(topic),
        reason=reason,
        detail=clean_text(detail)[:2000],
        raw=raw[:keep],
        size=len(raw),
        received_ms=now_ms,
    )


def clean_text(text: str) -> str:
    """Replace NUL and lone surrogates, which neither database stores in TEXT."""
    text = text.replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")


def classify(
    topic: str, raw: bytes, *, max_bytes: int, keep_bytes: int, now_ms: int
) -> Accepted | Rejected:
    """Check one message: size, UTF-8, JSON, topic, schema, topic against payload.

    Args:
        topic: MQTT topic it arrived on.
        raw: payload bytes.
        max_bytes: larger payloads are rejected before decoding.
        keep_bytes: how much of a rejected payload the dead letter keeps.
        now_ms: receive time, epoch milliseconds.
    """

    def reject(reason: str, detail: str) -> Rejected:
        return _reject(topic, reason, detail, raw, keep_bytes, now_ms)

    if len(raw) > max_bytes:
        return reject("too_large", f"payload of {len(raw)} bytes exceeds {max_bytes}")
    try:
        parsed_topic = Topic.parse(topic)
    except MessageError as error:
        return reject("unknown_topic", str(error))
    kind = kind_for_leaf(parsed_topic.leaf)
    if kind is None:
        return reject(
            "unknown_topic", f"topic leaf {parsed_topic.leaf!r} is not a message kind"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return reject("invalid_utf8", f"payload is not UTF-8: {error}")
    try:
        payload = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        return reject("invalid_json", f"payload is not JSON: {error}")
    problem = _text_problem(payload)
    if problem is not None:
        return reject("invalid_text", problem)
    if isinstance(payload, dict) and payload.get("schema_version") != SCHEMA_VERSION:
        version = payload.get("schema_version")
        return reject(
            "unknown_schema_version",
            f"schema_version {version!r} is not {SCHEMA_VERSION}, the version this gateway reads",
        )
    try:
        message = validate(payload, kind)
    except MessageError as error:
        return reject("schema", str(error))
    except RecursionError:
        return reject("schema", "payload nests too deeply to validate")
    if (message["site"], message["node"]) != (parsed_topic.site, parsed_topic.node):
        return reject(
            "topic_mismatch",
            f"payload site/node {message['site']}/{message['node']} does not match "
            f"topic site/node {parsed_topic.site}/{parsed_topic.node}",
        )
    return Accepted(topic=topic, kind=kind, payload=message, received_ms=now_ms)


def _text_problem(payload: Any) -> str | None:  # noqa: ANN401
    """Return why decoded JSON cannot be stored as text, or None."""
    try:
        canonical = json.dumps(payload, ensure_ascii=False)
        canonical.encode("utf-8")
    except UnicodeEncodeError:
        return "payload contains a lone UTF-16 surrogate escape"
    except (RecursionError, ValueError):
        return "payload nests too deeply"
    if "\x00" in canonical or "\\u0000" in canonical:
        return "payload contains a NUL character"
    return None
