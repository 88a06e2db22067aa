"""Broker outage and node SIGKILL in one run: the gateway loses and doubles nothing.

The node runs on vtest.avi through a real Mosquitto into a real gateway. In
the middle of the clip the broker stops for 30 s. During the outage the node
is killed with SIGKILL and started again on the same outbox. Its outbox
keeps what was counted, the resume checkpoint skips what was already
counted, and the gateway deduplicates re-sent messages. So the gateway
stores each counts interval once, and the intervals before the kill equal
those of an undisturbed run. The totals differ only where the restarted
tracker follows people differently.
"""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import time
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
INTERVAL_S = 10


# After the resume the tracker starts afresh a few seconds before the resume
# point, so its tracks can differ from those of the undisturbed run and a
# crossing can count differently. On vtest.avi that changed at most two
# crossings per direction at the resume points seen here (NOTE: an
# observation on this clip, not a bound).
RESUME_TOLERANCE = 2


def reference_intervals(
    clip: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> list[tuple[int, int]]:
    """Return (in, out) of the line per counts interval of an undisturbed run."""
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
    intervals = []
    for line in io.StringIO(capsys.readouterr().out):
        payload = json.loads(line)["payload"]
        if payload["kind"] != "counts":
            continue
        rows = payload["lines"]
        intervals.append(
            (sum(row["in"] for row in rows), sum(row["out"] for row in rows))
        )
    return intervals


def stored_intervals(gateway: InProcessGateway) -> dict[int, tuple[int, int, int]]:
    """Return seq -> (copies stored, in, out) of the node's counts messages."""
    rows = gateway.gateway.db.query(
        "SELECT m.seq, COUNT(DISTINCT m.message_id), SUM(c.n_in), SUM(c.n_out) "
        "FROM messages m JOIN count_lines c ON c.message_id = m.message_id "
        "WHERE m.kind = 'counts' AND m.node = 'cam-02' GROUP BY m.seq"
    )
    return {int(seq): (int(n), int(i), int(o)) for seq, n, i, o in rows}


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
    expected = reference_intervals(vtest_avi, model, capsys)
    assert sum(n_in + n_out for n_in, n_out in expected) > 0

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
        ended_during_outage = node.poll() is not None
        broker.start()

        assert node.wait(600) == 0, (tmp_path / "node.log").read_text()[-3000:]
        if ended_during_outage:
            # On a quiet machine the restarted node reaches the end of the
            # clip before the broker is back and keeps what it could not
            # send. A start on the counted clip then only drains the outbox.
            node = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
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
        stored = stored_intervals(gateway)
        dead_letters = gateway.gateway.db.query("SELECT reason FROM dead_letters")
    finally:
        log.close()
        gateway.stop()

    node_log = (tmp_path / "node.log").read_text()
    resumed = re.search(r"resuming .* at ([0-9.]+) s of stream time", node_log)
    assert resumed is not None, node_log[-3000:]
    # Nothing lost, nothing doubled: one stored message per interval.
    assert sorted(stored) == list(range(1, len(expected) + 1))
    assert all(copies == 1 for copies, _, _ in stored.values())
    assert dead_letters == []
    # Intervals counted before the kill match the undisturbed run exactly.
    counted_before = int(float(resumed.group(1)) // INTERVAL_S)
    for seq in range(1, counted_before + 1):
        assert stored[seq][1:] == expected[seq - 1], seq
    total_in = sum(n_in for _, n_in, _ in stored.values())
    total_out = sum(n_out for _, _, n_out in stored.values())
    api_in = sum(row["in"] for row in response.json()["lines"])
    api_out = sum(row["out"] for row in response.json()["lines"])
    assert (api_in, api_out) == (total_in, total_out)
    assert abs(total_in - sum(n for n, _ in expected)) <= RESUME_TOLERANCE
    assert abs(total_out - sum(n for _, n in expected)) <= RESUME_TOLERANCE
