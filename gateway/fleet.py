"""Fleet operation: config requests, staged model roll-outs, inventory and metrics.

The gateway publishes node-bound requests on `sitlab/v1/{site}/{node}/config/set`
and `.../model/set` (formats in docs/deployment.md) and follows the nodes'
`config_state` and `model_state` replies. A config request's state is read
from the stored `config_state` messages. Roll-out targets are updated by
`apply_model_state` on the writer thread. A `RolloutDriver` thread publishes
the next stage once every node of the current one reports `applied`.
"""
# No `from __future__ import annotations`: FastAPI reads the dependencies in
# the annotations of the nested endpoint functions at definition time.

import hashlib
import json
import logging
import math
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import paho.mqtt.client as mqtt
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.messages import Topic
from edge.remote import REFUSED_SECTIONS, REQUEST_ID_PATTERN
from edge.rollout import MODEL_NAME_PATTERN
from gateway import auth
from gateway.config import GatewayConfig
from gateway.ingest import REASONS
from gateway.mqtt_client import BrokerAddress
from gateway.store import Database, Tx
from gateway.timeutil import ms_iso, now_ms

logger = logging.getLogger(__name__)

MODELS_DIR_ENV = "SITLAB_GATEWAY_MODELS_DIR"
PUBLIC_URL_ENV = "SITLAB_GATEWAY_PUBLIC_URL"
DEFAULT_MODELS_DIR = Path("/var/lib/sitlab-gateway/models")
MAX_CONFIG_BYTES = 256 * 1024
MAX_MODEL_BYTES = 512 * 1024 * 1024
CHUNK_BYTES = 1 << 20
# How far back a config_state reply may be stamped before its request was
# recorded: the request row commits after the publish, so a fast node can
# reply first.
REPLY_SLACK_MS = 5_000

# Order of a roll-out target's states; a reply never moves a target back.
STATE_RANK = {
    "queued": 0,
    "pending": 1,
    "downloading": 2,
    "verified": 3,
    "applied": 4,
    "failed": 4,
    "rolled_back": 4,
}
FAILED_STATES = frozenset({"failed", "rolled_back"})

Require = Callable[[str], Any]
Status = Callable[[], dict[str, Any]]


class FleetError(ValueError):
    """A fleet request that cannot be carried out; the message names the fix."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class PublishError(RuntimeError):
    """The broker did not take a node-bound message."""


# -- request bodies ------------------------------------------------------------


class ConfigBody(BaseModel):
    """Body of POST /api/v1/nodes/{site}/{node}/config."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    request_id: str | None = Field(
        None,
        pattern=REQUEST_ID_PATTERN,
        description="Echoed by the node; generated when left out.",
    )
    config: dict[str, Any] | None = Field(
        None, description="A whole node config that replaces the current one."
    )
    patch: dict[str, Any] | None = Field(
        None, description="A JSON merge patch (RFC 7396) on the node's config."
    )

    @model_validator(mode="after")
    def _one_body(self) -> "ConfigBody":
        if (self.config is None) == (self.patch is None):
            raise ValueError(
                "give exactly one of 'config' (a whole config) and 'patch' "
                "(a JSON merge patch)"
            )
        return self


