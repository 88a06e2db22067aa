"""Node registry: status and heartbeat state, sequence gaps and the offline sweep."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from gateway import incidents
from gateway.count_bounds import MAX_SEQ_STEP
from gateway.store import Database, Tx
from gateway.stream import append_event
from gateway.timeutil import ms_iso

logger = logging.getLogger(__name__)

_NODE_COLUMNS = (
    "site, node, state, state_reason, state_since_ms, last_seen_ms, "
    "last_heartbeat_ms, software_version, model_name, model_sha256, "
    "config_version, fps, target_fps, inference_ms, outbox_depth, source_state, "
    "last_seq, seq_resets, last_reset_ms, seq_conflicts, last_seq_conflict_ms"
)


def mark_seen(tx: Tx, site: str, node: str, at_ms: int) -> tuple[str, int | None]:
    """Create or update the node's row with its last-seen time.

    The upsert also locks the row on PostgreSQL until the commit, so two
    gateway instances that write the same node take turns.

    Returns:
        The node's state and last sequence number before this message.
    """
    rows = tx.execute(
        "INSERT INTO nodes (site, node, last_seen_ms) VALUES (?, ?, ?) "
        "ON CONFLICT (site, node) DO UPDATE SET last_seen_ms = excluded.last_seen_ms "
        "RETURNING state, last_seq",
        (site, node, at_ms),
    )
    state, last_seq = rows[0]
    return str(state), None if last_seq is None else int(last_seq)


def touch(tx: Tx, site: str, node: str, at_ms: int) -> int | None:
    """Record that the node sent something; an offline node comes back online.

    Returns:
        The node's last sequence number before this message.
    """
    state, last_seq = mark_seen(tx, site, node, at_ms)
    if state != "online":
        _set_state(
            tx, site, node, state="online", reason="message_received", at_ms=at_ms
        )
    return last_seq


def _set_state(
    tx: Tx, site: str, node: str, *, state: str, reason: str, at_ms: int
) -> None:
    tx.execute(
        "UPDATE nodes SET state = ?, state_reason = ?, state_since_ms = ? "
        "WHERE site = ? AND node = ?",
        (state, reason, at_ms, site, node),
    )
    append_event(
        tx,
        "node",
        {
            "site": site,
            "node": node,
            "state": state,
            "reason": reason,
            "at": ms_iso(at_ms),
        },
    )
    if state == "offline":
        incidents.open_node_offline(tx, site, node, reason, at_ms)
    else:
        incidents.close_node_offline(tx, site, node, at_ms)
    logger.info("node %s/%s is %s (%s)", site, node, state, reason)


def apply_status(tx: Tx, message: dict[str, Any], at_ms: int) -> None:
    """Apply a status message, including the Last Will (state offline)."""
    site, node = message["site"], message["node"]
    state, _ = mark_seen(tx, site, node, at_ms)
    model = message.get("model") or {}
    tx.execute(
        "UPDATE nodes SET "
        "software_version = COALESCE(?, software_version), "
        "model_name = COALESCE(?, model_name), model_sha256 = COALESCE(?, "
        "model_sha256), "
        "config_version = COALESCE(?, config_version) WHERE site = ? AND node = ?",
        (
            message.get("software_version"),
            model.get("name"),
            model.get("sha256"),
            message.get("config_version"),
            site,
            node,
        ),
    )
    new_state = message["state"]
    if new_state != state:
        _set_state(
            tx,
            site,
            node,
            state=new_state,
            reason=message.get("reason", "status"),
            at_ms=at_ms,
        )


def apply_heartbeat(tx: Tx, message: dict[str, Any], at_ms: int) -> None:
    """Apply a heartbeat: health figures, and back online if it was offline."""
    site, node = message["site"], message["node"]
    touch(tx, site, node, at_ms)
    outbox = message.get("outbox") or {}
    tx.execute(
        "UPDATE nodes SET last_heartbeat_ms = ?, fps = ?, target_fps = ?, "
        "inference_ms = ?, outbox_depth = COALESCE(?, outbox_depth), "
        "source_state = COALESCE(?, source_state), "
        "config_version = COALESCE(?, config_version) WHERE site = ? AND node = ?",
        (
            at_ms,
            message["fps"],
            message.get("target_fps"),
            message["inference_ms"],
            outbox.get("depth"),
            message.get("source_state"),
            message.get("config_version"),
            site,
            node,
        ),
    )


def apply_config_state(tx: Tx, message: dict[str, Any]) -> None:
    """Record the config version a node reports as applied."""
    if message["state"] == "applied" and message.get("config_version"):
        tx.execute(
            "UPDATE nodes SET config_version = ? WHERE site = ? AND node = ?",
            (message["config_version"], message["site"], message["node"]),
        )


def track_sequence(
    tx: Tx, site: str, node: str, *, seq: int, last: int | None, at_ms: int
) -> None:
    """Update the node's sequence state with a counts or incident message's seq.

    A seq above last+1 opens a gap. A seq inside an open gap fills it, so the
    gap shrinks, splits or closes. A lower seq outside every gap means the
    node's outbox was reset: the reset is counted and seq becomes the last.
    A step forward of more than `MAX_SEQ_STEP` counts as a reset too, so a
    forged seq of 2**63 - 1 does not report 9.2e18 missing messages.
    `last` is the node's last seq as `touch` returned it, with the row locked.
    """
    if last is None or seq == last + 1:
        _set_last_seq(tx, site, node, seq)
        return
    if seq - last > MAX_SEQ_STEP:
        _record_reset(tx, site, node, last=last, seq=seq, at_ms=at_ms)
        return
    if seq > last + 1:
        _open_gap(tx, site, node, first=last + 1, last=seq - 1, at_ms=at_ms)
        _set_last_seq(tx, site, node, seq)
        return
    if _fill_gap(tx, site, node, seq, at_ms):
        return
    if seq == last:
        return
    _record_reset(tx, site, node, last=last, seq=seq, at_ms=at_ms)


def _record_reset(
    tx: Tx, site: str, node: str, *, last: int, seq: int, at_ms: int
) -> None:
    tx.execute(
        "UPDATE nodes SET last_seq = ?, seq_resets = seq_resets + 1, last_reset_ms = ? "
        "WHERE site = ? AND node = ?",
        (seq, at_ms, site, node),
    )
    direction = "down" if seq < last else f"up by more than {MAX_SEQ_STEP}"
    logger.warning(
        "node %s/%s sequence went %s from %d to %d; counted as an outbox reset",
        site,
        node,
        direction,
        last,
        seq,
    )


def track_merged_seqs(
    tx: Tx, site: str, node: str, seqs: Sequence[int], at_ms: int
) -> None:
    """Record the seqs that a merged counts message absorbed as delivered.

    Call it after `track_sequence` for the message's own seq. Each absorbed
    seq fills its gap or advances the node's last seq, opening a gap for
    messages in between (incidents that were not merged). A seq at or below
    the last one outside every gap was already accounted for, so it never
    counts as an outbox reset.
    """
    for seq in sorted(seqs):
        last = _last_seq(tx, site, node)
        if last is None or seq > last:
            if last is not None and seq > last + 1:
                _open_gap(tx, site, node, first=last + 1, last=seq - 1, at_ms=at_ms)
            _set_last_seq(tx, site, node, seq)
            continue
        _fill_gap(tx, site, node, seq, at_ms)


def _last_seq(tx: Tx, site: str, node: str) -> int | None:
    rows = tx.execute(
        "SELECT last_seq FROM nodes WHERE site = ? AND node = ?", (site, node)
    )
    return None if not rows or rows[0][0] is None else int(rows[0][0])


def seq_conflict(  # noqa: PLR0913
    tx: Tx,
    site: str,
    node: str,
    *,
    seq: int,
    last: int | None,
    message_id: str,
    at_ms: int,
) -> str | None:
    """Check whether a new counts or incident message reuses a seq.

    A node's outbox never gives one seq to two messages, except after the
    outbox was reset, and a reset shows as a seq that goes down (see
    `track_sequence`). A new message id with the node's current last seq
    therefore reuses it, unless a reset was recorded after the earlier
    message with that seq arrived. Such a conflict is counted on the node.
    Call it before the message is stored, with the node row locked and
    `last` as `mark_seen` returned it.

    Returns:
        A description of the conflict for the dead letter, or None.
    """
    if last != seq:
        return None
    if tx.execute("SELECT 1 FROM messages WHERE message_id = ?", (message_id,)):
        return None
    earlier = tx.execute(
        "SELECT message_id, received_ms FROM messages WHERE site = ? AND node = ? "
        "AND kind IN ('counts', 'incident') AND seq = ? "
        "ORDER BY received_ms DESC LIMIT 1",
        (site, node, seq),
    )
    reset = tx.execute(
        "SELECT last_reset_ms FROM nodes WHERE site = ? AND node = ?", (site, node)
    )
    reset_ms = reset[0][0] if reset else None
    if earlier and reset_ms is not None and int(reset_ms) > int(earlier[0][1]):
        return None
    tx.execute(
        "UPDATE nodes SET seq_conflicts = seq_conflicts + 1, "
        "last_seq_conflict_ms = ? WHERE site = ? AND node = ?",
        (at_ms, site, node),
    )
    used_by = (
        f"message {earlier[0][0]} received {ms_iso(int(earlier[0][1]))}"
        if earlier
        else "a message no longer kept"
    )
    logger.warning(
        "node %s/%s reused seq %d for message %s (already %s); not applied",
        site,
        node,
        seq,
        message_id,
        used_by,
    )
    return (
        f"seq {seq} of node {site}/{node} was already used by {used_by} and no "
        "outbox reset was recorded since; the counts are not added twice"
    )


def _set_last_seq(tx: Tx, site: str, node: str, seq: int) -> None:
    tx.execute(
        "UPDATE nodes SET last_seq = ? WHERE site = ? AND node = ?", (seq, site, node)
    )


def _open_gap(
    tx: Tx, site: str, node: str, *, first: int, last: int, at_ms: int
) -> None:
    tx.execute(
        "INSERT INTO seq_gaps (site, node, first_seq, last_seq, missing, opened_ms) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (site, node, first, last, last - first + 1, at_ms),
    )
    logger.warning("node %s/%s is missing seq %d-%d", site, node, first, last)


def _fill_gap(tx: Tx, site: str, node: str, seq: int, at_ms: int) -> bool:
    rows = tx.execute(
        "SELECT id, first_seq, last_seq, opened_ms FROM seq_gaps WHERE site = ? AND "
        "node = ? AND closed_ms IS NULL AND first_seq <= ? AND last_seq >= ?",
        (site, node, seq, seq),
    )
    if not rows:
        return False
    gap_id, first, last, opened_ms = rows[0]
    if first == last:
        tx.execute(
            "UPDATE seq_gaps SET missing = 0, closed_ms = ? WHERE id = ?",
            (at_ms, gap_id),
        )
        return True
    if seq in (first, last):
        first, last = (first + 1, last) if seq == first else (first, last - 1)
        tx.execute(
            "UPDATE seq_gaps SET first_seq = ?, last_seq = ?, missing = ? WHERE id = ?",
            (first, last, last - first + 1, gap_id),
        )
        return True
    tx.execute(
        "UPDATE seq_gaps SET last_seq = ?, missing = ? WHERE id = ?",
        (seq - 1, seq - first, gap_id),
    )
    tx.execute(
        "INSERT INTO seq_gaps (site, node, first_seq, last_seq, missing, opened_ms) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (site, node, seq + 1, last, last - seq, opened_ms),
    )
    return True


def sweep_offline(tx: Tx, offline_after_s: float, now: int) -> list[tuple[str, str]]:
    """Mark online nodes silent for longer than `offline_after_s` as offline.

    Returns:
        The (site, node) pairs marked offline.
    """
    cutoff = now - int(offline_after_s * 1000)
    rows = tx.execute(
        "SELECT site, node FROM nodes WHERE state = 'online' AND last_seen_ms < ?",
        (cutoff,),
    )
    silent = [(str(site), str(node)) for site, node in rows]
    for site, node in silent:
        _set_state(
            tx, site, node, state="offline", reason="heartbeat_timeout", at_ms=now
        )
    return silent


def list_nodes(db: Database, site: str | None = None) -> list[dict[str, Any]]:
    """Return every node with its open sequence gaps."""
    where, params = ("WHERE site = ?", (site,)) if site else ("", ())
    rows = db.query(
        f"SELECT {_NODE_COLUMNS} FROM nodes {where} ORDER BY site, node", params
    )
    gaps = open_gaps(db, site)
    names = [name.strip() for name in _NODE_COLUMNS.split(",")]
    result = []
    for row in rows:
        record = dict(zip(names, row, strict=True))
        key = (record["site"], record["node"])
        result.append(_node_view(record, gaps.get(key, [])))
    return result


def _node_view(record: dict[str, Any], gaps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "site": record["site"],
        "node": record["node"],
        "state": record["state"],
        "state_reason": record["state_reason"],
        "state_since": ms_iso(record["state_since_ms"]),
        "last_seen": ms_iso(record["last_seen_ms"]),
        "last_heartbeat": ms_iso(record["last_heartbeat_ms"]),
        "software_version": record["software_version"],
        "model": {"name": record["model_name"], "sha256": record["model_sha256"]},
        "config_version": record["config_version"],
        "fps": record["fps"],
        "target_fps": record["target_fps"],
        "inference_ms": record["inference_ms"],
        "outbox_depth": record["outbox_depth"],
        "source_state": record["source_state"],
        "last_seq": record["last_seq"],
        "seq_resets": record["seq_resets"],
        "last_seq_reset": ms_iso(record["last_reset_ms"]),
        "seq_conflicts": record["seq_conflicts"],
        "last_seq_conflict": ms_iso(record["last_seq_conflict_ms"]),
        "missing_messages": sum(gap["missing"] for gap in gaps),
        "seq_gaps": gaps,
    }


def open_gaps(
    db: Database, site: str | None = None
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Return the open sequence gaps per (site, node)."""
    where, params = ("AND site = ?", (site,)) if site else ("", ())
    rows = db.query(
        "SELECT site, node, first_seq, last_seq, missing, opened_ms FROM seq_gaps "
        f"WHERE closed_ms IS NULL {where} ORDER BY site, node, first_seq",
        params,
    )
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for site_id, node, first, last, missing, opened_ms in rows:
        found.setdefault((site_id, node), []).append(
            {
                "first_seq": first,
                "last_seq": last,
                "missing": missing,
                "opened": ms_iso(opened_ms),
            }
        )
    return found


def list_gaps(
    db: Database, site: str | None, node: str | None, include_closed: bool
) -> list[dict[str, Any]]:
    """Return sequence gaps, open ones only unless `include_closed`."""
    clauses: list[str] = ["1 = 1"]
    params: list[Any] = []
    if site:
        clauses.append("site = ?")
        params.append(site)
    if node:
        clauses.append("node = ?")
        params.append(node)
    if not include_closed:
        clauses.append("closed_ms IS NULL")
    rows = db.query(
        "SELECT site, node, first_seq, last_seq, missing, opened_ms, closed_ms "
        "FROM seq_gaps "
        f"WHERE {' AND '.join(clauses)} ORDER BY site, node, first_seq",
        params,
    )
    return [
        {
            "site": row[0],
            "node": row[1],
            "first_seq": row[2],
            "last_seq": row[3],
            "missing": row[4],
            "opened": ms_iso(row[5]),
            "closed": ms_iso(row[6]),
        }
        for row in rows
    ]
