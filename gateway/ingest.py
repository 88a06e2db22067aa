"""Turn one MQTT message into an accepted node message or a dead letter.

`classify` returns a `Rejected` with a reason code from `REASONS` for every
check that fails, so the caller either stores or dead-letters each message.
A Hypothesis test feeds it arbitrary bytes on arbitrary topics.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.messages import (
    SCHEMA_VERSION,
    MessageError,
    Topic,
    describe_json_error,
    kind_for_leaf,
    parse_utc,
    validate,
)
from gateway.count_bounds import MAX_SEQ_STEP

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
    "out_of_range",
    "invalid_time",
    "seq_conflict",
    "store_error",
    "check_failed",
    "incident_owner",
)

# Both databases store integers in signed 64-bit columns.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# First bytes of every JPEG file (SOI marker and the next marker's 0xFF).
JPEG_MAGIC = b"\xff\xd8\xff"
# Dead-letter details show this many digits of an oversized integer.
_SHOWN_DIGITS = 40

# Counts messages carry speeds rounded to 0.01 km/h, so the checks that
# compare two speeds allow that much difference. The extra 1e-9 absorbs the
# binary error of decimal figures: 30.01 - 30.0 is 0.010000000000001563.
SPEED_TOLERANCE_KMH = 0.01
_SPEED_SLACK_KMH = SPEED_TOLERANCE_KMH + 1e-9
# Zone means are rounded to 0.0001, and a merged mean carries float noise.
_ZONE_MEAN_SLACK = 0.0001

# Time fields per kind, and the (earlier, later) pairs that must be in order.
TIME_FIELDS = ("sent_at", "interval_start", "interval_end", "started_at", "ended_at")
TIME_ORDER = (("interval_start", "interval_end"), ("started_at", "ended_at"))
# Times outside these years are no clock reading of a node. The bounds also
# keep local-time bucketing of every stored row inside Python's date range.
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)
# Maximum counts interval. The outbox merges at most an hour by default; a
# site may raise that limit, but not to a week.
MAX_INTERVAL = timedelta(days=7)


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
    *, topic: str, reason: str, detail: str, raw: bytes, keep: int, now_ms: int
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


class _RejectedError(Exception):
    """Raised inside `classify` with the dead-letter reason and detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def classify(
    topic: str, raw: bytes, *, max_bytes: int, keep_bytes: int, now_ms: int
) -> Accepted | Rejected:
    """Check one message: size, topic, UTF-8, JSON, schema, topic against payload.

    Args:
        topic: MQTT topic it arrived on.
        raw: payload bytes.
        max_bytes: larger payloads are rejected before decoding.
        keep_bytes: how much of a rejected payload the dead letter keeps.
        now_ms: receive time, epoch milliseconds.
    """
    try:
        _check_size(raw, max_bytes)
        parsed_topic, kind = _parse_topic(topic)
        payload = _decode(raw)
        _check_version(payload)
        # Before the schema, so that the store's limits hold whatever maxima
        # and formats the schemas declare.
        _check_ranges(payload)
        _check_times(payload)
        message = _validate(payload, kind)
        _check_origin(message, parsed_topic)
        if kind == "counts":
            _check_speed_counts(message)
            _check_speed_order(message)
            _check_zone_order(message)
            _check_merged_seqs(message)
        if kind == "incident":
            _check_evidence(message)
    except _RejectedError as error:
        return _reject(
            topic=topic,
            reason=error.reason,
            detail=error.detail,
            raw=raw,
            keep=keep_bytes,
            now_ms=now_ms,
        )
    except Exception as error:
        # A check that raises on unforeseen input must not kill the MQTT
        # thread, because the broker would redeliver the message forever.
        logger.exception("ingest check failed on a message on %s", topic)
        return _reject(
            topic=topic,
            reason="check_failed",
            detail=f"{type(error).__name__}: {str(error)[:200]}",
            raw=raw,
            keep=keep_bytes,
            now_ms=now_ms,
        )
    return Accepted(topic=topic, kind=kind, payload=message, received_ms=now_ms)


def _check_size(raw: bytes, max_bytes: int) -> None:
    if len(raw) > max_bytes:
        raise _RejectedError(
            "too_large", f"payload of {len(raw)} bytes exceeds {max_bytes}"
        )


