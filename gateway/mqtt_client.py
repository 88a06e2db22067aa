"""MQTT 5 subscriber with a persistent session and acknowledgement after commit."""

from __future__ import annotations

import logging
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

logger = logging.getLogger(__name__)

TOPIC_FILTER = "sitlab/v1/+/+/#"

# Called with topic, payload and an acknowledgement to run after the commit.
MessageSink = Callable[[str, bytes, Callable[[], None]], None]


# Topic leaves the gateway publishes to nodes; ingest skips them.
GATEWAY_TO_NODE_LEAVES = ("/config/set", "/model/set")


# A failed connection attempt is logged on the first try and then on every
# LOG_EVERY_ATTEMPTS-th, so a broker that stays down does not flood the log.
LOG_EVERY_ATTEMPTS = 10


def should_log_attempt(attempt: int) -> bool:
    """Return whether failed connection attempt number `attempt` (from 1) is logged."""
    return attempt == 1 or attempt % LOG_EVERY_ATTEMPTS == 0


class MqttError(RuntimeError):
    """A broker URL that cannot be used."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Parts of an mqtt:// or mqtts:// URL."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse a broker URL; raise MqttError naming what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise MqttError(f"broker url {url!r} must start with mqtt:// or mqtts://")
        if not parts.hostname:
            raise MqttError(f"broker url {url!r} has no host")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise MqttError(f"broker url {url!r} has an invalid port") from None
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


def topic_filter(shared_group: str | None) -> str:
    """Return the subscription, as a shared subscription when a group is given."""
    return f"$share/{shared_group}/{TOPIC_FILTER}" if shared_group else TOPIC_FILTER


class MqttIngest:
    """Subscribes to every node topic and hands messages to a sink.

    The client uses `manual_ack=True`: paho does not send PUBACK on receipt,
    and the sink's acknowledgement callback sends it after the store commit.
    With `clean_start=False` and a session expiry, the broker keeps the
    session and redelivers unacknowledged messages after a crash.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        sink: MessageSink,
        *,
        shared_group: str | None = None,
        session_expiry_s: int = 86400,
        keepalive_s: int = 30,
        receive_maximum: int = 2000,
    ) -> None:
        self.address = BrokerAddress.parse(url)
        self.subscription = topic_filter(shared_group)
        self.session_expiry_s = session_expiry_s
        self.keepalive_s = keepalive_s
        self.receive_maximum = receive_maximum
        self.connected = threading.Event()
        self.failed_attempts = 0
        self._sink = sink
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if self.address.username is not None:
            self._client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            self._client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself after a loss."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.session_expiry_s
        # Acknowledgements wait for the commit, so this also caps how many
        # received messages sit in memory waiting for the writer.
        properties.ReceiveMaximum = self.receive_maximum
        self._client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=self.keepalive_s,
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()
        logger.info(
            "connecting to broker %s:%d as %s",
            self.address.host,
            self.address.port,
            self._client._client_id.decode(),  # noqa: SLF001
        )

    def stop(self) -> None:
        """Disconnect; the session stays on the broker for the expiry interval."""
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,  # noqa: ANN401
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._attempt_failed(f"the broker rejected the connection: {reason}")
            return
        self.failed_attempts = 0
        # Subscribing again on every connect is harmless with a kept session
        # and needed when the broker lost it (restart without persistence).
        client.subscribe(self.subscription, options=SubscribeOptions(qos=1))
        self.connected.set()
        logger.info(
            "connected to broker %s:%d (session present: %s), subscribed to %s",
            self.address.host,
            self.address.port,
            flags.session_present,
            self.subscription,
        )

    def _on_connect_fail(
        self,
        client: mqtt.Client,
        userdata: Any,  # noqa: ANN401
    ) -> None:
        # paho calls this inside its `except OSError` block without passing
        # the error, so the error is the exception being handled.
        error = sys.exc_info()[1]
        self._attempt_failed(str(error) if error else "unknown error")

    def _attempt_failed(self, error: str) -> None:
        self.failed_attempts += 1
        if should_log_attempt(self.failed_attempts):
            logger.warning(
                "cannot connect to broker %s:%d (attempt %d): %s; retrying every "
                "1-30 s",
                self.address.host,
                self.address.port,
                self.failed_attempts,
                error,
            )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,  # noqa: ANN401
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()
        if reason.is_failure:
            logger.warning(
                "lost broker %s:%d (%s); reconnecting",
                self.address.host,
                self.address.port,
                reason,
            )

    def _on_message(
        self,
        client: mqtt.Client,
        userdata: Any,  # noqa: ANN401
        message: mqtt.MQTTMessage,
    ) -> None:
        mid, qos = message.mid, message.qos

        def acknowledge() -> None:
            client.ack(mid, qos)

        try:
            topic = message.topic
        except UnicodeDecodeError:
            # The MQTT spec requires UTF-8 topics; keep a readable copy so
            # the message can still be dead-lettered.
            topic = message._topic.decode("utf-8", "replace")  # noqa: SLF001
        if topic.endswith(GATEWAY_TO_NODE_LEAVES):
            # The gateway's own config and model requests to nodes come back
            # through the `#` subscription; they are not node reports.
            acknowledge()
            return
        self._sink(topic, bytes(message.payload), acknowledge)
