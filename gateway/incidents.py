"""Incidents: node phases (start, update, end), gateway node_offline, and the workflow.

Two things are kept apart: `active` is the node's view (true from start to
end) and `state` is the dispatcher's workflow (open, acknowledged, resolved).
An incident that ended on the node but was never acknowledged stays open.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from gateway.store import Database, Tx
from gateway.stream import append_event
from gateway.timeutil import iso_ms, ms_iso, now_ms

logger = logging.getLogger(__name__)

STATES = ("open", "acknowledged", "resolved")
_NODE_OFFLINE_NAMESPACE = uuid.UUID("6f0c3f5e-3a51-4a3c-9d0e-5b7f8f0c2a11")

_COLUMNS = (
    "incident_id, site, node, type, rule, severity, zone, line, class, origin, active, "
    "state, started_ms, ended_ms, detail, has_evidence, acked_by, acked_ms, ack_note, "
    "resolved_by, resolved_ms, resolve_note, updated_ms"
)
_NAMES = [name.strip() for name in _COLUMNS.split(",")]


class IncidentNotFoundError(LookupError):
    """No incident with the requested id."""


class WorkflowError(ValueError):
    """A workflow step that the incident's state does not allow."""


@dataclass(frozen=True, slots=True)
class IncidentFilter:
    """Criteria of an incident listing; None means any."""

    site: str | None = None
    node: str | None = None
    type: str | None = None
    state: str | None = None
    active: bool | None = None
    from_ms: int | None = None
    to_ms: int | None = None
    limit: int = 100
    offset: int = 0


def apply_message(tx: Tx, message: dict[str, Any], at_ms: int) -> None:
    """Apply one incident phase from a node."""
    incident_id = message["incident_id"]
    phase = message["phase"]
    detail = json.dumps(message.get("detail") or {}, separators=(",", ":"))
    ended_ms = iso_ms(message["ended_at"]) if message.get("ended_at") else None
    if phase == "end" and ended_ms is None:
        ended_ms = iso_ms(message["sent_at"])
    exists = tx.execute(
        "SELECT active FROM incidents WHERE incident_id = ?", (incident_id,)
    )
    if not exists:
        tx.execute(
            f"INSERT INTO incidents ({_COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, 'node', ?, 'open', ?, ?, ?, ?, "
            "NULL, NULL, NULL, NULL, NULL, NULL, ?)",
            (
                incident_id,
                message["site"],
                message["node"],
                message["type"],
                message["rule"],
                message["severity"],
                message.get("zone"),
                message.get("line"),
                message.get("class"),
                0 if phase == "end" else 1,
                iso_ms(message["started_at"]),
                ended_ms,
                detail,
                1 if "evidence" in message else 0,
                at_ms,
            ),
        )
    elif phase == "end":
        tx.execute(
            "UPDATE incidents SET active = 0, ended_ms = ?, severity = ?, detail = ?, "
            "updated_ms = ? WHERE incident_id = ?",
            (ended_ms, message["severity"], detail, at_ms, incident_id),
        )
    else:
        # A late update after the end (out-of-order delivery) must not reopen it.
        tx.execute(
            "UPDATE incidents SET severity = ?, detail = ?, updated_ms = ?, "
            "has_evidence = CASE WHEN ? = 1 THEN 1 ELSE has_evidence END "
            "WHERE incident_id = ?",
            (
                message["severity"],
                detail,
                at_ms,
                1 if "evidence" in message else 0,
                incident_id,
            ),
        )
    _add_timeline(
        tx,
        incident_id,
        phase,
        at_ms=iso_ms(message["sent_at"]),
        message_id=message["message_id"],
        detail=detail,
    )
    _publish(tx, incident_id, phase)


def _add_timeline(
    tx: Tx,
    incident_id: str,
    action: str,
    *,
    at_ms: int,
    actor: str | None = None,
    note: str | None = None,
    message_id: str | None = None,
    detail: str | None = None,
) -> None:
    tx.execute(
        "INSERT INTO incident_events (incident_id, action, at_ms, actor, note, "
        "message_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (incident_id, action, at_ms, actor, note, message_id, detail),
    )