def _parse_topic(topic: str) -> tuple[Topic, str]:
    try:
        parsed = Topic.parse(topic)
    except MessageError as error:
        raise _RejectedError("unknown_topic", str(error)) from None
    kind = kind_for_leaf(parsed.leaf)
    if kind is None:
        raise _RejectedError(
            "unknown_topic", f"topic leaf {parsed.leaf!r} is not a message kind"
        )
    return parsed, kind


def _decode(raw: bytes) -> Any:  # noqa: ANN401
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _RejectedError("invalid_utf8", f"payload is not UTF-8: {error}") from None
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as error:
        # ValueError covers syntax errors and integers beyond Python's
        # 4300-digit conversion limit.
        detail = describe_json_error(error)
        raise _RejectedError("invalid_json", f"payload is not JSON: {detail}") from None
    problem = _text_problem(payload)
    if problem is not None:
        raise _RejectedError("invalid_text", problem)
    return payload


def _check_version(payload: Any) -> None:  # noqa: ANN401
    if isinstance(payload, dict) and payload.get("schema_version") != SCHEMA_VERSION:
        version = payload.get("schema_version")
        raise _RejectedError(
            "unknown_schema_version",
            f"schema_version {version!r} is not {SCHEMA_VERSION}, "
            "the version this gateway reads",
        )


def _validate(payload: Any, kind: str) -> dict[str, Any]:  # noqa: ANN401
    try:
        return validate(payload, kind)
    except MessageError as error:
        raise _RejectedError("schema", str(error)) from None
    except RecursionError:
        raise _RejectedError("schema", "payload nests too deeply to validate") from None


def _check_origin(message: dict[str, Any], topic: Topic) -> None:
    if (message["site"], message["node"]) != (topic.site, topic.node):
        raise _RejectedError(
            "topic_mismatch",
            f"payload site/node {message['site']}/{message['node']} does not match "
            f"topic site/node {topic.site}/{topic.node}",
        )


def _check_speed_counts(message: dict[str, Any]) -> None:
    """Reject a line row whose speeds cover more crossings than it counted.

    JSON Schema cannot compare two fields, so the check runs here. Without
    it a bucket could report speeds of more crossings than it counts.
    """
    for index, row in enumerate(message["lines"]):
        for direction in ("in", "out"):
            stats = row.get(f"speed_{direction}")
            if stats is not None and stats["n"] > row[direction]:
                raise _RejectedError(
                    "schema",
                    f"/lines/{index}/speed_{direction}/n = {stats['n']} exceeds "
                    f"/lines/{index}/{direction} = {row[direction]}, but speeds "
                    "may cover only crossings that the row counts",
                )


def _check_speed_order(message: dict[str, Any]) -> None:
    """Reject speed figures that contradict each other.

    The mean and the 85th percentile of a set of speeds lie at or below its
    maximum, and a single crossing's mean, percentile and maximum are all
    its one speed. Each may differ by the rounding to 0.01 km/h.
    """
    for index, row in enumerate(message["lines"]):
        for direction in ("in", "out"):
            stats = row.get(f"speed_{direction}")
            if stats is None:
                continue
            where = f"/lines/{index}/speed_{direction}"
            top = stats["max_kmh"]
            for name in ("mean_kmh", "p85_kmh"):
                value = stats.get(name)
                if value is None:
                    continue
                if value - top > _SPEED_SLACK_KMH:
                    raise _RejectedError(
                        "schema",
                        f"{where}/{name} = {value} exceeds {where}/max_kmh = {top} "
                        f"by more than the rounding of {SPEED_TOLERANCE_KMH} km/h",
                    )
                if stats["n"] == 1 and top - value > _SPEED_SLACK_KMH:
                    raise _RejectedError(
                        "schema",
                        f"{where}/{name} = {value} differs from {where}/max_kmh = "
                        f"{top}, but with n = 1 both are the speed of one crossing",
                    )


def _check_zone_order(message: dict[str, Any]) -> None:
    """Reject a zone row whose occupancy at the end or mean exceeds its maximum."""
    for index, row in enumerate(message["zones"]):
        where = f"/zones/{index}"
        for name, slack in (("current", 0.0), ("mean", _ZONE_MEAN_SLACK)):
            if row[name] - row["max"] > slack:
                raise _RejectedError(
                    "schema",
                    f"{where}/{name} = {row[name]} exceeds {where}/max = "
                    f"{row['max']}, the maximum occupancy over the interval",
                )


