"""The node against a real Mosquitto: schemas, retained status, Last Will."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.messages import validate
from tests.support.broker import Broker

pytestmark = [pytest.mark.mqtt, pytest.mark.media]


class Recorder:
    """A paho subscriber that keeps every message under `sitlab/v1/#`."""

    def __init__(self, broker: Broker) -> None:
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"rec-{time.time_ns()}"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe("sitlab/v1/#", qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(5)

    def _on_message(
        self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage
    ) -> None:
        with self._lock:
            self.messages.append(
                (message.topic, json.loads(message.payload), bool(message.retain))
            )

    def snapshot(self) -> list[tuple[str, dict[str, Any], bool]]:
        with self._lock:
            return list(self.messages)

    def wait_for(
        self, predicate: Any, timeout_s: float = 20.0
    ) -> tuple[str, dict[str, Any], bool]:  # noqa: ANN401
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for item in self.snapshot():
                if predicate(item):
                    return item
            time.sleep(0.05)
        raise AssertionError(f"no matching message within {timeout_s} s")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def node_command(
    source: list[str], model: Path, broker: Broker, outbox: Path, line: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edge.cli",
        "run",
        *source,
        "--model",
        str(model),
        "--site",
        "lab",
        "--node",
        "cam-01",
        "--line",
        line,
        "--interval",
        "10",
        "--mqtt",
        broker.url,
        "--outbox",
        str(outbox),
    ]


def test_vtest_end_to_end_messages_validate(
    broker: Broker, vtest_avi: Path, models_dir: Path, tmp_path: Path
) -> None:
    recorder = Recorder(broker)
    try:
        command = node_command(
            ["--source", str(vtest_avi)],
            models_dir / "yolov8n_320_fp32.onnx",
            broker,
            tmp_path / "outbox.sqlite3",
            "road:384,0,384,576",
        )
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, result.stderr[-2000:]
        recorder.wait_for(
            lambda m: m[1].get("kind") == "status" and m[1]["state"] == "offline"
        )
        messages = recorder.snapshot()
    finally:
        recorder.close()

    kinds = [payload["kind"] for _topic, payload, _retain in messages]
    assert kinds.count("counts") == 8  # 79.5 s of stream in 10 s intervals
    for topic, payload, _retain in messages:
        validate(payload)
        assert topic == f"sitlab/v1/lab/cam-01/{payload['kind']}"
    seqs = [p["seq"] for _t, p, _r in messages if p["kind"] == "counts"]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    crossings = sum(
        row["in"] + row["out"]
        for _t, p, _r in messages
        if p["kind"] == "counts"
        for row in p["lines"]
    )
    assert crossings > 0

    late = Recorder(broker)
    try:
        _topic, status, retained = late.wait_for(lambda m: m[0].endswith("/status"), 5)
    finally:
        late.close()
    assert retained
    assert status["state"] == "offline"
    assert status["reason"] == "stopped"


def test_last_will_when_node_killed(
    broker: Broker, tud_campus: Path, models_dir: Path, tmp_path: Path
) -> None:
    recorder = Recorder(broker)
    command = node_command(
        ["--source", str(tud_campus), "--fps", "25"],
        models_dir / "yolov8n_640_fp32.onnx",
        broker,
        tmp_path / "outbox.sqlite3",
        "door:320,0,320,480",
    )
    log_path = tmp_path / "node.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    try:
        try:
            recorder.wait_for(
                lambda m: m[0].endswith("/status") and m[1]["state"] == "online", 60
            )
        except AssertionError:
            raise AssertionError(log_path.read_text()[-3000:]) from None
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        _topic, will, _retain = recorder.wait_for(
            lambda m: m[0].endswith("/status") and m[1]["state"] == "offline", 30
        )
    finally:
        if process.poll() is None:
            process.kill()
        recorder.close()
    assert will["reason"] == "connection_lost"
    validate(will)

    late = Recorder(broker)
    try:
        _topic, status, retained = late.wait_for(lambda m: m[0].endswith("/status"), 5)
    finally:
        late.close()
    assert retained
    assert status["reason"] == "connection_lost"