def _publish(tx: Tx, incident_id: str, action: str) -> None:
    rows = tx.execute(
        f"SELECT {_COLUMNS} FROM incidents WHERE incident_id = ?", (incident_id,)
    )
    view = _view(dict(zip(_NAMES, rows[0], strict=True)))
    append_event(tx, "incident", {"action": action, "incident": view})


def node_offline_id(site: str, node: str, since_ms: int) -> str:
    """Return the id of the node_offline incident that opened at `since_ms`."""
    return str(uuid.uuid5(_NODE_OFFLINE_NAMESPACE, f"{site}/{node}/{since_ms}"))


def open_node_offline(tx: Tx, site: str, node: str, reason: str, at_ms: int) -> None:
    """Open a gateway-side node_offline incident unless one is already active."""
    active = tx.execute(
        "SELECT 1 FROM incidents WHERE site = ? AND node = ? AND type = 'node_offline' "
        "AND active = 1",
        (site, node),
    )
    if active:
        return
    incident_id = node_offline_id(site, node, at_ms)
    detail = json.dumps({"reason": reason})
    tx.execute(
        f"INSERT INTO incidents ({_COLUMNS}) VALUES "
        "(?, ?, ?, 'node_offline', 'node_offline', 'high', NULL, NULL, NULL, "
        "'gateway', 1, "
        "'open', ?, NULL, ?, 0, NULL, NULL, NULL, NULL, NULL, NULL, ?)",
        (incident_id, site, node, at_ms, detail, at_ms),
    )
    _add_timeline(
        tx,
        incident_id,
        "start",
        at_ms=at_ms,
        actor="gateway",
        note=reason,
        detail=detail,
    )
    _publish(tx, incident_id, "start")


def close_node_offline(tx: Tx, site: str, node: str, at_ms: int) -> None:
    """End the node's active node_offline incident, if any."""
    rows = tx.execute(
        "SELECT incident_id FROM incidents WHERE site = ? AND node = ? "
        "AND type = 'node_offline' AND active = 1",
        (site, node),
    )
    for (incident_id,) in rows:
        tx.execute(
            "UPDATE incidents SET active = 0, ended_ms = ?, updated_ms = ? "
            "WHERE incident_id = ?",
            (at_ms, at_ms, incident_id),
        )
        _add_timeline(
            tx,
            incident_id,
            "end",
            at_ms=at_ms,
            actor="gateway",
            note="node is back online",
        )
        _publish(tx, incident_id, "end")


def acknowledge(
    db: Database, incident_id: str, actor: str, note: str | None
) -> dict[str, Any]:
    """Acknowledge an open incident.

    Raises:
        IncidentNotFoundError: when the id is unknown.
        WorkflowError: when the incident is already acknowledged or resolved.
    """
    return _step(db, incident_id, actor, note, "acknowledged")


def resolve(
    db: Database, incident_id: str, actor: str, note: str | None
) -> dict[str, Any]:
    """Resolve an open or acknowledged incident.

    Raises:
        IncidentNotFoundError: when the id is unknown.
        WorkflowError: when the incident is already resolved.
    """
    return _step(db, incident_id, actor, note, "resolved")


def _step(
    db: Database, incident_id: str, actor: str, note: str | None, target: str
) -> dict[str, Any]:
    at = now_ms()
    with db.transaction() as tx:
        suffix = " FOR UPDATE" if db.dialect == "postgres" else ""
        rows = tx.execute(
            f"SELECT state FROM incidents WHERE incident_id = ?{suffix}", (incident_id,)
        )
        if not rows:
            raise IncidentNotFoundError(f"incident {incident_id!r} not found")
        state = rows[0][0]
        allowed = {"acknowledged": ("open",), "resolved": ("open", "acknowledged")}[
            target
        ]
        if state not in allowed:
            raise WorkflowError(
                f"incident {incident_id} is {state}; it can become {target} only from "
                f"{' or '.join(allowed)}"
            )
        prefix = "acked" if target == "acknowledged" else "resolved"
        note_column = "ack_note" if target == "acknowledged" else "resolve_note"
        tx.execute(
            f"UPDATE incidents SET state = ?, {prefix}_by = ?, {prefix}_ms = ?, "
            f"{note_column} = ?, updated_ms = ? WHERE incident_id = ?",
            (target, actor, at, note, at, incident_id),
        )
        action = "ack" if target == "acknowledged" else "resolve"
        _add_timeline(tx, incident_id, action, at_ms=at, actor=actor, note=note)
        _publish(tx, incident_id, action)
    logger.info("incident %s %s by %s", incident_id, target, actor)
    return get(db, incident_id)


