"""A real Mosquitto broker on a free loopback port, owned by one test."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until a TCP server accepts on `port`, or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(
        f"nothing accepts connections on {host}:{port} after {timeout_s} s"
    )


class Broker:
    """A Mosquitto process that a test can stop and restart on the same port.

    Persistence is on, so queued QoS 1 messages of persistent sessions survive
    a restart, as they do on a field broker. Mosquitto started as root drops
    to the `mosquitto` user, which cannot write into a test's private
    directory: the session store and the log would silently be lost. The
    broker therefore keeps the user that starts it, and `start` checks that
    it wrote its log.
    """

    def __init__(self, workdir: Path, extra_config: str = "") -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError(
                "mosquitto not found; install Debian's mosquitto package"
            )
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.extra_config = extra_config
        self.process: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def url(self) -> str:
        """MQTT URL of this broker."""
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        self.config_path.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 0\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\n" + self.extra_config
        )

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return
        self.process = subprocess.Popen(  # noqa: S603
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            code = self.process.poll()
            raise RuntimeError(
                f"mosquitto -c {self.config_path} timed out: nothing accepts on "
                f"port {self.port} (exit code {code}). Read {self.log_path}."
            ) from None
        if not self.log_path.is_file():
            raise RuntimeError(
                f"mosquitto on port {self.port}: log file {self.log_path} missing. "
                "The broker cannot write its workdir, so persistence is off too. "
                "Give the user it runs as write access to the directory."
            )

    def stop(self) -> None:
        """Stop the broker (SIGTERM, so it saves its persistence file)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Kill the broker without letting it save state."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()
        self.process = None
