"""Broker outage and node SIGKILL in one run: the gateway still counts exactly.

The node runs on vtest.avi through a real Mosquitto into a real gateway. In
the middle of the clip the broker stops for 30 s; during the outage the node
is killed with SIGKILL and started again on the same outbox. Its outbox
keeps what was counted, the resume checkpoint skips what was already
counted, and the gateway deduplicates re-sent messages, so the gateway's
per-line totals equal those of an undisturbed run of the same clip.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from edge.cli import main
from gateway.auth import create_token
from tests.support.broker import Broker
from tests.support.gateway_server import InProcessGateway, gateway_config, wait_until

pytestmark = [pytest.mark.mqtt, pytest.mark.media, pytest.mark.slow]

LINE = "road:384,0,384,576"
OUTAGE_S = 30.0


def reference_totals(
    clip: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> Counter[tuple[str, str, str]]:
    code = main(
        [
            "run",
            "--sink",
            "stdout",
            "--source",
            str(clip),
            "--model",
            str(model),
            "--line",
            LINE,
            "--interval",
            "10",
        ]
    )
    assert code == 0
    totals: Counter[tuple[str, str, str]] = Counter()
    for line in io.StringIO(capsys.readouterr().out):
        payload = json.loads(line)["payload"]
        if payload["kind"] != "counts":
            continue
        for row in payload["lines"]:
            totals[(row["line"], row["class"], "in")] += row["in"]
            totals[(row["line"], row["class"], "out")] += row["out"]
    return +totals


def stored_counts(gateway: InProcessGateway) -> int:
    rows = gateway.gateway.db.query(
        "SELECT COUNT(*) FROM messages WHERE kind = 'counts' AND node = 'cam-02'"
    )
    return int(rows[0][0] or 0)


def test_outage_and_sigkill_keep_gateway_totals(
    broker: Broker,
    vtest_avi: Path,
    models_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = models_dir / "yolov8n_640_fp32.onnx"
    expected = reference_totals(vtest_avi, model, capsys)
    assert sum(expected.values()) > 0

    gateway = InProcessGateway(
        gateway_config(broker.url, f"sqlite:///{tmp_path / 'gateway.sqlite3'}")
    ).start()
    command = [
        sys.executable,
        "-m",
        "edge.cli",
        "run",
        "--source",
        str(vtest_avi),
        "--model",
        str(model),
        "--line",
        LINE,
        "--interval",
        "10",
        "--site",
        "lab",
        "--node",
        "cam-02",
        "--mqtt",
        broker.url,
        "--outbox",
        str(tmp_path / "outbox.sqlite3"),
    ]
    log = (tmp_path / "node.log").open("ab")
    try:
        node = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        wait_until(lambda: stored_counts(gateway) >= 2, 300, "2 counts stored")

        broker.stop()
        outage_start = time.monotonic()
        time.sleep(5)
        node.send_signal(signal.SIGKILL)
        node.wait(10)
        node = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_start)))
        broker.start()

        assert node.wait(600) == 0, (tmp_path / "node.log").read_text()[-3000:]
        # The last run flushed its outbox on a clean stop; wait for ingest.
        time.sleep(2)
        token = create_token(gateway.gateway.db, "viewer", "resilience")
        response = httpx.get(
            f"{gateway.base_url}/api/v1/counts",
            params={"bucket": "1d", "kind": "lines", "node": "cam-02"},
            headers={"Authorization": f"Bearer {token}"},
        )
        response.raise_for_status()
    finally:
        log.close()
        gateway.stop()

    got: Counter[tuple[str, str, str]] = Counter()
    for row in response.json()["lines"]:
        got[(row["line"], row["class"], "in")] += row["in"]
        got[(row["line"], row["class"], "out")] += row["out"]
    assert +got == expected
    node_log = (tmp_path / "node.log").read_text()
    assert "resuming" in node_log
