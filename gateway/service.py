"""One running gateway: store, writer thread, MQTT subscriber and background tasks."""

from __future__ import annotations

import logging
import threading
from typing import Any

from gateway.config import GatewayConfig
from gateway.mqtt_client import MqttIngest
from gateway.pipeline import Writer
from gateway.retention import RetentionTask
from gateway.store import Database, open_database

logger = logging.getLogger(__name__)


class Gateway:
    """Wires the parts together; `start` and `stop` run them on threads."""

    def __init__(self, config: GatewayConfig, db: Database | None = None) -> None:
        self.config = config
        self.db = db or open_database(config.store.url, config.store.max_readers)
        self.writer = Writer(
            self.db,
            batch_max=config.store.batch_max,
            linger_s=config.store.batch_linger_ms / 1000,
            max_bytes=config.ingest.max_payload_bytes,
            keep_bytes=config.ingest.dead_letter_keep_bytes,
        )
        self.mqtt = MqttIngest(
            config.mqtt.url,
            config.mqtt.client_id,
            self.writer.submit_raw,
            shared_group=config.mqtt.shared_group,
            session_expiry_s=config.mqtt.session_expiry_s,
            keepalive_s=config.mqtt.keepalive_s,
            receive_maximum=config.mqtt.receive_maximum,
        )
        self.retention = RetentionTask(self.db, config.retention)
        self._stop = threading.Event()
        self._sweeper = threading.Thread(
            target=self._sweep, name="gateway-sweep", daemon=True
        )

    def start(self) -> None:
        """Migrate the store, then start writing, sweeping and subscribing."""
        self.db.migrate()
        self.writer.start()
        self._sweeper.start()
        self.retention.start()
        self.mqtt.start()
        logger.info("gateway started with store %s", self.db.dialect)

    def stop(self) -> None:
        """Stop subscribing, commit what is queued and stop the threads."""
        self._stop.set()
        self.mqtt.stop()
        self.writer.stop()
        self.retention.stop()
        self._sweeper.join(10)
        logger.info("gateway stopped")

    def status(self) -> dict[str, Any]:
        """Return the ingest figures that /healthz shows."""
        return {
            "mqtt_connected": self.mqtt.connected.is_set(),
            "mqtt_failed_attempts": self.mqtt.failed_attempts,
            "writer_queue": self.writer.depth(),
            "committed": self.writer.committed,
        }

    def _sweep(self) -> None:
        nodes = self.config.nodes
        while not self._stop.wait(nodes.sweep_interval_s):
            self.writer.submit_sweep(nodes.offline_after_s)