class RolloutBody(BaseModel):
    """Body of POST /api/v1/rollouts."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(pattern=MODEL_NAME_PATTERN, description="Model name.")
    sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="Lower-case hex digest; required with url, checked with file.",
    )
    url: str | None = Field(
        None, max_length=2048, description="Where the nodes download the model."
    )
    file: str | None = Field(
        None,
        pattern=MODEL_NAME_PATTERN,
        description="A file in the gateway's models directory, served to the nodes.",
    )
    targets: list[str] = Field(
        default_factory=list, description='Nodes as "site/node".'
    )
    share: float | None = Field(
        None, ge=0.0, le=1.0, description="Fraction of all known nodes to add."
    )
    stages: list[float] | None = Field(
        None,
        min_length=1,
        max_length=20,
        description="Cumulative fractions of the targets, e.g. [0.1, 0.5, 1.0].",
    )
    max_bytes: int | None = Field(
        None, ge=1, le=2**63 - 1, description="Largest download a node accepts."
    )

    @model_validator(mode="after")
    def _one_source(self) -> "RolloutBody":
        if (self.url is None) == (self.file is None):
            raise ValueError(
                "give exactly one of 'url' (the nodes download from there) and "
                "'file' (a model in the gateway's models directory)"
            )
        if self.url is not None and self.sha256 is None:
            raise ValueError("sha256 is required with url; give the file's digest")
        if not self.targets and self.share is None:
            raise ValueError("give targets (a list of 'site/node'), share, or both")
        return self


# -- settings and the MQTT publisher ---------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """Where served models live and how nodes reach the gateway.

    Attributes:
        models_dir: models uploaded to or placed on the gateway.
        public_url: base URL the nodes download models from; None uses the
            address the admin's roll-out request came in on.
        poll_s: how often the roll-out driver looks for finished stages;
            lower advances stages sooner and costs one query per poll.
    """

    models_dir: Path = DEFAULT_MODELS_DIR
    public_url: str | None = None
    poll_s: float = 0.5

    @classmethod
    def from_env(cls) -> "FleetSettings":
        """Read SITLAB_GATEWAY_MODELS_DIR and SITLAB_GATEWAY_PUBLIC_URL."""
        public_url = os.environ.get(PUBLIC_URL_ENV) or None
        return cls(
            models_dir=Path(os.environ.get(MODELS_DIR_ENV) or DEFAULT_MODELS_DIR),
            public_url=public_url.rstrip("/") if public_url else None,
        )


class FleetPublisher:
    """An MQTT 5 client that sends node-bound requests with QoS 1.

    It connects on the first publish, so an API without a reachable broker
    still starts, and waits for the broker's PUBACK before returning.
    """

    def __init__(self, url: str, client_id: str, timeout_s: float = 5.0) -> None:
        self.address = BrokerAddress.parse(url)
        self.client_id = client_id
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._client: mqtt.Client | None = None

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish and wait for the broker to take the message.

        Raises:
            PublishError: the broker is unreachable or did not acknowledge.
        """
        client = self._connect()
        info = client.publish(topic, payload, qos=qos)
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError) as error:
            raise PublishError(f"publishing on {topic} failed: {error}") from None
        if not info.is_published():
            raise PublishError(
                f"broker {self.address.host}:{self.address.port} did not acknowledge "
                f"{topic} within {self.timeout_s} s"
            )

    def _connect(self) -> mqtt.Client:
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
            client = self._client
        if not self._connected.wait(self.timeout_s):
            raise PublishError(
                f"cannot reach broker {self.address.host}:{self.address.port} within "
                f"{self.timeout_s} s; check mqtt.url and that the broker runs"
            )
        return client

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
        )
        if self.address.username is not None:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            client.tls_set()
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = lambda *_args: self._connected.set()
        client.on_disconnect = lambda *_args: self._connected.clear()
        client.connect_async(self.address.host, self.address.port, keepalive=30)
        client.loop_start()
        return client

    def close(self) -> None:
        """Disconnect when connected."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()


Publish = Callable[[str, bytes], None]


def node_topic(site: str, node: str, leaf: str) -> str:
    """Return `sitlab/v1/{site}/{node}/{leaf}`."""
    return str(Topic(site, node, leaf))


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _known(db: Database, site: str, node: str) -> bool:
    return bool(
        db.query("SELECT 1 FROM nodes WHERE site = ? AND node = ?", (site, node))
    )


# -- config requests ------------------------------------------------------------


def _check_config_body(site: str, node: str, body: ConfigBody) -> None:
    if body.patch is not None:
        refused = sorted(REFUSED_SECTIONS & body.patch.keys())
        if refused:
            raise FleetError(
                f"patch changes {', '.join(refused)}, which a remote request may "
                "not change (a wrong broker or outbox setting cuts the node off); "
                "edit the config file on the node"
            )
    if body.config is not None:
        for field, value in (("site", site), ("node", node)):
            if body.config.get(field) != value:
                raise FleetError(
                    f"config.{field} is {body.config.get(field)!r} but the request "
                    f"is for {field} {value!r}; a whole config must keep the "
                    "node's site and node"
                )


def submit_config(
    db: Database,
    publish: Publish,
    target: tuple[str, str],
    body: ConfigBody,
    actor: str,
) -> dict[str, Any]:
    """Check a config request, publish it to the node and record it.

    Raises:
        FleetError: unknown node, refused section, a used request id or a
            body larger than MAX_CONFIG_BYTES.
        PublishError: the broker did not take the request.
    """
    site, node = target
    if not _known(db, site, node):
        raise FleetError(
            f"node {site}/{node} is not known; a node is listed after its first "
            "message reaches the gateway",
            404,
        )
    _check_config_body(site, node, body)
    request_id = body.request_id or f"cfg-{secrets.token_hex(8)}"
    if db.query("SELECT 1 FROM config_requests WHERE request_id = ?", (request_id,)):
        raise FleetError(
            f"request_id {request_id!r} was used before; leave it out to get a new one",
            409,
        )
    message: dict[str, Any] = {"request_id": request_id, "site": site, "node": node}
    message.update(
        {"patch": body.patch} if body.patch is not None else {"config": body.config}
    )
    payload = _encode(message)
    if len(payload) > MAX_CONFIG_BYTES:
        raise FleetError(
            f"config request is {len(payload)} bytes; the limit is {MAX_CONFIG_BYTES}",
            413,
        )
    created_ms = now_ms()
    publish(node_topic(site, node, "config/set"), payload)
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO config_requests (request_id, site, node, actor, created_ms, "
            "body_sha256, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                request_id,
                site,
                node,
                actor,
                created_ms,
                hashlib.sha256(payload).hexdigest(),
                payload.decode(),
            ),
        )
    logger.info("config request %s sent to %s/%s by %s", request_id, site, node, actor)
    return {"request_id": request_id, "site": site, "node": node, "state": "sent"}


def config_request(db: Database, request_id: str) -> dict[str, Any]:
    """Return a config request with the node's replies, oldest first.

    `state` is the newest reply's state, or `sent` before any reply.

    Raises:
        FleetError: no request with this id (404).
    """
    rows = db.query(
        "SELECT site, node, actor, created_ms, body_sha256 FROM config_requests "
        "WHERE request_id = ?",
        (request_id,),
    )
    if not rows:
        raise FleetError(f"no config request with id {request_id!r}", 404)
    site, node, actor, created_ms, body_sha256 = rows[0]
    replies = [
        reply
        for reply in _replies(db, site, node, "config_state", created_ms)
        if reply["request_id"] == request_id
    ]
    last = replies[-1] if replies else None
    return {
        "request_id": request_id,
        "site": site,
        "node": node,
        "requested_by": actor,
        "requested_at": ms_iso(created_ms),
        "body_sha256": body_sha256,
        "state": last["state"] if last else "sent",
        "reason": last.get("reason") if last else None,
        "config_version": last.get("config_version") if last else None,
        "replies": replies,
    }


def _replies(
    db: Database, site: str, node: str, kind: str, since_ms: int
) -> list[dict[str, Any]]:
    rows = db.query(
        "SELECT payload, received_ms FROM messages WHERE site = ? AND node = ? "
        "AND kind = ? AND received_ms >= ? ORDER BY received_ms, sent_ms",
        (site, node, kind, since_ms - REPLY_SLACK_MS),
    )
    found = []
    for payload, received_ms in rows:
        message = json.loads(payload)
        found.append(
            {
                "request_id": message["request_id"],
                "state": message["state"],
                "reason": message.get("reason"),
                "config_version": message.get("config_version"),
                "sent_at": message["sent_at"],
                "received_at": ms_iso(received_ms),
            }
        )
    return found


# -- roll-outs: planning -------------------------------------------------------------


def parse_node_ref(text: str) -> tuple[str, str]:
    """Split "site/node".

    Raises:
        FleetError: not of that form.
    """
    site, slash, node = text.partition("/")
    if not slash or not site or not node or "/" in node:
        raise FleetError(f'target {text!r} is not of the form "site/node"')
    return site, node


def check_stages(stages: Sequence[float] | None) -> tuple[float, ...]:
    """Return the stages, [1.0] when none are given.

    Raises:
        FleetError: not increasing within (0, 1], or not ending at 1.0.
    """
    if not stages:
        return (1.0,)
    previous = 0.0
    for index, value in enumerate(stages):
        if not previous < value <= 1.0:
            raise FleetError(
                f"stages[{index}] is {value}; stages must increase within (0, 1], "
                "e.g. [0.1, 0.5, 1.0]"
            )
        previous = value
    if stages[-1] != 1.0:
        raise FleetError(
            f"the last stage is {stages[-1]}; it must be 1.0 so every target is reached"
        )
    return tuple(stages)


def _rank_key(rollout_id: str, site: str, node: str) -> str:
    return hashlib.sha256(f"{rollout_id}/{site}/{node}".encode()).hexdigest()


def pick_share(
    rollout_id: str, nodes: Iterable[tuple[str, str]], share: float
) -> list[tuple[str, str]]:
    """Pick ceil(share * n) nodes, ordered by a hash of the roll-out and node ids.

    The same roll-out id picks the same nodes every time; another id picks
    another subset, so successive roll-outs do not always hit the same nodes.
    """
    ordered = sorted(nodes, key=lambda key: _rank_key(rollout_id, *key))
    count = math.ceil(share * len(ordered) - 1e-9)
    return ordered[:count]


def assign_stages(
    rollout_id: str, targets: Iterable[tuple[str, str]], stages: Sequence[float]
) -> list[tuple[str, str, int]]:
    """Assign each target the first stage whose cumulative share covers it."""
    ordered = sorted(set(targets), key=lambda key: _rank_key(rollout_id, *key))
    total = len(ordered)
    ends = [math.ceil(fraction * total - 1e-9) for fraction in stages]
    assigned = []
    for position, (site, node) in enumerate(ordered):
        stage = next(index for index, end in enumerate(ends) if position < end)
        assigned.append((site, node, stage))
    return assigned


def _resolve_targets(
    db: Database, rollout_id: str, body: RolloutBody
) -> list[tuple[str, str]]:
    known = [
        (str(site), str(node))
        for site, node in db.query("SELECT site, node FROM nodes ORDER BY site, node")
    ]
    chosen = [parse_node_ref(text) for text in body.targets]
    unknown = [f"{site}/{node}" for site, node in chosen if (site, node) not in known]
    if unknown:
        raise FleetError(
            f"unknown target nodes: {', '.join(unknown)}; a node is listed after "
            "its first message reaches the gateway"
        )
    if body.share is not None:
        chosen += pick_share(rollout_id, known, body.share)
    if not chosen:
        raise FleetError(
            f"the roll-out targets no node (share {body.share} of {len(known)} "
            "known nodes); raise share or list targets"
        )
    return chosen


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where the nodes fetch a roll-out's model from."""

    sha256: str
    url: str
    file: str | None
    token: str | None