def _check_evidence(message: dict[str, Any]) -> None:
    """Reject evidence whose bytes are no JPEG, whatever content_type it declares."""
    evidence = message.get("evidence")
    if not isinstance(evidence, dict):
        return
    head = evidence.get("data_base64", "")[:8]
    try:
        magic = base64.b64decode(head, validate=True)[:3]
    except ValueError:
        magic = b""
    if magic != JPEG_MAGIC:
        raise _RejectedError(
            "schema", "/evidence/data_base64 does not start with a JPEG image"
        )


def _check_merged_seqs(message: dict[str, Any]) -> None:
    """Reject `merged_seqs` that no outbox could have written.

    The outbox lists the seqs it folded in increasing order, each above the
    message's own `seq`. Without this check one forged seq of 2**63 - 1
    would set the node's last seq there and report a gap of 9.2e18.
    """
    seq = message["seq"]
    previous: int | None = None
    for index, merged in enumerate(message.get("merged_seqs", ())):
        where = f"/merged_seqs/{index} = {merged}"
        if merged <= seq:
            raise _RejectedError(
                "schema",
                f"{where} is not above /seq = {seq}, but a merged message keeps "
                "the smallest seq of its parts",
            )
        if previous is not None and merged <= previous:
            raise _RejectedError(
                "schema",
                f"{where} does not follow {previous}, but merged seqs must be "
                "strictly increasing",
            )
        if merged - seq > MAX_SEQ_STEP:
            raise _RejectedError(
                "schema",
                f"{where} is more than {MAX_SEQ_STEP} past /seq = {seq}, the "
                "largest seq step the gateway records as a gap",
            )
        previous = merged


def _check_ranges(payload: Any) -> None:  # noqa: ANN401
    """Reject integers outside 64 bits and non-finite numbers, naming the field."""
    try:
        _check_value(payload, "")
    except RecursionError:
        raise _RejectedError("schema", "payload nests too deeply to check") from None


def _check_value(value: Any, path: str) -> None:  # noqa: ANN401
    if isinstance(value, dict):
        for key, item in value.items():
            _check_value(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, f"{path}/{index}")
    elif isinstance(value, bool):
        return
    elif isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        digits = str(value)
        if len(digits) > _SHOWN_DIGITS:
            digits = f"{digits[:_SHOWN_DIGITS]}... ({len(digits)} digits)"
        raise _RejectedError(
            "out_of_range",
            f"{path or '/'} = {digits} is outside the 64-bit integer range "
            f"{INT64_MIN}..{INT64_MAX} the store holds",
        )
    elif isinstance(value, float) and not math.isfinite(value):
        raise _RejectedError(
            "out_of_range", f"{path or '/'} = {value} is not a finite number"
        )


def _check_times(message: Any) -> None:  # noqa: ANN401
    """Parse every time field and check that intervals do not run backwards."""
    if not isinstance(message, dict):
        return
    parsed: dict[str, datetime] = {}
    for name in TIME_FIELDS:
        text = message.get(name)
        if not isinstance(text, str):
            continue
        try:
            parsed[name] = parse_utc(text)
        except (ValueError, OverflowError) as error:
            raise _RejectedError(
                "invalid_time", f"/{name} {text!r} is not a valid UTC time: {error}"
            ) from None
        if not EARLIEST_TIME <= parsed[name] < LATEST_TIME:
            raise _RejectedError(
                "invalid_time",
                f"/{name} {text!r} is outside {EARLIEST_TIME.year}-"
                f"{LATEST_TIME.year - 1}; check the node's clock",
            )
    for first, last in TIME_ORDER:
        if first in parsed and last in parsed and parsed[last] < parsed[first]:
            raise _RejectedError(
                "invalid_time",
                f"/{last} {message[last]!r} is before /{first} {message[first]!r}",
            )
    start, end = parsed.get("interval_start"), parsed.get("interval_end")
    if start is not None and end is not None and end - start > MAX_INTERVAL:
        raise _RejectedError(
            "invalid_time",
            f"interval from {message['interval_start']!r} to "
            f"{message['interval_end']!r} is longer than {MAX_INTERVAL.days} days",
        )


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
