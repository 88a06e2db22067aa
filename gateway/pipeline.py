"""The write path: batches of classified messages committed by one writer thread.

Each message is applied inside its own savepoint, so one message that the
database rejects becomes a `store_error` dead letter without losing the rest
of the batch. A message's `on_committed` callback (the MQTT acknowledgement)
runs only after its batch committed, so a crash before the commit makes the
broker deliver the message again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge.messages import SEQUENCED_KINDS
from gateway import counts, fleet, incidents, nodes
from gateway.ingest import Accepted, Rejected, classify, clean_text
from gateway.store import Database, Tx
from gateway.timeutil import iso_ms, now_ms

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Work:
    """One unit for the writer: a classified message or a sweep."""

    item: Accepted | Rejected | None
    on_committed: Callable[[], None] | None = None
    sweep_offline_s: float | None = None


def bump(tx: Tx, name: str, amount: int = 1) -> None:
    """Add to a named counter."""
    tx.execute(
        "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) "
        "DO UPDATE SET value = counters.value + excluded.value",
        (name, amount),
    )


def _dead_letter(tx: Tx, item: Rejected) -> str:
    tx.execute(
        "INSERT INTO dead_letters (received_ms, topic, reason, detail, "
        "payload_size, payload) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (item.received_ms, item.topic, item.reason, item.detail, item.size, item.raw),
    )
    return f"dead_letter.{item.reason}"


def _store_message(tx: Tx, item: Accepted) -> bool:
    """Insert the raw message; return False when its UUID was stored before."""
    message = item.payload
    inserted = tx.execute(
        "INSERT INTO messages (message_id, site, node, kind, seq, sent_ms, "
        "received_ms, "
        "topic, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
        (
            message["message_id"],
            message["site"],
            message["node"],
            item.kind,
            message["seq"],
            iso_ms(message["sent_at"]),
            item.received_ms,
            item.topic,
            json.dumps(message, separators=(",", ":"), ensure_ascii=False),
        ),
    )
    if not inserted:
        logger.debug("duplicate message %s ignored", message["message_id"])
        return False
    return True


def apply(tx: Tx, item: Accepted | Rejected) -> str:
    """Apply one classified message inside the caller's transaction.

    Returns:
        The name of the counter the message adds to.
    """
    if isinstance(item, Rejected):
        return _dead_letter(tx, item)
    conflict = _seq_conflict(tx, item) or _foreign_incident(tx, item)
    if conflict is not None:
        return _dead_letter(tx, conflict)
    if not _store_message(tx, item):
        return "duplicates"
    _apply_kind(tx, item)
    return f"accepted.{item.kind}"


def _seq_conflict(tx: Tx, item: Accepted) -> Rejected | None:
    """Return a `seq_conflict` dead letter for a message that reuses a seq."""
    if item.kind not in SEQUENCED_KINDS:
        return None
    message = item.payload
    # Locks the node row first, as `touch` does, so that two instances
    # that write the same node take turns.
    _, last = nodes.mark_seen(tx, message["site"], message["node"], item.received_ms)
    detail = nodes.seq_conflict(
        tx,
        message["site"],
        message["node"],
        seq=message["seq"],
        last=last,
        message_id=message["message_id"],
        at_ms=item.received_ms,
    )
    if detail is None:
        return None
    return _rejected_after_checks(item, "seq_conflict", detail)


def _foreign_incident(tx: Tx, item: Accepted) -> Rejected | None:
    """Return an `incident_owner` dead letter for another node's incident.

    Incident ids are UUIDs drawn by the node that raised the incident, so a
    message from another node with the same id is forged or broken. Without
    this check a node could end or change another node's incident, past the
    broker's per-node topic permissions.
    """
    if item.kind != "incident":
        return None
    message = item.payload
    rows = tx.execute(
        "SELECT site, node FROM incidents WHERE incident_id = ?",
        (message["incident_id"],),
    )
    if not rows:
        return None
    owner = (rows[0][0], rows[0][1])
    if owner == (message["site"], message["node"]):
        return None
    logger.warning(
        "incident %s of %s/%s named by node %s/%s; dead-lettered",
        message["incident_id"],
        owner[0],
        owner[1],
        message["site"],
        message["node"],
    )
    detail = (
        f"incident {message['incident_id']} belongs to node {owner[0]}/"
        f"{owner[1]}, not {message['site']}/{message['node']}"
    )
    return _rejected_after_checks(item, "incident_owner", detail)


def _rejected_after_checks(item: Accepted, reason: str, detail: str) -> Rejected:
    """Return a dead letter for a valid message that the store's checks reject."""
    raw = json.dumps(item.payload, separators=(",", ":"), ensure_ascii=False).encode()
    return Rejected(
        topic=item.topic,
        reason=reason,
        detail=detail,
        raw=raw[:4096],
        size=len(raw),
        received_ms=item.received_ms,
    )


def _apply_kind(tx: Tx, item: Accepted) -> None:
    message, at_ms = item.payload, item.received_ms
    site, node = message["site"], message["node"]
    if item.kind == "status":
        nodes.apply_status(tx, message, at_ms)
        return
    if item.kind == "heartbeat":
        nodes.apply_heartbeat(tx, message, at_ms)
        return
    last_seq = nodes.touch(tx, site, node, at_ms)
    if item.kind in SEQUENCED_KINDS:
        nodes.track_sequence(
            tx, site, node, seq=message["seq"], last=last_seq, at_ms=at_ms
        )
        if message.get("merged_seqs"):
            nodes.track_merged_seqs(tx, site, node, message["merged_seqs"], at_ms)
    if item.kind == "counts":
        counts.store_counts(tx, message)
    elif item.kind == "incident":
        incidents.apply_message(tx, message, at_ms)
    elif item.kind == "config_state":
        nodes.apply_config_state(tx, message)
    elif item.kind == "model_state":
        fleet.apply_model_state(tx, message, at_ms)