def _model_source(
    body: RolloutBody, settings: FleetSettings, base_url: str
) -> ModelSource:
    if body.url is not None:
        parts = urlsplit(body.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FleetError(
                f"url {body.url!r} must be http:// or https:// with a host; nodes "
                "download only over HTTP"
            )
        return ModelSource(str(body.sha256), body.url, None, None)
    name = str(body.file)
    path = settings.models_dir / name
    if not path.is_file():
        raise FleetError(
            f"file {name!r} is not in the models directory {settings.models_dir}; "
            f"upload it with PUT /api/v1/models/{name}"
        )
    digest = file_sha256(path)
    if body.sha256 is not None and body.sha256 != digest:
        raise FleetError(
            f"sha256 {body.sha256} does not match file {name!r}, whose sha256 is "
            f"{digest}; leave sha256 out to use the file's"
        )
    token = secrets.token_urlsafe(24)
    url = f"{base_url}/api/v1/models/{quote(name)}?token={token}"
    return ModelSource(digest, url, name, token)


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# -- roll-outs: storing, publishing, replies ------------------------------------------


def create_rollout(
    db: Database,
    body: RolloutBody,
    *,
    actor: str,
    settings: FleetSettings,
    base_url: str,
) -> str:
    """Check a roll-out, record it with its targets; the driver publishes stage 0.

    Raises:
        FleetError: a bad source, stage list or target.
    """
    rollout_id = f"ro-{secrets.token_hex(8)}"
    stages = check_stages(body.stages)
    source = _model_source(body, settings, base_url)
    targets = assign_stages(rollout_id, _resolve_targets(db, rollout_id, body), stages)
    at_ms = now_ms()
    token_hash = (
        hashlib.sha256(source.token.encode()).hexdigest() if source.token else None
    )
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO rollouts (rollout_id, name, sha256, url, file, token_sha256, "
            "max_bytes, actor, created_ms, stages, stage, status, updated_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 'running', ?)",
            (
                rollout_id,
                body.name,
                source.sha256,
                source.url,
                source.file,
                token_hash,
                body.max_bytes,
                actor,
                at_ms,
                json.dumps(list(stages)),
                at_ms,
            ),
        )
        tx.executemany(
            "INSERT INTO rollout_targets (rollout_id, site, node, stage, state, "
            "updated_ms) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    rollout_id,
                    site,
                    node,
                    stage,
                    "pending" if stage == 0 else "queued",
                    at_ms,
                )
                for site, node, stage in targets
            ],
        )
    logger.info(
        "roll-out %s of model %s to %d nodes in %d stages by %s",
        rollout_id,
        body.name,
        len(targets),
        len(stages),
        actor,
    )
    return rollout_id


