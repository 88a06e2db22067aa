"""Remote config and model roll-out on a running node, over a real broker.

The node runs in this process (so the test can read its pipeline-start
counter) on a live MJPEG stream of vtest.avi served by the test, with the
real 320 px model.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from ruamel.yaml import YAML

from edge.config import parse_config
from edge.remote import (
    ConfigRequest,
    RemoteConfigError,
    merge_patch,
    parse_request,
    plan_change,
    prepare_change,
    save_document,
)
from edge.rollout import RolloutError, check_url, parse_announcement
from edge.runtime import NodeRuntime, RuntimeSettings
from tests.support.broker import Broker
from tests.support.gateway_server import wait_until
from tests.support.video_mjpeg_server import MjpegServer, encode_clip

SITE, NODE = "s1", "n1"
ROOT = f"sitlab/v1/{SITE}/{NODE}"
LINE_A = {"name": "gate-a", "points": [[0.5, 0.0], [0.5, 1.0]]}
LINE_B = {"name": "gate-b", "points": [[0.0, 0.6], [1.0, 0.6]]}


def base_document(model: Path) -> dict[str, Any]:
    return {
        "site": SITE,
        "node": NODE,
        "config_version": "1",
        "source": {"uri": "unused.avi"},
        "model": {"path": str(model)},
        "geometry": {"units": "normalized"},
        "lines": [LINE_A],
    }


# -- pure parts: requests, merge patch, change plan, URL rule --------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{", "not JSON"),
        (b'{"request_id": "r1"}', "exactly one of 'config'"),
        (b'{"request_id": "r1", "config": {}, "patch": {}}', "exactly one of"),
        (b'{"request_id": "bad id!", "patch": {}}', "request_id"),
        (b'{"request_id": "r1", "patch": {}, "extra": 1}', "extra"),
        (b'{"request_id": ' + b"9" * 5000 + b"}", "not JSON.*digits"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    ],
    ids=[
        "not-json",
        "no-body",
        "two-bodies",
        "bad-request-id",
        "unknown-key",
        "huge-integer",
        "deep-nesting",
    ],
)
def test_bad_requests_are_refused(payload: bytes, message: str) -> None:
    with pytest.raises(RemoteConfigError, match=message):
        parse_request(payload)


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": None}}, {"a": {"x": 1}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": 1}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ],
    ids=["add-key", "null-deletes", "list-replaces", "scalar-to-object"],
)
def test_merge_patch(
    target: dict[str, Any], patch: dict[str, Any], expected: Any
) -> None:
    assert merge_patch(target, patch) == expected


@pytest.mark.parametrize(
    ("patch", "live", "restart"),
    [
        ({"lines": [LINE_A, LINE_B]}, ("lines",), ()),
        ({"config_version": "2", "zones": []}, ("config_version",), ()),
        ({"detection": {"confidence": 0.5}}, (), ("detection",)),
        (
            {"lines": [], "source": {"uri": "other.avi"}},
            ("lines",),
            ("source",),
        ),
    ],
    ids=["line-live", "version-only", "detection-restarts", "mixed"],
)
def test_plan_change(
    patch: dict[str, Any], live: tuple[str, ...], restart: tuple[str, ...]
) -> None:
    document = base_document(Path("m.onnx"))
    old = parse_config(document)
    new = parse_config(merge_patch(document, patch))
    plan = plan_change(old, new)
    assert (plan.live, plan.restart, plan.refused) == (live, restart, ())


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"patch": {"mqtt": {"url": "mqtt://127.0.0.1:1"}}}, "may not change"),
        ({"patch": {"node": "n2"}}, "may not change"),
        ({"patch": {"site": "s2"}, "site": "s2"}, "is for site 's2'"),
        ({"patch": {"config_version": "1"}}, "changes nothing"),
        (
            {"patch": {"lines": [{"name": "x", "points": [[0, 0]]}]}},
            r"lines\.0\.points",
        ),
        ({"config": {"site": SITE}}, "node: Field required"),
    ],
    ids=[
        "broker-url",
        "rename-node",
        "other-site",
        "no-change",
        "one-point-line",
        "incomplete-config",
    ],
)
def test_prepare_change_refuses(request_fields: dict[str, Any], message: str) -> None:
    document = base_document(Path("m.onnx"))
    request = ConfigRequest(request_id="r1", **request_fields)
    with pytest.raises(RemoteConfigError, match=message):
        prepare_change(request, document, parse_config(document, "t", Path()), Path())


@pytest.mark.parametrize(
    ("url", "allowed", "message"),
    [
        ("ftp://127.0.0.1/m.onnx", (), "scheme 'ftp'"),
        ("http://10.0.0.9/m.onnx", ("gw.local",), "host '10.0.0.9' is not allowed"),
        ("http://example.com/m.onnx", (), "host 'example.com' is not allowed"),
    ],
    ids=["ftp", "other-ip", "other-name"],
)
def test_model_url_refused(url: str, allowed: tuple[str, ...], message: str) -> None:
    with pytest.raises(RolloutError, match=message):
        check_url(url, allowed)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8080/api/v1/models/m", ()),
        ("http://[::1]/m", ()),
        ("https://gw.local/m", ("gw.local",)),
    ],
    ids=["ipv4-loopback", "ipv6-loopback", "configured-gateway"],
)
def test_model_url_allowed(url: str, allowed: tuple[str, ...]) -> None:
    check_url(url, allowed)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            json.dumps({"request_id": "m1", "name": "m", "url": "http://x/m"}).encode(),
            "sha256: Field required",
        ),
        (b'{"request_id": ' + b"9" * 5000 + b"}", "not JSON.*digits"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b"\xff", "not JSON"),
    ],
    ids=["no-sha256", "huge-integer", "deep-nesting", "not-utf8"],
)
def test_bad_announcement_rejected(payload: bytes, message: str) -> None:
    with pytest.raises(RolloutError, match=message):
        parse_announcement(payload)


COMMENTED = """\
# Campus node: ask the lab before moving the camera.
site: lab
node: cam-01  # pole 4
detection:
  confidence: 0.3  # tuned at dusk
