"""The test broker itself: a persistent session must survive a restart.

The outage tests rely on it: a subscriber that reconnects after the node has
re-sent its backlog receives that backlog only from its stored session.
"""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.broker import Broker

TOPIC = "sitlab/v1/site-a/node-1/counts"


def _client(client_id: str) -> paho.Client:
    return paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )


def _connect_persistent(client: paho.Client, port: int) -> None:
    expiry = Properties(PacketTypes.CONNECT)
    expiry.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=expiry)


def _publish_one(port: int, payload: bytes) -> None:
    publisher = _client("publisher")
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    publisher.publish(TOPIC, payload, qos=1).wait_for_publish(10)
    publisher.disconnect()
    publisher.loop_stop()


@pytest.mark.mqtt
@pytest.mark.parametrize("restart", ["stop", "none"], ids=["after-restart", "steady"])
def test_persistent_session_gets_queued_message(broker: Broker, restart: str) -> None:
    received: list[bytes] = []
    message_received = threading.Event()
    subscribed = threading.Event()

    def on_message(
        client: paho.Client, userdata: object, message: paho.MQTTMessage
    ) -> None:
        received.append(bytes(message.payload))
        message_received.set()

    subscriber = _client("gateway-under-test")
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.on_message = on_message
    _connect_persistent(subscriber, broker.port)
    subscriber.loop_start()
    subscriber.subscribe(TOPIC, qos=1)
    assert subscribed.wait(10), "no SUBACK"
    subscriber.disconnect()
    subscriber.loop_stop()

    if restart == "stop":
        broker.stop()
        broker.start()
    _publish_one(broker.port, b"queued while away")

    subscriber = _client("gateway-under-test")
    subscriber.on_message = on_message
    _connect_persistent(subscriber, broker.port)
    subscriber.loop_start()
    try:
        assert message_received.wait(10), (
            "the stored session lost its subscription or message"
        )
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()
    assert received == [b"queued while away"]


@pytest.mark.mqtt
def test_broker_writes_log_and_store(broker: Broker) -> None:
    broker.stop()
    assert "New connection" in broker.log_path.read_text()
    assert (broker.workdir / "mosquitto.db").is_file()


def test_unwritable_log_is_reported(tmp_path: Path) -> None:
    workdir = tmp_path / "locked"
    workdir.mkdir()
    instance = Broker(workdir)
    # A directory in place of the log file makes the log unwritable for every
    # user, root included.
    instance.log_path.mkdir()
    try:
        with pytest.raises(RuntimeError, match="mosquitto"):
            instance.start()
    finally:
        instance.kill()