def publish_due(db: Database, publish: Publish) -> int:
    """Publish the announcement to every target of a running roll-out not yet sent.

    A target whose publish fails stays unsent and is tried again next time.

    Returns:
        How many announcements were published.
    """
    rows = db.query(
        "SELECT r.rollout_id, r.name, r.sha256, r.url, r.max_bytes, t.site, t.node "
        "FROM rollouts r JOIN rollout_targets t ON t.rollout_id = r.rollout_id "
        "WHERE r.status = 'running' AND t.stage <= r.stage AND t.published_ms IS NULL "
        "ORDER BY r.created_ms, t.stage, t.site, t.node"
    )
    sent = 0
    for rollout_id, name, sha256, url, max_bytes, site, node in rows:
        announcement = {
            "request_id": rollout_id,
            "name": name,
            "url": url,
            "sha256": sha256,
        }
        if max_bytes is not None:
            announcement["max_bytes"] = int(max_bytes)
        try:
            publish(node_topic(site, node, "model/set"), _encode(announcement))
        except PublishError as error:
            logger.warning(
                "roll-out %s to %s/%s not sent yet: %s", rollout_id, site, node, error
            )
            continue
        with db.transaction() as tx:
            tx.execute(
                "UPDATE rollout_targets SET published_ms = ?, updated_ms = ?, "
                "state = CASE WHEN state = 'queued' THEN 'pending' ELSE state END "
                "WHERE rollout_id = ? AND site = ? AND node = ?",
                (now_ms(), now_ms(), rollout_id, site, node),
            )
        sent += 1
    return sent


