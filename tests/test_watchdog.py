"""The systemd notify protocol, and a real node restarted when its frame loop hangs.

The end-to-end test plays systemd: it binds the notify datagram socket, starts
`python -m edge.runtime` (what `sitlab-edge serve` runs) with NOTIFY_SOCKET
and WATCHDOG_USEC, and kills and restarts the node when WATCHDOG=1 stops
arriving, as systemd does with `WatchdogSec=` and `Restart=on-failure`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from edge.watchdog import Notifier, WatchdogError
from tests.support.broker import Broker
from tests.support.video_mjpeg_server import MjpegServer, synthetic_frames

REPO = Path(__file__).resolve().parents[1]
WATCHDOG_USEC = 3_000_000


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"@sitlab-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name[1:].encode())
    sock.settimeout(0.2)
    yield name, sock
    sock.close()


def receive(sock: socket.socket, timeout_s: float) -> list[str]:
    """Return every notify message that arrives within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    messages = []
    while time.monotonic() < deadline:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return messages


@pytest.mark.parametrize(
    ("environ", "address_set", "usec"),
    [
        ({}, False, None),
        ({"NOTIFY_SOCKET": "/run/systemd/notify"}, True, None),
        ({"NOTIFY_SOCKET": "@abc", "WATCHDOG_USEC": "2000000"}, True, 2_000_000),
        (
            {"NOTIFY_SOCKET": "@abc", "WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"},
            True,
            None,
        ),
        ({"WATCHDOG_USEC": "2000000"}, False, None),
    ],
    ids=["outside-systemd", "path", "abstract-watchdog", "other-pid", "no-socket"],
)
def test_from_env(environ: dict[str, str], address_set: bool, usec: int | None) -> None:
    notifier = Notifier.from_env(environ)
    try:
        assert notifier.enabled is address_set
        assert notifier.watchdog_usec == usec
    finally:
        notifier.close()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"NOTIFY_SOCKET": "relative"}, "neither an absolute path"),
        ({"NOTIFY_SOCKET": "@a", "WATCHDOG_USEC": "3s"}, "not a whole number"),
        ({"NOTIFY_SOCKET": "@a", "WATCHDOG_USEC": "0"}, "must be above 0"),
    ],
    ids=["relative-path", "unit-suffix", "zero"],
)
def test_from_env_refuses(environ: dict[str, str], message: str) -> None:
    with pytest.raises(WatchdogError, match=message):
        Notifier.from_env(environ)


def test_messages_and_pet_rate(notify_socket: tuple[str, socket.socket]) -> None:
    name, sock = notify_socket
    notifier = Notifier(name, watchdog_usec=400_000)
    try:
        notifier.ready("up")
        for _ in range(50):
            notifier.pet()
        notifier.status("busy")
        notifier.stopping()
        messages = receive(sock, 0.5)
    finally:
        notifier.close()
    assert messages == ["READY=1\nSTATUS=up", "WATCHDOG=1", "STATUS=busy", "STOPPING=1"]
    assert notifier.pet_interval_s == pytest.approx(0.2)


def test_outside_systemd_sends_nothing() -> None:
    notifier = Notifier(None, watchdog_usec=1000)
    notifier.ready("up")
    notifier.pet()
    assert notifier.pet_interval_s is None


class FakeSystemd:
    """Starts the node like a unit with Type=notify and WatchdogSec=3."""

    def __init__(self, config: Path, name: str, sock: socket.socket, log: Path) -> None:
        self.config = config
        self.name = name
        self.sock = sock
        self.log = log
        self.starts = 0
        self.watchdog_kills = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(
            os.environ, NOTIFY_SOCKET=self.name, WATCHDOG_USEC=str(WATCHDOG_USEC)
        )
        env.pop("WATCHDOG_PID", None)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "edge.runtime", "--config", str(self.config)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def wait_ready(self, timeout_s: float) -> list[str]:
        """Return the messages up to and including READY=1."""
        deadline = time.monotonic() + timeout_s
        seen: list[str] = []
        while time.monotonic() < deadline:
            for message in receive(self.sock, 0.2):
                seen.append(message)
                if message.startswith("READY=1"):
                    return seen
        raise AssertionError(f"no READY=1 within {timeout_s} s; got {seen}")

    def supervise(self, timeout_s: float) -> bool:
        """Watch WATCHDOG=1; kill the node when one is late. True if killed."""
        last_pet = time.monotonic()
        deadline = last_pet + timeout_s
        while time.monotonic() < deadline:
            if any(m == "WATCHDOG=1" for m in receive(self.sock, 0.2)):
                last_pet = time.monotonic()
            if time.monotonic() - last_pet > WATCHDOG_USEC / 1e6:
                self.kill()
                self.watchdog_kills += 1
                return True
        return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # systemd's default WatchdogSignal is SIGABRT; SIGKILL follows.
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.mark.mqtt
def test_hung_frame_loop_gets_the_node_restarted(
    broker: Broker,
    models_dir: Path,
    tmp_path: Path,
    notify_socket: tuple[str, socket.socket],
) -> None:
    camera = MjpegServer(synthetic_frames(30, (320, 240)), fps=10)
    camera.start()
    config = tmp_path / "node.yaml"
    YAML(typ="safe").dump(
        {
            "site": "s1",
            "node": "n1",
            # A long read timeout: the hung read must be caught by the
            # watchdog, not by the source's own reconnect.
            "source": {"uri": camera.url, "read_timeout_s": 60},
            "model": {"path": str(models_dir / "yolov8n_320_fp32.onnx")},
            "mqtt": {"url": broker.url},
            "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
        },
        config,
    )
    systemd = FakeSystemd(config, notify_socket[0], notify_socket[1], tmp_path / "log")
    try:
        systemd.start()
        first = systemd.wait_ready(timeout_s=60)
        assert first[0].startswith("READY=1"), first
        assert not systemd.supervise(timeout_s=4), "watchdog fired on a live stream"

        camera.stall()
        assert systemd.supervise(timeout_s=15), "no watchdog kill on a hung stream"
        assert systemd.process is not None
        assert systemd.process.returncode == -9

        camera.resume()
        systemd.start()
        again = systemd.wait_ready(timeout_s=60)
        assert again[0].startswith("READY=1")
        assert not systemd.supervise(timeout_s=4)
        assert (systemd.starts, systemd.watchdog_kills) == (2, 1)
    finally:
        systemd.kill()
        camera.stop()
