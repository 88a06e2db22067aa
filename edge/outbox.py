"""Durable store-and-forward queue of node messages, kept in SQLite.

The frame loop adds counts and incident messages; the MQTT publisher reads
them in sequence order and removes each one only after the broker acknowledged
it (PUBACK). The sequence number is taken in the same transaction as the
insert, so it survives restarts and is never reused.

When the stored payloads exceed the disk budget, room is made in this order:

1. Merge adjacent, never-sent counts messages into coarser intervals, oldest
   first. Messages that went on the wire at least once are never merged,
   because with QoS 1 the broker may have delivered one whose PUBACK was lost,
   and the gateway would then count its figures twice.
2. Drop the oldest messages of the lowest value: state replies, then counts,
   then incident `update` phases, and last incident `start` and `end` phases.

Every merge and drop is counted in `stats()` and logged at warning level.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from edge.analytics.speed_stats import SPEED_FIELDS, merge_speed_fields
from edge.messages import (
    SEQUENCED_KINDS,
    encode,
    envelope,
    parse_utc,
    topic_for,
    validate,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# Kinds that never enter the outbox: status is retained and replaced, and a
# heartbeat is stale once the next one is due.
TRANSIENT_KINDS = frozenset({"status", "heartbeat"})
ENVELOPE_FIELDS = frozenset(
    {"schema_version", "kind", "site", "node", "message_id", "seq", "sent_at"}
)
# Drop order when the budget is exhausted, lowest rank first.
RANK_STATE = 0
RANK_COUNTS = 1
RANK_INCIDENT_UPDATE = 2
RANK_INCIDENT_EDGE = 3
# Two counts intervals are adjacent when the second starts within this many
# seconds of the end of the first. A longer gap means the node was not
# counting, so a merged interval must not cover it.
ADJACENT_GAP_S = 1.0
# A merged message lists the seqs it absorbed; the counts schema caps that
# list, so a group stops growing at this many parts.
MAX_MERGED_PARTS = 10_000
_SCAN_CHUNK = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counter (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS message (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    rank INTEGER NOT NULL,
    topic TEXT NOT NULL,
    qos INTEGER NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS message_by_rank ON message (rank, row_id);
"""


class OutboxError(RuntimeError):
    """An outbox that cannot be opened, or a message it cannot store."""


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A stored message waiting for its PUBACK.

    Attributes:
        row_id: storage position; increases with every insert and gives the
            send order.
        seq: the envelope's sequence number.
        kind: message kind.
        topic: MQTT topic to publish on.
        payload: the exact bytes to publish; a re-send repeats them, so the
            message_id stays the same.
        qos: MQTT QoS to publish with.
        message_id: the envelope's UUID.
        attempts: how often the message was handed to the MQTT client.
    """

    row_id: int
    seq: int
    kind: str
    topic: str
    payload: bytes
    qos: int
    message_id: str
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Fill level of the outbox and what the disk budget cost so far.

    Attributes:
        depth: messages waiting for a PUBACK.
        oldest_age_s: age of the oldest waiting message, 0 when empty.
        bytes: payload bytes stored; the database file is larger by its
            index and write-ahead log.
        dropped: messages deleted unsent to stay within the budget.
        merged: counts messages folded into an earlier one to stay within
            the budget.
    """

    depth: int
    oldest_age_s: float
    bytes: int
    dropped: int
    merged: int

    def as_heartbeat(self) -> dict[str, int | float]:
        """Return the `outbox` object of a heartbeat message."""
        return {
            "depth": self.depth,
            "oldest_age_s": round(self.oldest_age_s, 3),
            "dropped": self.dropped,
            "merged": self.merged,
            "bytes": self.bytes,
        }


def drop_rank(kind: str, body: dict[str, Any]) -> int:
    """Return how long a message is kept when the budget runs out.

    Higher ranks are dropped later: incidents outlive counts, and an incident's
    start and end outlive its updates.
    """
    if kind == "incident":
        if body.get("phase") == "update":
            return RANK_INCIDENT_UPDATE
        return RANK_INCIDENT_EDGE
    if kind == "counts":
        return RANK_COUNTS
    return RANK_STATE