def apply_model_state(tx: Tx, message: dict[str, Any], at_ms: int) -> None:
    """Record a node's model_state reply on its roll-out target (writer thread).

    A reply never moves a target back (a late `downloading` after `applied`
    is ignored). `failed` or `rolled_back` halts the roll-out.
    """
    site, node, rollout_id = message["site"], message["node"], message["request_id"]
    state, reason = message["state"], message.get("reason")
    rows = tx.execute(
        "SELECT state FROM rollout_targets WHERE rollout_id = ? AND site = ? "
        "AND node = ?",
        (rollout_id, site, node),
    )
    if not rows or state not in STATE_RANK:
        return
    if STATE_RANK[state] < STATE_RANK.get(str(rows[0][0]), 0):
        return
    tx.execute(
        "UPDATE rollout_targets SET state = ?, reason = ?, updated_ms = ? "
        "WHERE rollout_id = ? AND site = ? AND node = ?",
        (state, reason, at_ms, rollout_id, site, node),
    )
    if state in FAILED_STATES:
        tx.execute(
            "UPDATE rollouts SET status = 'halted', status_reason = ?, updated_ms = ? "
            "WHERE rollout_id = ? AND status = 'running'",
            (
                f"{site}/{node} {state}: {reason or 'no reason given'}",
                at_ms,
                rollout_id,
            ),
        )
        logger.warning(
            "roll-out %s halted: %s/%s %s (%s)", rollout_id, site, node, state, reason
        )


def advance_finished(db: Database) -> list[str]:
    """Move each running roll-out whose current stage is all `applied` on.

    The last stage finishing marks the roll-out `done`. The conditional
    update lets two gateway instances race without advancing twice.

    Returns:
        The ids of the roll-outs that moved to a new stage or finished.
    """
    rows = db.query(
        "SELECT r.rollout_id, r.stage, r.stages FROM rollouts r "
        "WHERE r.status = 'running' AND NOT EXISTS (SELECT 1 FROM rollout_targets t "
        "WHERE t.rollout_id = r.rollout_id AND t.stage <= r.stage "
        "AND t.state <> 'applied')"
    )
    moved = []
    for rollout_id, stage, stages in rows:
        last = len(json.loads(stages)) - 1
        with db.transaction() as tx:
            if stage >= last:
                done = tx.execute(
                    "UPDATE rollouts SET status = 'done', updated_ms = ? "
                    "WHERE rollout_id = ? AND stage = ? AND status = 'running' "
                    "RETURNING rollout_id",
                    (now_ms(), rollout_id, stage),
                )
            else:
                done = tx.execute(
                    "UPDATE rollouts SET stage = stage + 1, updated_ms = ? "
                    "WHERE rollout_id = ? AND stage = ? AND status = 'running' "
                    "RETURNING rollout_id",
                    (now_ms(), rollout_id, stage),
                )
        if done:
            logger.info(
                "roll-out %s finished stage %d of %d", rollout_id, stage + 1, last + 1
            )
            moved.append(str(rollout_id))
    return moved


def advance(db: Database, rollout_id: str) -> None:
    """Move a roll-out to its next stage by hand, also after a halt.

    Raises:
        FleetError: no such roll-out (404), or it has no further stage (409).
    """
    rows = db.query(
        "SELECT stage, stages, status FROM rollouts WHERE rollout_id = ?", (rollout_id,)
    )
    if not rows:
        raise FleetError(f"no roll-out with id {rollout_id!r}", 404)
    stage, stages, status = rows[0]
    last = len(json.loads(stages)) - 1
    if stage >= last:
        raise FleetError(
            f"roll-out {rollout_id} is at its last stage ({stage + 1} of {last + 1}, "
            f"{status}); there is no stage to advance to",
            409,
        )
    with db.transaction() as tx:
        tx.execute(
            "UPDATE rollouts SET stage = ?, status = 'running', status_reason = NULL, "
            "updated_ms = ? WHERE rollout_id = ? AND stage = ?",
            (stage + 1, now_ms(), rollout_id, stage),
        )
    logger.info("roll-out %s advanced by hand to stage %d", rollout_id, stage + 2)


