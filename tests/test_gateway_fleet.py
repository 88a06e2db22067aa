"""Gateway fleet operation: config requests, staged roll-outs, inventory, metrics.

The API runs on both stores against a real broker. Node replies are fed
through the gateway's real write path (`classify` + `apply_batch`) where
the staging logic is under test; the end-to-end tests run a real
`NodeRuntime` on vtest.avi with the real 320 px model.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from ruamel.yaml import YAML

from edge.messages import envelope
from edge.runtime import NodeRuntime, RuntimeSettings
from gateway import fleet
from gateway.api import create_app
from gateway.auth import create_token
from gateway.config import parse_config
from gateway.ingest import classify
from gateway.pipeline import apply_batch
from gateway.store import Database
from gateway.timeutil import now_ms
from tests.support import gateway_fixtures
from tests.support.broker import Broker
from tests.support.gateway_fixtures import (
    heartbeat_message,
    status_message,
    wire,
)
from tests.support.gateway_server import InProcessGateway, gateway_config, wait_until
from tests.support.video_mjpeg_server import MjpegServer, encode_clip

db = gateway_fixtures.db
db_url = gateway_fixtures.db_url
postgres_database = gateway_fixtures.postgres_database

NODES = [("s1", "n1"), ("s1", "n2"), ("s2", "n3"), ("s2", "n4")]
SHA = "ab" * 32


def ingest(database: Database, *messages: dict[str, Any]) -> None:
    apply_batch(
        database,
        [
            classify(*wire(m), max_bytes=10**6, keep_bytes=256, now_ms=now_ms())
            for m in messages
        ],
    )


def reply(
    kind: str, site: str, node: str, request_id: str, state: str, **extra: Any
) -> dict[str, Any]:
    message = envelope(kind, site, node, 0)
    message.update(request_id=request_id, state=state, **extra)
    return message


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Announcements:
    """Records every node-bound request published on the broker."""

    def __init__(self, port: int) -> None:
        self.got: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-spy")
        self.client.on_message = lambda _c, _u, m: self.got.put(
            (m.topic, json.loads(m.payload))
        )
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("sitlab/v1/+/+/+/set", qos=1)
        self.client.loop_start()
        time.sleep(0.2)

    def drain(self, settle_s: float = 0.3) -> list[tuple[str, dict[str, Any]]]:
        time.sleep(settle_s)
        while True:
            try:
                self.seen.append(self.got.get_nowait())
            except queue.Empty:
                return self.seen

    def nodes(self, leaf: str = "model/set") -> set[tuple[str, str]]:
        parts = [topic.split("/") for topic, _ in self.drain() if topic.endswith(leaf)]
        return {(p[2], p[3]) for p in parts}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv(fleet.MODELS_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def client(db: Database, broker: Broker, models: Path) -> Iterator[TestClient]:
    del models
    config = parse_config({"mqtt": {"url": broker.url, "client_id": "gw-test"}})
    with TestClient(create_app(db, config)) as test_client:
        yield test_client


@pytest.fixture
def admin(db: Database) -> dict[str, str]:
    return bearer(create_token(db, "admin", "test-admin"))


@pytest.fixture
def spy(broker: Broker) -> Iterator[Announcements]:
    announcements = Announcements(broker.port)
    yield announcements
    announcements.close()


def register(database: Database) -> None:
    ingest(database, *(status_message("online", s, n) for s, n in NODES))


# -- pure planning -------------------------------------------------------------


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([0.5, 0.5, 1.0], r"stages\[1\] is 0.5"),
        ([0.0, 1.0], r"stages\[0\] is 0.0"),
        ([0.2, 1.5], r"stages\[1\] is 1.5"),
        ([0.1, 0.5], "the last stage is 0.5"),
    ],
    ids=["not-increasing", "zero", "above-one", "not-ending-at-one"],
)
def test_bad_stages_refused(stages: list[float], message: str) -> None:
    with pytest.raises(fleet.FleetError, match=message):
        fleet.check_stages(stages)


@pytest.mark.parametrize(
    "text", ["n1", "/n1", "s1/", "s1/n1/x"], ids=["no-slash", "no-site", "no-node", "3"]
)
def test_bad_node_refs_refused(text: str) -> None:
    with pytest.raises(fleet.FleetError, match='not of the form "site/node"'):
        fleet.parse_node_ref(text)


def test_share_is_deterministic_per_rollout() -> None:
    first = fleet.pick_share("ro-1", NODES, 0.5)
    assert len(first) == 2
    assert fleet.pick_share("ro-1", list(reversed(NODES)), 0.5) == first
    picks = {tuple(fleet.pick_share(f"ro-{i}", NODES, 0.5)) for i in range(20)}
    assert len(picks) > 1, "different roll-outs should pick different subsets"


@pytest.mark.parametrize(
    ("stages", "sizes"),
    [((1.0,), [4]), ((0.25, 1.0), [1, 3]), ((0.1, 0.5, 1.0), [1, 1, 2])],
    ids=["one-stage", "canary", "three-stages"],
)
def test_assign_stages(stages: tuple[float, ...], sizes: list[int]) -> None:
    assigned = fleet.assign_stages("ro-x", NODES, stages)
    counts = [sum(1 for *_, s in assigned if s == k) for k in range(len(stages))]
    assert counts == sizes


# -- config requests through the API, replies through the write path --------------


@pytest.mark.mqtt
def test_config_request_published_and_followed(
    db: Database, client: TestClient, admin: dict[str, str], spy: Announcements
) -> None:
    register(db)
    body = {"request_id": "r-1", "patch": {"config_version": "7", "lines": []}}
    response = client.post("/api/v1/nodes/s1/n1/config", json=body, headers=admin)
    assert response.status_code == 202, response.text
    assert response.json()["request_id"] == "r-1"
    assert spy.drain() == [
        ("sitlab/v1/s1/n1/config/set", {**body, "site": "s1", "node": "n1"})
    ]
    state = client.get("/api/v1/config-requests/r-1", headers=admin).json()
    assert (state["state"], state["requested_by"]) == ("sent", "test-admin")
    sent = {"request_id": "r-1", "site": "s1", "node": "n1", "patch": body["patch"]}
    payload = json.dumps(sent, separators=(",", ":"))
    assert state["body_sha256"] == hashlib.sha256(payload.encode()).hexdigest()

    ingest(db, reply("config_state", "s1", "n1", "r-1", "applied", config_version="7"))
    state = client.get("/api/v1/config-requests/r-1", headers=admin).json()
    assert (state["state"], state["config_version"]) == ("applied", "7")
    nodes = client.get("/api/v1/inventory", headers=admin).json()
    assert next(n for n in nodes if n["node"] == "n1")["config_version"] == "7"


@pytest.mark.mqtt
@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("s1/n9", {"patch": {"lines": []}}, 404, "node s1/n9 is not known"),
        ("s1/n1", {"patch": {"mqtt": {"url": "x"}}}, 400, "patch changes mqtt"),
        ("s1/n1", {"config": {"site": "s1", "node": "n2"}}, 400, "config.node is 'n2'"),
        ("s1/n1", {"request_id": "dup", "patch": {}}, 409, "'dup' was used before"),
        ("s1/n1", {"patch": {}, "config": {}}, 422, "exactly one of"),
        ("s1/n1", {"request_id": "bad id", "patch": {}}, 422, "request_id"),
    ],
    ids=["unknown-node", "refused-section", "other-node", "used-id", "two", "bad-id"],
)
def test_config_request_refused(  # noqa: PLR0913, PLR0917 one row of the table
    db: Database,
    client: TestClient,
    admin: dict[str, str],
    path: str,
    body: dict[str, Any],
    status: int,
    message: str,
) -> None:
    register(db)
    client.post(
        "/api/v1/nodes/s1/n1/config",
        json={"request_id": "dup", "patch": {}},
        headers=admin,
    )
    response = client.post(f"/api/v1/nodes/{path}/config", json=body, headers=admin)
    assert response.status_code == status
    assert message in response.text


@pytest.mark.mqtt
def test_config_needs_admin(db: Database, client: TestClient) -> None:
    register(db)
    viewer = bearer(create_token(db, "viewer", "v"))
    response = client.post(
        "/api/v1/nodes/s1/n1/config", json={"patch": {}}, headers=viewer
    )
    assert response.status_code == 403
    assert client.get("/metrics").status_code == 401


# -- roll-outs ------------------------------------------------------------------


def start_rollout(
    client: TestClient, headers: dict[str, str], **body: Any
) -> dict[str, Any]:
    response = client.post(
        "/api/v1/rollouts",
        json={"name": "m", "url": "http://127.0.0.1:9/m.onnx", "sha256": SHA, **body},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


@pytest.mark.mqtt
def test_share_of_half_targets_exactly_two(
    db: Database, client: TestClient, admin: dict[str, str], spy: Announcements
) -> None:
    register(db)
    started = start_rollout(client, admin, share=0.5)
    targets = {(n["site"], n["node"]) for n in started["nodes"]}
    assert len(targets) == 2
    assert targets == set(fleet.pick_share(started["rollout_id"], NODES, 0.5))
    assert spy.nodes() == targets
    announcement = spy.seen[0][1]
    assert announcement == {
        "request_id": started["rollout_id"],
        "name": "m",
        "url": "http://127.0.0.1:9/m.onnx",
        "sha256": SHA,
    }


@pytest.mark.mqtt
def test_staged_rollout_advances_only_after_applied(
    db: Database, client: TestClient, admin: dict[str, str], spy: Announcements
) -> None:
    register(db)
    refs = [f"{s}/{n}" for s, n in NODES]
    started = start_rollout(client, admin, targets=refs, stages=[0.25, 1.0])
    rollout_id = started["rollout_id"]
    first = {(n["site"], n["node"]) for n in started["nodes"] if n["stage"] == 0}
    assert len(first) == 1
    assert spy.nodes() == first
    (site, node) = next(iter(first))

    ingest(db, reply("model_state", site, node, rollout_id, "verified", model="m"))
    time.sleep(1.2)  # two driver rounds: a verified node does not finish a stage
    assert spy.nodes() == first
    ingest(db, reply("model_state", site, node, rollout_id, "applied", model="m"))
    wait_until(lambda: len(spy.nodes()) == 4, 10, "the second stage")
    # A late reply never moves a node back.
    ingest(db, reply("model_state", site, node, rollout_id, "downloading"))

    for s, n in set(NODES) - first:
        ingest(db, reply("model_state", s, n, rollout_id, "applied", model="m"))

    def done() -> bool:
        url = f"/api/v1/rollouts/{rollout_id}"
        return bool(client.get(url, headers=admin).json()["status"] == "done")

    wait_until(done, 10, "the roll-out to finish")
    view = client.get(f"/api/v1/rollouts/{rollout_id}", headers=admin).json()
    assert [n["state"] for n in view["nodes"]] == ["applied"] * 4
    assert view["stage"] == 1


@pytest.mark.mqtt
def test_failure_halts_until_advanced_by_hand(
    db: Database, client: TestClient, admin: dict[str, str], spy: Announcements
) -> None:
    register(db)
    refs = [f"{s}/{n}" for s, n in NODES]
    started = start_rollout(client, admin, targets=refs, stages=[0.25, 1.0])
    rollout_id = started["rollout_id"]
    first = next(n for n in started["nodes"] if n["stage"] == 0)
    reason = "sha256 mismatch for http://127.0.0.1:9/m.onnx"
    ingest(
        db,
        reply(
            "model_state",
            first["site"],
            first["node"],
            rollout_id,
            "failed",
            reason=reason,
        ),
    )
    view = client.get(f"/api/v1/rollouts/{rollout_id}", headers=admin).json()
    assert view["status"] == "halted"
    assert view["status_reason"] == f"{first['site']}/{first['node']} failed: {reason}"
    assert [n["state"] for n in view["nodes"]] == ["failed", *["queued"] * 3]
    assert len(spy.nodes()) == 1

    response = client.post(f"/api/v1/rollouts/{rollout_id}/advance", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "running"
    assert len(spy.nodes()) == 4
    again = client.post(f"/api/v1/rollouts/{rollout_id}/advance", headers=admin)
    assert again.status_code == 409
    assert "no stage to advance to" in again.text


@pytest.mark.mqtt
@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"targets": ["s1/n9"]}, 400, "unknown target nodes: s1/n9"),
        ({"share": 0.0}, 400, "targets no node"),
        ({"share": 1, "url": "ftp://127.0.0.1/m"}, 400, "must be http"),
        ({"share": 1, "sha256": None}, 422, "sha256 is required with url"),
        ({"share": 1, "url": None}, 422, "exactly one of 'url'"),
        ({"share": 1, "url": None, "file": "none.onnx"}, 400, "not in the models"),
        ({}, 422, "give targets"),
        ({"share": 1, "stages": [0.5]}, 400, "the last stage is 0.5"),
    ],
    ids=[
        "unknown-node",
        "empty-share",
        "ftp",
        "no-sha",
        "no-source",
        "no-file",
        "no-targets",
        "stages",
    ],
)
def test_rollout_refused(  # noqa: PLR0913, PLR0917 one row of the table
    db: Database,
    client: TestClient,
    admin: dict[str, str],
    body: dict[str, Any],
    status: int,
    message: str,
) -> None:
    register(db)
    full = {"name": "m", "url": "http://127.0.0.1:9/m.onnx", "sha256": SHA, **body}
    response = client.post(
        "/api/v1/rollouts",
        json={k: v for k, v in full.items() if v is not None},
        headers=admin,
    )
    assert response.status_code == status, response.text
    assert message in response.text


@pytest.mark.mqtt
def test_model_file_served_with_rollout_token(
    db: Database, client: TestClient, admin: dict[str, str], spy: Announcements
) -> None:
    register(db)
    content = b"not really onnx" * 100
    put = client.put("/api/v1/models/m1.onnx", content=content, headers=admin)
    assert put.status_code == 201, put.text
    assert put.json()["sha256"] == hashlib.sha256(content).hexdigest()
    wrong = client.post(
        "/api/v1/rollouts",
        json={"name": "m1", "file": "m1.onnx", "sha256": SHA, "share": 1},
        headers=admin,
    )
    assert wrong.status_code == 400
    assert "does not match file 'm1.onnx'" in wrong.text

    start_rollout(client, admin, file="m1.onnx", url=None, sha256=None, share=1)
    url = spy.drain()[0][1]["url"]
    assert url.startswith("http://testserver/api/v1/models/m1.onnx?token=")
    path = url.removeprefix("http://testserver")
    assert client.get(path).content == content
    assert client.get("/api/v1/models/m1.onnx").status_code == 401
    assert client.get("/api/v1/models/m1.onnx?token=guess").status_code == 401
    assert client.get("/api/v1/models/m1.onnx", headers=admin).content == content


# -- inventory and metrics ---------------------------------------------------------


@pytest.mark.mqtt
def test_inventory_and_metrics(
    db: Database, client: TestClient, admin: dict[str, str]
) -> None:
    register(db)
    ingest(db, heartbeat_message("s1", "n1"), status_message("offline", "s2", "n4"))
    duplicate = heartbeat_message("s1", "n2")
    ingest(db, duplicate, duplicate)
    apply_batch(
        db,
        [
            classify(
                "sitlab/v1/s1/n1/counts", b"{", max_bytes=99, keep_bytes=9, now_ms=0
            )
        ],
    )
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO node_positions (site, node, x, y, updated_ms) "
            "VALUES ('s1', 'n1', 0.25, 0.75, 0)"
        )

    nodes = client.get("/api/v1/inventory", headers=admin).json()
    assert [(n["site"], n["node"], n["state"]) for n in nodes] == [
        ("s1", "n1", "online"),
        ("s1", "n2", "online"),
        ("s2", "n3", "online"),
        ("s2", "n4", "offline"),
    ]
    first = nodes[0]
    assert first["position"] == {"x": 0.25, "y": 0.75}
    assert first["outbox_depth"] == 3
    assert first["software_version"] == "0.1.0"
    assert first["last_seen"] is not None
    assert nodes[1]["position"] is None
    assert len(client.get("/api/v1/inventory?site=s2", headers=admin).json()) == 2

    text = client.get("/metrics", headers=admin).text
    for line in (
        'sitlab_gateway_messages_stored_total{kind="status"} 5',
        'sitlab_gateway_messages_stored_total{kind="heartbeat"} 2',
        "sitlab_gateway_duplicates_total 1",
        'sitlab_gateway_dead_letters_total{reason="invalid_json"} 1',
        'sitlab_gateway_dead_letters_total{reason="schema"} 0',
        'sitlab_gateway_nodes{state="online"} 3',
        'sitlab_gateway_nodes{state="offline"} 1',
        'sitlab_gateway_open_incidents{type="node_offline",state="open"} 1',
        "# TYPE sitlab_gateway_duplicates_total counter",
    ):
        assert line in text.splitlines(), f"{line!r} missing from:\n{text}"


# -- a real node behind a real gateway --------------------------------------------

SITE, NODE = "s1", "n1"
LINE_A = {"name": "gate-a", "points": [[0.5, 0.0], [0.5, 1.0]]}
LINE_B = {"name": "gate-b", "points": [[0.0, 0.6], [1.0, 0.6]]}


@pytest.fixture(scope="module")
def vtest_stream(vtest_avi: Path) -> Iterator[MjpegServer]:
    server = MjpegServer(encode_clip(vtest_avi, frames=120, width=384), fps=10)
    server.start()
    yield server
    server.stop()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return


@pytest.fixture
def model_server(models_dir: Path) -> Iterator[str]:
    handler = partial(_QuietHandler, directory=str(models_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def fleet_setup(
    broker: Broker,
    vtest_stream: MjpegServer,
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[InProcessGateway, NodeRuntime, dict[str, str]]]:
    monkeypatch.setenv(fleet.MODELS_DIR_ENV, str(models_dir))
    config = gateway_config(broker.url, f"sqlite:///{tmp_path / 'gw.db'}")
    gateway = InProcessGateway(config).start()
    token = create_token(gateway.gateway.db, "admin", "ops")
    document = {
        "site": SITE,
        "node": NODE,
        "config_version": "1",
        "source": {"uri": vtest_stream.url, "read_timeout_s": 10},
        "model": {"path": str(models_dir / "yolov8n_320_fp32.onnx")},
        "geometry": {"units": "normalized"},
        "lines": [LINE_A],
        "counts": {"interval_s": 2},
        "mqtt": {"url": broker.url, "heartbeat_interval_s": 60},
        "outbox": {"path": str(tmp_path / "state" / "outbox.sqlite3")},
    }
    config_path = tmp_path / "node.yaml"
    YAML(typ="safe").dump(document, config_path)
    runtime = NodeRuntime(
        config_path, settings=RuntimeSettings(probation_s=1.5, keep_every=2)
    )
    thread = threading.Thread(target=runtime.run, name="node-under-test")
    thread.start()
    try:
        wait_until(
            lambda: bool(fleet.inventory(gateway.gateway.db)), 60, "the node to appear"
        )
        yield gateway, runtime, bearer(token)
    finally:
        runtime.stop()
        thread.join(timeout=30)
        gateway.stop()
    assert not thread.is_alive()


def poll(
    base: str, path: str, headers: dict[str, str], done: set[str], timeout_s: float
) -> dict[str, Any]:
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    while True:
        view = httpx.get(base + path, headers=headers, timeout=5).json()
        state = view.get("state", view.get("status"))
        if state in done or time.monotonic() > deadline:
            return dict(view)
        time.sleep(0.2)


@pytest.mark.mqtt
@pytest.mark.media
def test_real_node_config_applied_and_rejected(
    fleet_setup: tuple[InProcessGateway, NodeRuntime, dict[str, str]],
) -> None:
    import httpx  # noqa: PLC0415

    gateway, runtime, headers = fleet_setup
    base = gateway.base_url
    add = {"patch": {"config_version": "2", "lines": [LINE_A, LINE_B]}}
    sent = httpx.post(
        f"{base}/api/v1/nodes/{SITE}/{NODE}/config", json=add, headers=headers
    )
    assert sent.status_code == 202, sent.text
    request_id = sent.json()["request_id"]
    view = poll(
        base,
        f"/api/v1/config-requests/{request_id}",
        headers,
        {"applied", "rejected", "rolled_back"},
        30,
    )
    assert view["state"] == "applied", view
    assert view["config_version"] == "2"
    assert runtime.pipeline_starts == 1
    assert [line.name for line in runtime.config.lines] == ["gate-a", "gate-b"]

    bad = {"patch": {"lines": [{"name": "bad", "points": [[0.1, 0.1]]}]}}
    sent = httpx.post(
        f"{base}/api/v1/nodes/{SITE}/{NODE}/config", json=bad, headers=headers
    )
    view = poll(
        base,
        f"/api/v1/config-requests/{sent.json()['request_id']}",
        headers,
        {"applied", "rejected", "rolled_back"},
        30,
    )
    assert view["state"] == "rejected", view
    assert "lines.0.points" in view["reason"]
    inventory = httpx.get(f"{base}/api/v1/inventory", headers=headers).json()
    assert inventory[0]["config_version"] == "2"


@pytest.mark.mqtt
@pytest.mark.media
def test_real_node_rollouts(
    fleet_setup: tuple[InProcessGateway, NodeRuntime, dict[str, str]],
    model_server: str,
    models_dir: Path,
) -> None:
    import httpx  # noqa: PLC0415

    gateway, runtime, headers = fleet_setup
    base = gateway.base_url
    wrong = {
        "name": "yolov8n-int8",
        "url": f"{model_server}/yolov8n_int8.onnx",
        "sha256": "0" * 64,
        "targets": [f"{SITE}/{NODE}"],
    }
    sent = httpx.post(f"{base}/api/v1/rollouts", json=wrong, headers=headers)
    assert sent.status_code == 202, sent.text
    view = poll(
        base,
        f"/api/v1/rollouts/{sent.json()['rollout_id']}",
        headers,
        {"halted", "done"},
        30,
    )
    assert view["status"] == "halted", view
    assert view["nodes"][0]["state"] == "failed"
    assert "sha256 mismatch" in view["nodes"][0]["reason"]
    assert runtime.pipeline_starts == 1

    wait_until(lambda: len(runtime.recent_frames) == 5, 30, "five recent frames")
    good = {"name": "yolov8n-640", "file": "yolov8n_640_fp32.onnx", "share": 1}
    sent = httpx.post(f"{base}/api/v1/rollouts", json=good, headers=headers)
    assert sent.status_code == 202, sent.text
    view = poll(
        base,
        f"/api/v1/rollouts/{sent.json()['rollout_id']}",
        headers,
        {"halted", "done"},
        90,
    )
    assert view["status"] == "done", view
    assert view["nodes"][0]["state"] == "applied"
    digest = hashlib.sha256((models_dir / "yolov8n_640_fp32.onnx").read_bytes())
    assert runtime.config.model.sha256 == digest.hexdigest()
    assert runtime.pipeline_starts == 2