lines:
  # the walkway gate
  - {name: gate, points: [[0, 0], [10, 10]]}  # painted in May
"""


@pytest.mark.parametrize(
    ("patch", "kept", "lost"),
    [
        (
            {"detection": {"confidence": 0.4}},
            ["# Campus node", "# pole 4", "# tuned at dusk", "# painted in May"],
            [],
        ),
        (
            {"lines": [{"name": "door", "points": [[1, 1], [2, 2]]}]},
            ["# Campus node", "# pole 4", "# tuned at dusk", "# the walkway gate"],
            ["# painted in May"],
        ),
        ({"node": None}, ["# Campus node", "# tuned at dusk"], ["# pole 4"]),
    ],
    ids=["value-changed", "list-replaced", "key-removed"],
)
def test_saved_config_keeps_comments(
    tmp_path: Path, patch: dict[str, Any], kept: list[str], lost: list[str]
) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(COMMENTED)
    document = YAML(typ="safe").load(COMMENTED)
    updated = merge_patch(document, patch)
    save_document(path, updated)
    text = path.read_text()
    assert YAML(typ="safe").load(text) == updated
    for comment in kept:
        assert comment in text
    for comment in lost:
        assert comment not in text
    assert (tmp_path / "node.yaml.bak").read_text() == COMMENTED


# -- a running node ----------------------------------------------------------


class StateListener:
    """Collects every message the node publishes, by topic leaf."""

    def __init__(self, broker: Broker) -> None:
        self.messages: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-test")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(f"{ROOT}/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        leaf = message.topic.removeprefix(ROOT + "/")
        if leaf.endswith("/set"):
            return
        self.messages.put((leaf, json.loads(message.payload)))

    def send(self, leaf: str, body: dict[str, Any]) -> None:
        self.client.publish(
            f"{ROOT}/{leaf}", json.dumps(body), qos=1
        ).wait_for_publish()

    def wait_for(
        self, leaf: str, timeout_s: float = 30.0, **fields: Any
    ) -> dict[str, Any]:
        deadline = threading.Event()
        timer = threading.Timer(timeout_s, deadline.set)
        timer.start()
        try:
            while not deadline.is_set():
                try:
                    got_leaf, payload = self.messages.get(timeout=0.2)
                except queue.Empty:
                    continue
                self.seen.append((got_leaf, payload))
                if got_leaf == leaf and all(
                    payload.get(k) == v for k, v in fields.items()
                ):
                    return payload
        finally:
            timer.cancel()
        raise AssertionError(f"no {leaf} message with {fields} within {timeout_s} s")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def line_names(counts: dict[str, Any]) -> set[str]:
    return {row["line"] for row in counts["lines"]}


@pytest.fixture(scope="module")
def vtest_stream(vtest_avi: Path) -> Iterator[MjpegServer]:
    server = MjpegServer(encode_clip(vtest_avi, frames=120, width=384), fps=10)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def node(
    broker: Broker, vtest_stream: MjpegServer, models_dir: Path, tmp_path: Path
) -> Iterator[tuple[NodeRuntime, StateListener]]:
    document = base_document(models_dir / "yolov8n_320_fp32.onnx")
    document["source"] = {"uri": vtest_stream.url, "read_timeout_s": 10}
    document["counts"] = {"interval_s": 2}
    document["mqtt"] = {"url": broker.url, "heartbeat_interval_s": 60}
    document["outbox"] = {"path": str(tmp_path / "state" / "outbox.sqlite3")}
    config_path = tmp_path / "node.yaml"
    YAML(typ="safe").dump(document, config_path)
    listener = StateListener(broker)
    runtime = NodeRuntime(
        config_path, settings=RuntimeSettings(probation_s=1.5, keep_every=2)
    )
    thread = threading.Thread(target=runtime.run, name="node-under-test")
    thread.start()
    try:
        listener.wait_for("counts", timeout_s=60)
        yield runtime, listener
    finally:
        runtime.stop()
        thread.join(timeout=30)
        listener.close()
    assert not thread.is_alive()


@pytest.mark.mqtt
@pytest.mark.media
def test_line_added_live_without_restart(
    node: tuple[NodeRuntime, StateListener],
) -> None:
    runtime, listener = node
    listener.send(
        "config/set",
        {
            "request_id": "add-b",
            "patch": {"config_version": "2", "lines": [LINE_A, LINE_B]},
        },
    )
    state = listener.wait_for("config/state", request_id="add-b")
    assert state["state"] == "applied", state
    assert state["config_version"] == "2"
    assert "lines" in state["reason"]

    # The counts interval in progress may have started before the change;
    # the one after it carries both lines.
    listener.wait_for("counts")
    counts = listener.wait_for("counts")
    assert line_names(counts) == {"gate-a", "gate-b"}
    assert runtime.pipeline_starts == 1

    saved = YAML(typ="safe").load(runtime.config_path)
    assert [line["name"] for line in saved["lines"]] == ["gate-a", "gate-b"]
    assert saved["config_version"] == "2"
    backup = YAML(typ="safe").load(runtime.config_path.with_name("node.yaml.bak"))
    assert backup["config_version"] == "1"


@pytest.mark.mqtt
@pytest.mark.media
def test_invalid_config_rejected_node_keeps_running(
    node: tuple[NodeRuntime, StateListener],
) -> None:
    runtime, listener = node
    before = runtime.config_path.read_text()
    bad_line = {"name": "bad", "points": [[0.1, 0.1]]}
    listener.send("config/set", {"request_id": "bad-1", "patch": {"lines": [bad_line]}})
    state = listener.wait_for("config/state", request_id="bad-1")
    assert state["state"] == "rejected"
    assert "lines.0.points" in state["reason"]
    assert state["config_version"] == "1"

    frames = runtime.frames
    counts = listener.wait_for("counts")
    assert line_names(counts) == {"gate-a"}
    assert runtime.frames > frames
    assert runtime.pipeline_starts == 1
    assert runtime.config_path.read_text() == before


@pytest.mark.mqtt
@pytest.mark.media
def test_restart_change_applied_and_failing_one_rolled_back(
    node: tuple[NodeRuntime, StateListener], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, listener = node
    # The node must release the request before its final state goes out.
    # Otherwise a gateway that sends the next request at once gets "busy".
    busy_at_final_state: list[tuple[str, str | None]] = []
    send = runtime._send  # noqa: SLF001

    def recording_send(
        kind: str, request_id: str, state: str, reason: str, model: str | None = None
    ) -> None:
        if state in ("applied", "rolled_back"):
            busy_at_final_state.append((state, runtime._busy_with))  # noqa: SLF001
        send(kind, request_id, state, reason, model)

    monkeypatch.setattr(runtime, "_send", recording_send)
    listener.send(
        "config/set",
        {
            "request_id": "conf-2",
            "patch": {"config_version": "2", "detection": {"confidence": 0.4}},
        },
    )
    state = listener.wait_for("config/state", request_id="conf-2")
    assert state["state"] == "applied", state
    assert runtime.pipeline_starts == 2
    assert runtime.config.detection.confidence == 0.4

    missing = str(runtime.config_path.parent / "no-such-clip.avi")
    listener.send(
        "config/set",
        {
            "request_id": "conf-3",
            "patch": {"config_version": "3", "source": {"uri": missing}},
        },
    )
    state = listener.wait_for("config/state", request_id="conf-3")
    assert state["state"] == "rolled_back", state
    assert "no-such-clip.avi" in state["reason"]
    assert state["config_version"] == "2"
    listener.wait_for("counts")
    assert runtime.pipeline_starts == 4
    saved = YAML(typ="safe").load(runtime.config_path)
    assert saved["config_version"] == "2"
    assert busy_at_final_state == [("applied", None), ("rolled_back", None)]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return


@pytest.fixture(scope="module")
def model_server(models_dir: Path) -> Iterator[str]:
    handler = partial(_QuietHandler, directory=str(models_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.mqtt
@pytest.mark.media
def test_model_with_wrong_sha256_refused(
    node: tuple[NodeRuntime, StateListener], model_server: str
) -> None:
    runtime, listener = node
    listener.send(
        "model/set",
        {
            "request_id": "roll-1",
            "name": "yolov8n-int8",
            "url": f"{model_server}/yolov8n_int8.onnx",
            "sha256": "0" * 64,
        },
    )
    downloading = listener.wait_for("model/state", request_id="roll-1")
    assert downloading["state"] == "downloading"
    state = listener.wait_for("model/state", request_id="roll-1")
    assert state["state"] == "failed"
    assert "sha256 mismatch" in state["reason"]
    assert state["model"] == "yolov8n-int8"
    assert runtime.pipeline_starts == 1
    assert not list((runtime.config.outbox.path.parent / "models").glob("*"))


@pytest.mark.mqtt
@pytest.mark.media
def test_model_rolled_out_after_test_run(
    node: tuple[NodeRuntime, StateListener], model_server: str, models_dir: Path
) -> None:
    runtime, listener = node
    wait_until(lambda: len(runtime.recent_frames) == 5, 30, "five recent frames")
    digest = hashlib.sha256((models_dir / "yolov8n_640_fp32.onnx").read_bytes())
    listener.send(
        "model/set",
        {
            "request_id": "roll-2",
            "name": "yolov8n-640",
            "url": f"{model_server}/yolov8n_640_fp32.onnx",
            "sha256": digest.hexdigest(),
        },
    )
    states = [
        listener.wait_for("model/state", timeout_s=60, request_id="roll-2")["state"]
        for _ in range(3)
    ]
    assert states == ["downloading", "verified", "applied"]
    assert runtime.pipeline_starts == 2
    assert runtime.config.model.sha256 == digest.hexdigest()
    saved = YAML(typ="safe").load(runtime.config_path)
    assert saved["model"]["path"].endswith(".onnx")
    assert "state/models/yolov8n-640-" in saved["model"]["path"]