def rollout(db: Database, rollout_id: str) -> dict[str, Any]:
    """Return a roll-out with the state of every target node.

    Raises:
        FleetError: no roll-out with this id (404).
    """
    rows = db.query(
        "SELECT name, sha256, url, file, max_bytes, actor, created_ms, stages, stage, "
        "status, status_reason, updated_ms FROM rollouts WHERE rollout_id = ?",
        (rollout_id,),
    )
    if not rows:
        raise FleetError(f"no roll-out with id {rollout_id!r}", 404)
    (
        name,
        sha256,
        url,
        file,
        max_bytes,
        actor,
        created,
        stages,
        stage,
        status,
        why,
        updated,
    ) = rows[0]
    targets = db.query(
        "SELECT site, node, stage, state, reason, published_ms, updated_ms "
        "FROM rollout_targets WHERE rollout_id = ? ORDER BY stage, site, node",
        (rollout_id,),
    )
    return {
        "rollout_id": rollout_id,
        "name": name,
        "sha256": sha256,
        "url": None if file else url,
        "file": file,
        "max_bytes": max_bytes,
        "requested_by": actor,
        "created_at": ms_iso(created),
        "stages": json.loads(stages),
        "stage": stage,
        "status": status,
        "status_reason": why,
        "updated_at": ms_iso(updated),
        "nodes": [
            {
                "site": row[0],
                "node": row[1],
                "stage": row[2],
                "state": row[3],
                "reason": row[4],
                "published_at": ms_iso(row[5]),
                "updated_at": ms_iso(row[6]),
            }
            for row in targets
        ],
    }


class RolloutDriver:
    """A thread that publishes due announcements and advances finished stages.

    It runs while some roll-out is `running` and stops by itself when none
    is; `wake` starts it again.
    """

    def __init__(self, db: Database, publish: Publish, poll_s: float) -> None:
        self.db = db
        self.publish = publish
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Start the thread unless it runs."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="gateway-rollouts", daemon=True
            )
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def step(self) -> bool:
        """Do one round; return True while some roll-out is still running."""
        publish_due(self.db, self.publish)
        if advance_finished(self.db):
            publish_due(self.db, self.publish)
        return bool(self.db.query("SELECT 1 FROM rollouts WHERE status = 'running'"))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.step():
                    return
            except Exception:
                logger.exception("roll-out driver round failed; retrying")
            self._stop.wait(self.poll_s)


# -- inventory and metrics ------------------------------------------------------------


def inventory(db: Database, site: str | None = None) -> list[dict[str, Any]]:
    """Return every node with its position, versions, last contact and outbox."""
    where, params = ("WHERE n.site = ?", (site,)) if site else ("", ())
    rows = db.query(
        "SELECT n.site, n.node, n.state, n.state_reason, n.last_seen_ms, "
        "n.last_heartbeat_ms, n.software_version, n.model_name, n.model_sha256, "
        "n.config_version, n.outbox_depth, n.source_state, p.x, p.y "
        "FROM nodes n LEFT JOIN node_positions p "
        "ON p.site = n.site AND p.node = n.node "
        f"{where} ORDER BY n.site, n.node",
        params,
    )
    return [
        {
            "site": row[0],
            "node": row[1],
            "state": row[2],
            "state_reason": row[3],
            "position": None if row[12] is None else {"x": row[12], "y": row[13]},
            "software_version": row[6],
            "model": {"name": row[7], "sha256": row[8]},
            "config_version": row[9],
            "last_seen": ms_iso(row[4]),
            "last_heartbeat": ms_iso(row[5]),
            "outbox_depth": row[10],
            "source_state": row[11],
        }
        for row in rows
    ]


def _label(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value:g}" for labels, value in samples]
    return lines