class Outbox:
    """A thread-safe durable queue of one node's messages.

    Args:
        path: SQLite database file; created with its folder when missing.
        site: site id of the node, as in the topics.
        node: node id; an existing database of another site or node is
            rejected, because the sequence belongs to one node.
        max_bytes: budget for stored payload bytes. Raising it keeps full
            resolution through longer outages at the cost of SD-card space;
            lowering it starts merging and dropping sooner.
        low_water_ratio: when the budget is exceeded, room is made until the
            payload bytes fall to this share of `max_bytes`. A lower value
            makes room less often but removes more at once.
        merge_max_interval_s: longest interval a merged counts message may
            cover. Longer intervals stretch the budget further but blur the
            time resolution of old counts.
        synchronous: SQLite sync mode. FULL (default) makes every returned
            add() survive power loss, for one fsync per add. NORMAL survives a
            process crash only, and adds return without waiting for the disk.
        clock: wall-clock source in seconds since the epoch, for ages.
    """

    def __init__(
        self,
        path: Path | str,
        site: str,
        node: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        low_water_ratio: float = 0.9,
        merge_max_interval_s: float = 3600.0,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes={max_bytes}; expected a positive byte count")
        if not 0.0 < low_water_ratio <= 1.0:
            raise ValueError(
                f"low_water_ratio={low_water_ratio}; expected a share in (0, 1]"
            )
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(
                f"synchronous={synchronous!r}; expected 'FULL' or 'NORMAL'"
            )
        self.synchronous = synchronous
        if merge_max_interval_s <= 0:
            raise ValueError(
                f"merge_max_interval_s={merge_max_interval_s}; expected seconds > 0"
            )
        self.path = Path(path)
        self.site = site
        self.node = node
        self.max_bytes = max_bytes
        self.low_water_bytes = int(max_bytes * low_water_ratio)
        self.merge_max_interval_s = merge_max_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._db = self._open()
        self._bytes = self._scalar(
            "SELECT COALESCE(SUM(length(payload)), 0) FROM message"
        )

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10
            )
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            # FULL by default, not NORMAL: in WAL mode NORMAL survives a
            # process crash but may roll back the last commits on power loss,
            # because the log is synced only at checkpoints. A pole-mounted
            # node loses power without warning. A rolled-back add would hand
            # its seq to a different message after reboot, and a rolled-back
            # mark_sent would let a delivered counts message be merged and
            # counted twice. The cost is one fsync per commit, and commits come
            # per interval or incident.
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.executescript(_SCHEMA)
        except sqlite3.Error as error:
            raise OutboxError(
                f"cannot open outbox database {self.path}: {error}; check that the "
                "folder is writable and the file is an SQLite database"
            ) from error
        if mode.lower() != "wal":
            raise OutboxError(
                f"outbox database {self.path} runs in journal mode {mode!r}, not WAL; "
                "put it on a local file system"
            )
        self._check_owner(db)
        return db

    def _check_owner(self, db: sqlite3.Connection) -> None:
        rows = dict(db.execute("SELECT name, value FROM meta").fetchall())
        if not rows:
            db.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?)",
                [("site", self.site), ("node", self.node)],
            )
            return
        owner = (rows.get("site"), rows.get("node"))
        if owner != (self.site, self.node):
            raise OutboxError(
                f"outbox database {self.path} belongs to site {owner[0]!r} node "
                f"{owner[1]!r}, not site {self.site!r} node {self.node!r}; each node "
                "needs its own outbox file because the sequence is per node"
            )

    def close(self) -> None:
        """Close the database; committed messages stay on disk."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def _relaxed_sync(self) -> Iterator[None]:
        """Commit without fsync; the next FULL commit syncs these pages too.

        Only for removals: a removal lost to power loss re-sends a message
        the gateway already has, under the same message_id.
        """
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self._db.execute(f"PRAGMA synchronous={self.synchronous}")

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:  # noqa: ANN401
        return self._db.execute(sql, params).fetchone()[0]

    def _counter(self, name: str) -> int:
        row = self._db.execute(
            "SELECT value FROM counter WHERE name = ?", (name,)
        ).fetchone()
        return int(row[0]) if row else 0

    def _add_to_counter(self, name: str, delta: int) -> None:
        self._db.execute(
            "INSERT INTO counter (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, delta),
        )

    def add(self, kind: str, body: dict[str, Any], *, qos: int = 1) -> dict[str, Any]:
        """Store a message durably and return its full payload.

        Counts and incident messages take the next sequence number; other
        kinds repeat the last one. The payload is validated against its schema
        before it is stored, and the call returns after the commit reached the
        disk.

        Args:
            kind: message kind; `status` and `heartbeat` are rejected because
                they are published directly.
            body: the kind's own fields, without the envelope fields.
            qos: MQTT QoS to publish with, 1 or 2.

        Returns:
            The payload as published, envelope included.

        Raises:
            OutboxError: for a transient kind, envelope fields in `body`, a bad
                qos or a payload larger than the whole budget.
            edge.messages.MessageError: when the payload breaks its schema.
        """
        self._check_request(kind, body, qos)
        with self._lock:
            payload, size = self._insert(kind, body, qos)
            if self._bytes > self.max_bytes:
                self._make_room(
                    protect_seq=payload["seq"], protect_id=payload["message_id"]
                )
        logger.debug("stored %s seq=%d (%d bytes)", kind, payload["seq"], size)
        return payload

    def _check_request(self, kind: str, body: dict[str, Any], qos: int) -> None:
        if kind in TRANSIENT_KINDS:
            raise OutboxError(
                f"kind {kind!r} is not stored in the outbox; publish it with "
                "MqttPublisher.publish_transient or as the retained status"
            )
        clash = sorted(ENVELOPE_FIELDS & body.keys())
        if clash:
            raise OutboxError(
                f"body of a {kind} message sets envelope fields {clash}; the outbox "
                "fills them in, so remove them from the body"
            )
        if qos not in (1, 2):
            raise OutboxError(
                f"qos={qos!r}; stored messages are published with qos 1 or 2"
            )

    def _insert(
        self, kind: str, body: dict[str, Any], qos: int
    ) -> tuple[dict[str, Any], int]:
        with self._transaction() as db:
            last_seq = self._counter("last_seq")
            seq = last_seq + 1 if kind in SEQUENCED_KINDS else last_seq
            payload = envelope(kind, self.site, self.node, seq=seq) | body
            validate(payload, kind)
            data = encode(payload)
            if len(data) > self.max_bytes:
                raise OutboxError(
                    f"{kind} message of {len(data)} bytes exceeds the whole outbox "
                    f"budget max_bytes={self.max_bytes}; raise max_bytes or shrink "
                    "the message (evidence images are the usual cause)"
                )
            db.execute(
                "INSERT INTO message (seq, kind, rank, topic, qos, message_id, "
                "payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    kind,
                    drop_rank(kind, body),
                    topic_for(self.site, self.node, kind),
                    qos,
                    payload["message_id"],
                    data,
                    self._clock(),
                ),
            )
            if seq != last_seq:
                self._add_to_counter("last_seq", seq - last_seq)
        self._bytes += len(data)
        return payload, len(data)

    def pending(
        self,
        limit: int,
        after_id: int | None = None,
        *,
        exclude: Iterable[str] = (),
    ) -> list[PendingMessage]:
        """Return up to `limit` waiting messages in send order.

        Args:
            limit: maximum number of messages.
            after_id: only messages with a larger `row_id`, so a reader can
                page on while earlier ones are still waiting for a PUBACK. It
                is a row id, not a seq, because state replies share the seq of
                the counts or incident message before them.
            exclude: message_ids to skip (those already in flight).
        """
        skip = set(exclude)
        found: list[PendingMessage] = []
        cursor = after_id if after_id is not None else 0
        with self._lock:
            while len(found) < limit:
                rows = self._db.execute(
                    "SELECT row_id, seq, kind, topic, payload, qos, message_id, "
                    "attempts FROM message WHERE row_id > ? ORDER BY row_id LIMIT ?",
                    (cursor, limit + len(skip)),
                ).fetchall()
                if not rows:
                    break
                for row in rows:
                    if row[6] not in skip and len(found) < limit:
                        found.append(PendingMessage(*row))
                cursor = rows[-1][0]
        return found

    def mark_sent(self, row_ids: Iterable[int]) -> None:
        """Record durably that messages are about to go on the wire.

        A message marked once is never merged, because a PUBACK lost with the
        connection does not prove the broker did not deliver it.
        """
        ids = [(row_id,) for row_id in row_ids]
        if not ids:
            return
        with self._lock, self._transaction() as db:
            db.executemany(
                "UPDATE message SET attempts = attempts + 1 WHERE row_id = ?", ids
            )

    def remove(self, message_ids: Iterable[str]) -> int:
        """Delete acknowledged messages and return how many were stored.

        Call it only for messages whose PUBACK arrived. Unknown ids are
        ignored, because a merge or drop may have removed the message first.
        """
        ids = [(message_id,) for message_id in message_ids]
        if not ids:
            return 0
        with self._lock, self._relaxed_sync(), self._transaction() as db:
            freed = 0
            removed = 0
            for params in ids:
                row = db.execute(
                    "DELETE FROM message WHERE message_id = ? "
                    "RETURNING length(payload)",
                    params,
                ).fetchone()
                if row is not None:
                    freed += int(row[0])
                    removed += 1
        self._bytes -= freed
        return removed

    def last_seq(self) -> int:
        """Return the last sequence number taken, 0 before the first message."""
        with self._lock:
            return self._counter("last_seq")

    def stats(self) -> OutboxStats:
        """Return depth, age of the oldest message, bytes, drops and merges."""
        with self._lock:
            depth, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(created_at) FROM message"
            ).fetchone()
            age = max(0.0, self._clock() - oldest) if oldest is not None else 0.0
            return OutboxStats(
                depth=int(depth),
                oldest_age_s=age,
                bytes=self._bytes,
                dropped=self._counter("dropped"),
                merged=self._counter("merged"),
            )

    def _make_room(self, protect_seq: int, protect_id: str) -> None:
        before = self._bytes
        merged = self._merge_counts(protect_id)
        dropped_by_rank = self._drop_oldest(protect_id)
        logger.warning(
            "outbox over budget (%d > %d bytes) after seq %d: merged %d counts "
            "messages, dropped %s by rank, now %d bytes",
            before,
            self.max_bytes,
            protect_seq,
            merged,
            dropped_by_rank or "none",
            self._bytes,
        )

    def _merge_counts(self, protect_id: str) -> int:
        """Merge never-sent adjacent counts messages, oldest first."""
        folded = 0
        cursor = 0
        group: list[tuple[int, int, dict[str, Any]]] = []
        while self._bytes > self.low_water_bytes:
            rows = self._db.execute(
                "SELECT row_id, length(payload), payload FROM message "
                "WHERE kind = 'counts' AND attempts = 0 AND row_id > ? "
                "AND message_id != ? ORDER BY row_id LIMIT ?",
                (cursor, protect_id, _SCAN_CHUNK),
            ).fetchall()
            if not rows:
                break
            cursor = rows[-1][0]
            for row_id, size, data in rows:
                doc = json.loads(data)
                if group and self._extends(group, doc):
                    group.append((row_id, size, doc))
                    continue
                folded += self._write_merge(group)
                group = [(row_id, size, doc)]
                if self._bytes <= self.low_water_bytes:
                    return folded
        folded += self._write_merge(group)
        return folded

    def _extends(
        self, group: list[tuple[int, int, dict[str, Any]]], doc: dict[str, Any]
    ) -> bool:
        first_start = parse_utc(group[0][2]["interval_start"])
        last_end = parse_utc(group[-1][2]["interval_end"])
        start = parse_utc(doc["interval_start"])
        end = parse_utc(doc["interval_end"])
        gap_s = (start - last_end).total_seconds()
        span_s = (end - first_start).total_seconds()
        parts = sum(1 + len(part.get("merged_seqs", ())) for _, _, part in group)
        parts += 1 + len(doc.get("merged_seqs", ()))
        return (
            abs(gap_s) <= ADJACENT_GAP_S
            and span_s <= self.merge_max_interval_s
            and parts <= MAX_MERGED_PARTS
        )

    def _write_merge(self, group: list[tuple[int, int, dict[str, Any]]]) -> int:
        if len(group) < 2:
            return 0
        merged = merge_counts([doc for _, _, doc in group])
        validate(merged, "counts")
        data = encode(merged)
        head_id = group[0][0]
        rest = [(row_id,) for row_id, _, _ in group[1:]]
        with self._transaction() as db:
            db.execute(
                "UPDATE message SET payload = ?, message_id = ? WHERE row_id = ?",
                (data, merged["message_id"], head_id),
            )
            db.executemany("DELETE FROM message WHERE row_id = ?", rest)
            self._add_to_counter("merged", len(rest))
        self._bytes += len(data) - sum(size for _, size, _ in group)
        return len(rest)

    def _drop_oldest(self, protect_id: str) -> dict[int, int]:
        """Delete the oldest messages of the lowest rank until under low water."""
        dropped: dict[int, int] = {}
        while self._bytes > self.low_water_bytes:
            rows = self._db.execute(
                "SELECT row_id, rank, length(payload) FROM message "
                "WHERE message_id != ? ORDER BY rank, row_id LIMIT ?",
                (protect_id, _SCAN_CHUNK),
            ).fetchall()
            if not rows:
                break
            victims: list[tuple[int]] = []
            freed = 0
            for row_id, rank, size in rows:
                if self._bytes - freed <= self.low_water_bytes:
                    break
                victims.append((row_id,))
                freed += size
                dropped[rank] = dropped.get(rank, 0) + 1
            with self._transaction() as db:
                db.executemany("DELETE FROM message WHERE row_id = ?", victims)
                self._add_to_counter("dropped", len(victims))
            self._bytes -= freed
        return dropped


def merge_counts(payloads: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Fold consecutive counts payloads of one node into one coarser interval.

    Line crossings and zone entries and exits are summed, `max` is the max,
    `mean` is weighted by each interval's duration, and `current` comes from
    the last payload that has the zone. Crossing speeds merge exactly in
    count, mean and max. The 85th percentile is kept only when one part had
    speeds, because percentiles of parts do not combine.

    The result is new data, so it gets a new message_id. It keeps the
    smallest seq so that it sorts where its first part was, and it lists the
    other parts' seqs in `merged_seqs` so that the gateway does not report
    them as gaps.

    Args:
        payloads: counts payloads in interval order, at least one.

    Returns:
        A counts payload covering `interval_start` of the first to
        `interval_end` of the last.
    """
    if not payloads:
        raise ValueError("merge_counts needs at least one counts payload")
    first, last = payloads[0], payloads[-1]
    seqs = {payload["seq"] for payload in payloads}
    for payload in payloads:
        seqs.update(payload.get("merged_seqs", ()))
    head_seq = min(seqs)
    merged: dict[str, Any] = {
        **first,
        "message_id": str(uuid.uuid4()),
        "seq": head_seq,
        "merged_seqs": sorted(seqs - {head_seq}),
        "sent_at": last["sent_at"],
        "interval_end": last["interval_end"],
        "lines": _merge_lines(payloads),
        "zones": _merge_zones(payloads),
    }
    for field_name in ("frames", "detection_frames"):
        values = [p[field_name] for p in payloads if field_name in p]
        if values:
            merged[field_name] = sum(values)
    return merged


