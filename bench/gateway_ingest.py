"""Measure how fast the gateway drains a backlog of node messages into its store.

The script starts its own Mosquitto on a free loopback port. For each
consumer it creates a persistent session and disconnects. It then publishes
N counts messages (QoS 1), which the broker queues for that session. Last it
reconnects the consumer and times the drain from connect to the last message
(bare paho subscriber) or to the last commit (gateway). The bare subscriber
gives the broker-and-client ceiling to compare the gateway's figure with.

Usage:
    python bench/gateway_ingest.py [--messages 20000] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.messages import encode, envelope, topic_for, utc_iso  # noqa: E402
from gateway.config import parse_config  # noqa: E402
from gateway.mqtt_client import TOPIC_FILTER  # noqa: E402
from gateway.service import Gateway  # noqa: E402
from tests.support.broker import Broker  # noqa: E402

logger = logging.getLogger("bench")
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def messages(count: int) -> list[tuple[str, bytes]]:
    """Return `count` counts messages from 10 nodes, two line rows each."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    found = []
    for index in range(count):
        node = f"n{index % 10}"
        message = envelope("counts", "bench", node, index // 10 + 1)
        begin = start + timedelta(minutes=index // 10)
        message.update(
            interval_start=utc_iso(begin),
            interval_end=utc_iso(begin + timedelta(minutes=1)),
            lines=[
                {"line": "gate", "class": "person", "in": index % 5, "out": index % 3},
                {"line": "gate", "class": "car", "in": index % 2, "out": 0},
            ],
            zones=[],
        )
        found.append((topic_for("bench", node, "counts"), encode(message)))
    return found


def _session_client(url_port: int, client_id: str) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", url_port, clean_start=False, properties=properties)
    return client


def publish_backlog(port: int, backlog: list[tuple[str, bytes]]) -> None:
    """Publish every message with QoS 1 and wait for the broker's PUBACKs."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv5
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in backlog]
    for info in infos:
        info.wait_for_publish(60)
    client.loop_stop()
    client.disconnect()


def prepare_session(port: int, client_id: str, subscription: str) -> None:
    """Create a persistent session with a QoS 1 subscription, then leave."""
    client = _session_client(port, client_id)
    client.loop_start()
    result, mid = client.subscribe(subscription, options=SubscribeOptions(qos=1))
    time.sleep(0.5)
    client.loop_stop()
    client.disconnect()


def bare_drain(port: int, backlog: list[tuple[str, bytes]]) -> float:
    """Return messages per second a bare paho subscriber receives from the backlog."""
    prepare_session(port, "bench-bare", TOPIC_FILTER)
    publish_backlog(port, backlog)
    received = 0
    done = threading.Event()

    def on_message(
        client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        nonlocal received
        received += 1
        if received == len(backlog):
            done.set()

    started = time.monotonic()
    client = _session_client(port, "bench-bare")
    client.on_message = on_message
    client.loop_start()
    if not done.wait(600):
        raise TimeoutError(f"bare subscriber got {received} of {len(backlog)} messages")
    elapsed = time.monotonic() - started
    client.loop_stop()
    client.disconnect()
    return len(backlog) / elapsed


def gateway_drain(
    port: int, db_url: str, backlog: list[tuple[str, bytes]], client_id: str
) -> float:
    """Return messages per second the gateway commits from the backlog."""
    config = parse_config(
        {
            "mqtt": {"url": f"mqtt://127.0.0.1:{port}", "client_id": client_id},
            "store": {"url": db_url},
        }
    )
    gateway = Gateway(config)
    gateway.db.migrate()
    prepare_session(port, client_id, TOPIC_FILTER)
    publish_backlog(port, backlog)
    started = time.monotonic()
    gateway.start()
    while True:
        stored = int(gateway.db.query("SELECT COUNT(*) FROM messages")[0][0])
        if stored >= len(backlog):
            break
        if time.monotonic() - started > 900:
            raise TimeoutError(f"gateway stored {stored} of {len(backlog)} messages")
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    gateway.stop()
    gateway.db.close()
    return len(backlog) / elapsed


def report(line: str) -> None:
    """Write one result line to standard output."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    """Run the benchmark and print one line per consumer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000, help="Messages per run.")
    parser.add_argument(
        "--skip-postgres", action="store_true", help="Measure SQLite only."
    )
    parser.add_argument(
        "--postgres-admin-url",
        default=POSTGRES_ADMIN_URL,
        help=(
            "Server on which a temporary sitlab_bench_* database is created and "
            "dropped."
        ),
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    backlog = messages(args.messages)
    report(
        f"python {platform.python_version()}, {platform.machine()}, "
        f"{args.messages} messages"
    )
    with tempfile.TemporaryDirectory() as folder:
        broker = Broker(Path(folder))
        broker.start()
        try:
            report(
                f"bare paho subscriber: {bare_drain(broker.port, backlog):8.0f} msg/s"
            )
            sqlite_url = f"sqlite:///{folder}/bench.db"
            rate = gateway_drain(broker.port, sqlite_url, backlog, "bench-gw-sqlite")
            report(f"gateway, SQLite:      {rate:8.0f} msg/s")
            if not args.skip_postgres:
                name = f"sitlab_bench_{uuid.uuid4().hex[:8]}"
                with psycopg.connect(args.postgres_admin_url, autocommit=True) as admin:
                    admin.execute(f'CREATE DATABASE "{name}"')
                try:
                    base = args.postgres_admin_url.rsplit("/", 1)[0]
                    rate = gateway_drain(
                        broker.port, f"{base}/{name}", backlog, "bench-gw-pg"
                    )
                    report(f"gateway, PostgreSQL:  {rate:8.0f} msg/s")
                finally:
                    with psycopg.connect(
                        args.postgres_admin_url, autocommit=True
                    ) as admin:
                        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