def apply_batch(
    db: Database,
    items: Sequence[Accepted | Rejected],
    offline_after_s: float | None = None,
) -> None:
    """Commit a batch; a message the database rejects becomes a dead letter.

    Args:
        db: the store.
        items: classified messages.
        offline_after_s: when set, nodes silent this long are marked offline
            in the same transaction.
    """
    # Per-node order is kept (stable sort) while PostgreSQL row locks are
    # always taken in the same node order, which rules out deadlocks between
    # two gateway instances.
    ordered = sorted(items, key=_node_key)
    try:
        with db.transaction() as tx:
            _apply_all(tx, ordered, offline_after_s, isolate=False)
    except Exception as error:
        # Savepoints cost two round trips per message on PostgreSQL, so they
        # are used only to find the message that made the batch fail. The
        # message that fails again logs its own warning below.
        logger.debug(
            "a batch of %d messages failed (%s: %s); retrying each in its own "
            "savepoint",
            len(ordered),
            type(error).__name__,
            error,
        )
        with db.transaction() as tx:
            _apply_all(tx, ordered, offline_after_s, isolate=True)


def _apply_all(
    tx: Tx,
    items: Sequence[Accepted | Rejected],
    offline_after_s: float | None,
    *,
    isolate: bool,
) -> None:
    # Counters are added once per batch: one upsert per name instead of one
    # per message, which is one database round trip less per message.
    tally: Counter[str] = Counter()
    for item in items:
        if not isolate:
            tally[apply(tx, item)] += 1
            continue
        try:
            with tx.savepoint():
                tally[apply(tx, item)] += 1
        except Exception as error:
            logger.warning(
                "storing message %s from %s failed, dead-lettered as store_error: "
                "%s: %s",
                _message_id(item),
                item.topic,
                type(error).__name__,
                error,
            )
            with tx.savepoint():
                tally[_dead_letter(tx, _store_failure(item, error))] += 1
    for name in sorted(tally):
        bump(tx, name, tally[name])
    if offline_after_s is not None:
        nodes.sweep_offline(tx, offline_after_s, now_ms())


def _store_failure(item: Accepted | Rejected, error: Exception) -> Rejected:
    return Rejected(
        topic=item.topic,
        reason="store_error",
        detail=clean_text(f"{type(error).__name__}: {error}")[:2000],
        raw=json.dumps(getattr(item, "payload", {})).encode()[:4096],
        size=0,
        received_ms=item.received_ms,
    )


def _message_id(item: Accepted | Rejected) -> str:
    if isinstance(item, Accepted):
        return str(item.payload.get("message_id", "?"))
    return "?"


def _node_key(item: Accepted | Rejected) -> tuple[str, str]:
    if isinstance(item, Accepted):
        return (item.payload["site"], item.payload["node"])
    return ("", "")


class Writer:
    """The writer thread: takes work from a queue and commits it in batches."""

    def __init__(
        self,
        db: Database,
        *,
        batch_max: int,
        linger_s: float,
        max_bytes: int,
        keep_bytes: int,
    ) -> None:
        self.db = db
        self.batch_max = batch_max
        self.linger_s = linger_s
        self.max_bytes = max_bytes
        self.keep_bytes = keep_bytes
        self._queue: queue.Queue[Work | None] = queue.Queue()
        self._thread = threading.Thread(
            target=self._run, name="gateway-writer", daemon=True
        )
        self.committed = 0

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Commit what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout_s)

    def depth(self) -> int:
        """Return the number of queued work items."""
        return self._queue.qsize()

    def submit_raw(
        self, topic: str, raw: bytes, on_committed: Callable[[], None] | None
    ) -> None:
        """Classify a received message and queue it."""
        item = classify(
            topic,
            raw,
            max_bytes=self.max_bytes,
            keep_bytes=self.keep_bytes,
            now_ms=now_ms(),
        )
        self._queue.put(Work(item=item, on_committed=on_committed))

    def submit_sweep(self, offline_after_s: float) -> None:
        """Queue an offline sweep, so it runs on the writer thread like every write."""
        self._queue.put(Work(item=None, sweep_offline_s=offline_after_s))

    def _next_batch(self) -> tuple[list[Work], bool]:
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.linger_s
        while len(batch) < self.batch_max:
            try:
                work = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if work is None:
                return batch, True
            batch.append(work)
        return batch, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._next_batch()
            if batch:
                self._commit(batch)
        logger.info("writer stopped after %d messages", self.committed)

    def _commit(self, batch: list[Work]) -> None:
        items = [work.item for work in batch if work.item is not None]
        sweeps = [
            work.sweep_offline_s for work in batch if work.sweep_offline_s is not None
        ]
        delay_s = 0.5
        while True:
            try:
                apply_batch(self.db, items, min(sweeps) if sweeps else None)
                break
            except Exception:
                # The database itself failed (connection lost, disk full).
                # Nothing was acknowledged, so retrying loses nothing.
                logger.exception(
                    "committing a batch of %d messages failed; retrying in %.1f s",
                    len(items),
                    delay_s,
                )
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 30.0)
        self.committed += len(items)
        for work in batch:
            if work.on_committed is not None:
                try:
                    work.on_committed()
                except Exception:
                    logger.exception("acknowledging a committed message failed")