def list_incidents(db: Database, where: IncidentFilter) -> list[dict[str, Any]]:
    """Return incidents matching `where`, newest start first."""
    clauses: list[str] = ["1 = 1"]
    params: list[Any] = []
    for column, value in (
        ("site", where.site),
        ("node", where.node),
        ("type", where.type),
        ("state", where.state),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if where.active is not None:
        clauses.append("active = ?")
        params.append(1 if where.active else 0)
    if where.from_ms is not None:
        clauses.append("started_ms >= ?")
        params.append(where.from_ms)
    if where.to_ms is not None:
        clauses.append("started_ms < ?")
        params.append(where.to_ms)
    rows = db.query(
        f"SELECT {_COLUMNS} FROM incidents WHERE {' AND '.join(clauses)} "
        "ORDER BY started_ms DESC, incident_id LIMIT ? OFFSET ?",
        [*params, where.limit, where.offset],
    )
    return [_view(dict(zip(_NAMES, row, strict=True))) for row in rows]


def get(db: Database, incident_id: str) -> dict[str, Any]:
    """Return one incident with its timeline.

    Raises:
        IncidentNotFoundError: when the id is unknown.
    """
    rows = db.query(
        f"SELECT {_COLUMNS} FROM incidents WHERE incident_id = ?", (incident_id,)
    )
    if not rows:
        raise IncidentNotFoundError(f"incident {incident_id!r} not found")
    view = _view(dict(zip(_NAMES, rows[0], strict=True)))
    timeline = db.query(
        "SELECT action, at_ms, actor, note, message_id, detail FROM incident_events "
        "WHERE incident_id = ? ORDER BY at_ms, id",
        (incident_id,),
    )
    view["timeline"] = [
        {
            "action": action,
            "at": ms_iso(at),
            "actor": actor,
            "note": note,
            "message_id": message_id,
            "detail": json.loads(detail) if detail else None,
        }
        for action, at, actor, note, message_id, detail in timeline
    ]
    return view


def evidence(db: Database, incident_id: str) -> tuple[bytes, str] | None:
    """Return an incident's newest evidence image and content type, or None.

    The image lives in the raw message, so it is gone once retention deleted
    that message (`retention.raw_messages_days`).
    """
    rows = db.query(
        "SELECT m.payload FROM incident_events e JOIN messages m "
        "ON m.message_id = e.message_id WHERE e.incident_id = ? "
        "ORDER BY e.at_ms DESC, e.id DESC",
        (incident_id,),
    )
    for (payload,) in rows:
        found = json.loads(payload).get("evidence")
        if not found:
            continue
        try:
            image = base64.b64decode(found["data_base64"], validate=True)
        except binascii.Error:
            logger.warning(
                "incident %s has evidence that is not valid base64", incident_id
            )
            continue
        return image, str(found["content_type"])
    return None


def _view(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "incident_id": record["incident_id"],
        "site": record["site"],
        "node": record["node"],
        "type": record["type"],
        "rule": record["rule"],
        "severity": record["severity"],
        "zone": record["zone"],
        "line": record["line"],
        "class": record["class"],
        "origin": record["origin"],
        "active": bool(record["active"]),
        "state": record["state"],
        "started_at": ms_iso(record["started_ms"]),
        "ended_at": ms_iso(record["ended_ms"]),
        "detail": json.loads(record["detail"]),
        "has_evidence": bool(record["has_evidence"]),
        "acknowledged": {
            "by": record["acked_by"],
            "at": ms_iso(record["acked_ms"]),
            "note": record["ack_note"],
        }
        if record["acked_by"]
        else None,
        "resolved": {
            "by": record["resolved_by"],
            "at": ms_iso(record["resolved_ms"]),
            "note": record["resolve_note"],
        }
        if record["resolved_by"]
        else None,
        "updated_at": ms_iso(record["updated_ms"]),
    }
