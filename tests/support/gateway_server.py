"""Run a whole gateway (MQTT, writer, HTTP API) in this process or as a subprocess."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

from gateway.api import create_app
from gateway.config import GatewayConfig, parse_config
from gateway.service import Gateway
from tests.support.broker import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]


def gateway_config(
    broker_url: str, db_url: str, **sections: dict[str, Any]
) -> GatewayConfig:
    """Return a configuration for a test gateway on a free API port."""
    data: dict[str, Any] = {
        "mqtt": {"url": broker_url, "client_id": "test-gateway"},
        "store": {"url": db_url},
        "api": {"listen": f"127.0.0.1:{free_port()}", "stream_poll_s": 0.05},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data)


class InProcessGateway:
    """A gateway with its API served by uvicorn on a thread."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.gateway = Gateway(config)
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(self.gateway.db, config, self.gateway.status),
                host=config.api.host,
                port=config.api.port,
                log_level="warning",
                timeout_graceful_shutdown=2,
            )
        )
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{self.config.api.listen}"

    def start(self) -> InProcessGateway:
        """Start and wait until MQTT is subscribed and the API listens."""
        self.gateway.start()
        self._thread.start()
        wait_for_port(self.config.api.port)
        if not self.gateway.mqtt.connected.wait(10):
            raise TimeoutError("test gateway did not connect to the broker in 10 s")
        return self

    def stop(self) -> None:
        """Stop the API and the gateway."""
        self.server.should_exit = True
        self._thread.join(10)
        self.gateway.stop()
        self.gateway.db.close()


def start_subprocess(
    broker_url: str, db_url: str, client_id: str, log_path: Path
) -> subprocess.Popen[bytes]:
    """Start `python -m gateway.cli run` and return its process."""
    port = free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "run",
                "--mqtt",
                broker_url,
                "--db",
                db_url,
                "--listen",
                f"127.0.0.1:{port}",
                "--client-id",
                client_id,
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_for_port(port, timeout_s=30)
    return process


def publisher(broker_url: str, client_id: str = "test-publisher") -> mqtt.Client:
    """Return a connected MQTT 5 publisher with its network loop running."""
    host, port = broker_url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(100)
    client.connect(host, int(port))
    client.loop_start()
    return client


def wait_until(
    condition: Callable[[], bool], timeout_s: float, description: str
) -> None:
    """Poll `condition` every 50 ms; raise AssertionError when it times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {description}")