def metrics_text(db: Database, status: dict[str, Any] | None = None) -> str:
    """Return the gateway's figures in the Prometheus text format 0.0.4."""
    counters = {str(k): int(v) for k, v in db.query("SELECT name, value FROM counters")}
    stored = sorted(
        (name.removeprefix("accepted."), value)
        for name, value in counters.items()
        if name.startswith("accepted.")
    )
    dead = {reason: counters.get(f"dead_letter.{reason}", 0) for reason in REASONS}
    states = {"online": 0, "offline": 0, "unknown": 0}
    for state, count in db.query("SELECT state, COUNT(*) FROM nodes GROUP BY state"):
        states[str(state)] = int(count)
    incidents = db.query(
        "SELECT type, state, COUNT(*) FROM incidents WHERE state <> 'resolved' "
        "GROUP BY type, state ORDER BY type, state"
    )
    rollouts = db.query(
        "SELECT status, COUNT(*) FROM rollouts GROUP BY status ORDER BY status"
    )
    lines = _family(
        "sitlab_gateway_messages_stored_total",
        "counter",
        "Node messages stored, by kind.",
        [(f"{{kind={_label(kind)}}}", value) for kind, value in stored],
    )
    lines += _family(
        "sitlab_gateway_duplicates_total",
        "counter",
        "Messages ignored because their message_id was stored before.",
        [("", counters.get("duplicates", 0))],
    )
    lines += _family(
        "sitlab_gateway_dead_letters_total",
        "counter",
        "Messages rejected into the dead letters, by reason.",
        [(f"{{reason={_label(r)}}}", v) for r, v in sorted(dead.items())],
    )
    lines += _family(
        "sitlab_gateway_nodes",
        "gauge",
        "Known nodes, by state.",
        [(f"{{state={_label(s)}}}", v) for s, v in sorted(states.items())],
    )
    lines += _family(
        "sitlab_gateway_open_incidents",
        "gauge",
        "Incidents not yet resolved, by type and workflow state.",
        [(f"{{type={_label(t)},state={_label(s)}}}", c) for t, s, c in incidents],
    )
    lines += _family(
        "sitlab_gateway_rollouts",
        "gauge",
        "Model roll-outs, by status.",
        [(f"{{status={_label(s)}}}", c) for s, c in rollouts],
    )
    if status is not None:
        if "writer_queue" in status:
            lines += _family(
                "sitlab_gateway_writer_queue_depth",
                "gauge",
                "Received messages waiting for the database writer.",
                [("", status["writer_queue"])],
            )
        if "mqtt_connected" in status:
            lines += _family(
                "sitlab_gateway_mqtt_connected",
                "gauge",
                "1 while the ingest client is connected to the broker.",
                [("", 1 if status["mqtt_connected"] else 0)],
            )
    return "\n".join(lines) + "\n"


# -- model files ---------------------------------------------------------------------


def _check_model_name(name: str) -> None:
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise FleetError(
            f"model file name {name!r} is invalid; use 1-128 of A-Z a-z 0-9 _ . - "
            "starting with a letter or digit"
        )


def download_allowed(db: Database, name: str, token: str | None) -> bool:
    """Return True when `token` is the download token of a roll-out of `name`."""
    if not token:
        return False
    digest = hashlib.sha256(token.encode()).hexdigest()
    return bool(
        db.query(
            "SELECT 1 FROM rollouts WHERE file = ? AND token_sha256 = ?",
            (name, digest),
        )
    )


# -- the router ------------------------------------------------------------------


_bearer = HTTPBearer(auto_error=False)