def _merge_lines(payloads: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    speeds: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for payload in payloads:
        for row in payload["lines"]:
            key = (row["line"], row["class"])
            total = rows.setdefault(
                key, {"line": row["line"], "class": row["class"], "in": 0, "out": 0}
            )
            total["in"] += row["in"]
            total["out"] += row["out"]
            for field_name in SPEED_FIELDS:
                if field_name in row:
                    speeds.setdefault((*key, field_name), []).append(row[field_name])
    for (line, class_name, field_name), parts in speeds.items():
        rows[(line, class_name)][field_name] = merge_speed_fields(parts)
    return list(rows.values())


def _merge_zones(payloads: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    weights: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for payload in payloads:
        duration_s = max(
            0.0,
            (
                parse_utc(payload["interval_end"])
                - parse_utc(payload["interval_start"])
            ).total_seconds(),
        )
        for row in payload["zones"]:
            key = (row["zone"], row["class"])
            total = rows.setdefault(key, {**row, "max": 0, "entries": 0, "exits": 0})
            total["current"] = row["current"]
            total["max"] = max(total["max"], row["max"])
            total["entries"] += row["entries"]
            total["exits"] += row["exits"]
            weights.setdefault(key, []).append((row["mean"], duration_s))
    for key, samples in weights.items():
        rows[key]["mean"] = _weighted_mean(samples)
    return list(rows.values())


def _weighted_mean(samples: list[tuple[float, float]]) -> float:
    total_s = sum(duration_s for _, duration_s in samples)
    if total_s <= 0:
        return sum(mean for mean, _ in samples) / len(samples)
    return sum(mean * duration_s for mean, duration_s in samples) / total_s