def router(  # noqa: C901, PLR0915 one nested function per endpoint
    db: Database,
    config: GatewayConfig,
    require: Require,
    status: Status | None = None,
    *,
    publisher: Publish | None = None,
    settings: FleetSettings | None = None,
) -> APIRouter:
    """Build the fleet endpoints.

    Args:
        db: the store.
        config: the gateway configuration; `mqtt.url` is where requests go.
        require: `require(role)` from gateway.api, a dependency that returns
            the caller's `auth.Principal`.
        status: the ingest figures for /metrics (writer queue, broker).
        publisher: publishes (topic, payload) with QoS 1; by default an own
            MQTT client to `mqtt.url` with client id `{client_id}-fleet`.
        settings: models directory and public URL; by default from the
            environment (`FleetSettings.from_env`).
    """
    settings = settings or FleetSettings.from_env()
    own_client = None
    if publisher is None:
        own_client = FleetPublisher(config.mqtt.url, f"{config.mqtt.client_id}-fleet")
        publisher = own_client.publish
    publish: Publish = publisher
    driver = RolloutDriver(db, publish, settings.poll_s)

    def on_shutdown() -> None:
        driver.stop()
        if own_client is not None:
            own_client.close()

    api = APIRouter(on_startup=[driver.wake], on_shutdown=[on_shutdown])
    viewer = require("viewer")
    admin = require("admin")

    def fail(error: FleetError) -> HTTPException:
        return HTTPException(error.status_code, str(error))

    @api.post("/api/v1/nodes/{site}/{node}/config", status_code=202)
    def post_config(
        site: str, node: str, body: ConfigBody, caller: Annotated[auth.Principal, admin]
    ) -> dict[str, Any]:
        """Send a config request (whole config or merge patch) to one node."""
        try:
            return submit_config(db, publish, (site, node), body, caller.name)
        except FleetError as error:
            raise fail(error) from None
        except PublishError as error:
            raise HTTPException(503, f"{error}; the request was not sent") from None

    @api.get("/api/v1/config-requests/{request_id}", dependencies=[viewer])
    def get_config_request(request_id: str) -> dict[str, Any]:
        """Show a config request and the node's replies."""
        try:
            return config_request(db, request_id)
        except FleetError as error:
            raise fail(error) from None

    @api.post("/api/v1/rollouts", status_code=202)
    def post_rollout(
        body: RolloutBody, request: Request, caller: Annotated[auth.Principal, admin]
    ) -> dict[str, Any]:
        """Start a model roll-out; stage 0 is announced at once."""
        base_url = settings.public_url or str(request.base_url).rstrip("/")
        try:
            rollout_id = create_rollout(
                db, body, actor=caller.name, settings=settings, base_url=base_url
            )
        except FleetError as error:
            raise fail(error) from None
        driver.step()
        driver.wake()
        return rollout(db, rollout_id)

    @api.get("/api/v1/rollouts/{rollout_id}", dependencies=[viewer])
    def get_rollout(rollout_id: str) -> dict[str, Any]:
        """Show a roll-out with the state of every target node."""
        try:
            return rollout(db, rollout_id)
        except FleetError as error:
            raise fail(error) from None

    @api.post("/api/v1/rollouts/{rollout_id}/advance", dependencies=[admin])
    def post_advance(rollout_id: str) -> dict[str, Any]:
        """Announce the next stage now, without waiting for `applied`."""
        try:
            advance(db, rollout_id)
        except FleetError as error:
            raise fail(error) from None
        publish_due(db, publish)
        driver.wake()
        return rollout(db, rollout_id)

    @api.put("/api/v1/models/{name}", dependencies=[admin], status_code=201)
    async def put_model(name: str, request: Request) -> dict[str, Any]:
        """Store a model file (raw request body) in the models directory."""
        try:
            _check_model_name(name)
        except FleetError as error:
            raise fail(error) from None
        return await _store_model(settings.models_dir, name, request)

    @api.get("/api/v1/models/{name}", response_class=FileResponse)
    def get_model(
        name: str,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        token: str | None = None,
    ) -> FileResponse:
        """Serve a model file to a node (roll-out token) or a viewer (bearer)."""
        allowed = download_allowed(db, name, token) or (
            credentials is not None
            and auth.authenticate(db, credentials.credentials) is not None
        )
        if not allowed:
            raise HTTPException(
                401,
                "a model download needs its roll-out's ?token= or "
                "Authorization: Bearer <token>",
            )
        path = settings.models_dir / name
        if _check_name_quietly(name) or not path.is_file():
            raise HTTPException(404, f"no model file {name!r} on this gateway")
        return FileResponse(path, media_type="application/octet-stream")

    @api.get("/api/v1/inventory", dependencies=[viewer])
    def get_inventory(site: str | None = None) -> list[dict[str, Any]]:
        """List nodes with position, state, versions, last contact and outbox."""
        return inventory(db, site)

    @api.get("/metrics", dependencies=[viewer], response_class=PlainTextResponse)
    def get_metrics() -> PlainTextResponse:
        """Prometheus text: ingest counters, nodes, incidents, writer queue."""
        return PlainTextResponse(
            metrics_text(db, status() if status else None),
            media_type="text/plain; version=0.0.4",
        )

    return api


def _check_name_quietly(name: str) -> bool:
    try:
        _check_model_name(name)
    except FleetError:
        return True
    return False


async def _store_model(models_dir: Path, name: str, request: Request) -> dict[str, Any]:
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise HTTPException(
            500, f"cannot create models directory {models_dir}: {error.strerror}"
        ) from None
    target = models_dir / name
    partial = models_dir / f".{name}.part"
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as handle:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_MODEL_BYTES:
                    raise HTTPException(
                        413, f"model is larger than {MAX_MODEL_BYTES} bytes"
                    )
                digest.update(chunk)
                handle.write(chunk)
        if size == 0:
            raise HTTPException(400, "the request body is empty; send the model bytes")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    logger.info("model file %s stored (%d bytes)", name, size)
    return {"name": name, "sha256": digest.hexdigest(), "bytes": size}
