"""The node's MQTT link: drains the outbox to the broker and keeps status.

The frame loop only calls `Outbox.add` (or `MqttPublisher.add`) and
`notify()`; neither touches the network, so both return quickly even when the
broker is dead. A drain thread publishes stored messages in sequence order
with at most `inflight_max` QoS 1 publishes waiting for their PUBACK, and a
message leaves the outbox only when its PUBACK arrives.

Re-sending after a reconnect is left to paho: it keeps every unacknowledged
publish and sends it again, with the DUP flag and the same bytes, before
anything new once the CONNACK arrives. The drain thread keeps counting those
publishes as in flight, so the window limit also applies across reconnects.
A node restart loses paho's queue, and then the outbox sends the same stored
bytes again. Either way a duplicate carries the same message_id, and the
gateway deduplicates by it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.messages import SEQUENCED_KINDS, encode, envelope, topic_for, validate
from edge.mqtt_endpoint import BrokerAddress, TlsSettings, read_password
from edge.outbox import Outbox, OutboxStats

logger = logging.getLogger(__name__)

Protocol = Literal["auto", "5", "3.1.1"]
MessageCallback = Callable[[str, bytes], None]
StatusFactory = Callable[[], dict[str, Any]]

# PUBACK reason codes after which a re-send cannot succeed; the message is
# removed and counted as rejected. Other failures (quota exceeded, server busy)
# are retried after the next connect.
PERMANENT_PUBACK_FAILURES = frozenset(
    {
        0x87,  # Not authorized: the ACL forbids this topic.
        0x90,  # Topic Name invalid.
        0x95,  # Packet too large.
        0x99,  # Payload format invalid.
    }
)
UNSUPPORTED_PROTOCOL_VERSION = 0x84
# Marks a QoS 1 reply in the in-flight table: neither a status publish (None)
# nor an outbox message (a UUID), so its PUBACK removes nothing.
_REPLY = ""
REPLY_KINDS = frozenset({"config_state", "model_state"})
_IDLE_WAKE_S = 1.0


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """Health of the MQTT link for the heartbeat.

    Attributes:
        connected: whether the broker accepted the current connection.
        reconnects: successful connects after the first one.
        inflight: QoS 1 publishes waiting for their PUBACK.
        rejected: stored messages the broker refused for good (PUBACK reason
            code such as not authorized); they were removed from the outbox.
        outbox: the outbox's own stats.
    """

    connected: bool
    reconnects: int
    inflight: int
    rejected: int
    outbox: OutboxStats

    def as_heartbeat(self) -> dict[str, Any]:
        """Return the `outbox` and `mqtt_reconnects` fields of a heartbeat."""
        return {
            "outbox": self.outbox.as_heartbeat(),
            "mqtt_reconnects": self.reconnects,
        }


class MqttPublisher:
    """Publish a node's outbox, status and transient messages over MQTT.

    Args:
        outbox: the node's durable outbox.
        url: `mqtt://host[:port]` or `mqtts://host[:port]`.
        client_id: MQTT client id, unique per node.
        site: site id used in the topics.
        node: node id used in the topics.
        username: broker user; with the shipped ACL it must equal the node id.
        password: broker password. When None, it comes from `password_file`
            or the SITLAB_MQTT_PASSWORD environment variable. It is never
            logged.
        password_file: file whose first line is the password.
        tls: TLS files; required for `mqtts://` with a private CA.
        keepalive_s: MQTT keepalive. Shorter values detect a dead link and
            fire the Last Will sooner at the cost of more ping traffic.
        inflight_max: QoS 1 publishes allowed without a PUBACK. Higher values
            drain a backlog faster on links with a long round trip; lower
            values re-send fewer duplicates after a cut.
        protocol: "auto" tries MQTT 5 and falls back to 3.1.1 when the broker
            rejects the protocol version; "5" or "3.1.1" force one.
        reconnect_min_s: first delay before a reconnect attempt.
        reconnect_max_s: the delay doubles per failed attempt up to this.
        status_payload_factory: returns extra fields of the status message
            (software_version, model, config_version, started_at).
        subscriptions: (topic filter, qos) pairs subscribed on every connect.
        on_message: called with topic and payload for each message received
            on `subscriptions`, on paho's network thread.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        url: str,
        client_id: str,
        site: str,
        node: str,
        username: str | None = None,
        password: str | None = None,
        password_file: Path | None = None,
        tls: TlsSettings | None = None,
        keepalive_s: int = 30,
        inflight_max: int = 20,
        protocol: Protocol = "auto",
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        status_payload_factory: StatusFactory | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_message: MessageCallback | None = None,
    ) -> None:
        _check_limits(keepalive_s, inflight_max, reconnect_min_s, reconnect_max_s)
        if protocol not in ("auto", "5", "3.1.1"):
            raise ValueError(f"protocol={protocol!r}; expected 'auto', '5' or '3.1.1'")
        self.address = BrokerAddress.parse(url)
        self.tls = tls or (TlsSettings() if self.address.tls else None)
        if self.tls is not None:
            self.tls.check()
        self.outbox = outbox
        self.client_id = client_id
        self.site = site
        self.node = node
        self.status_topic = topic_for(site, node, "status")
        self.keepalive_s = keepalive_s
        self.inflight_max = inflight_max
        self.protocol = protocol
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._username = username
        self._password = read_password(password, password_file)
        self._status_factory = status_payload_factory or dict
        self._subscriptions = list(subscriptions)
        self._on_message = on_message

        self._cond = threading.Condition()
        self._wake = False
        self._connected = False
        self._ever_connected = False
        self._stopping = False
        self._reconnects = 0
        self._failed_attempts = 0
        self._rejected = 0
        # mid -> message_id of each QoS 1 publish without PUBACK; None marks a
        # status publish, which is not stored in the outbox.
        self._inflight: dict[int, str | None] = {}
        self._early_acks: dict[int, ReasonCode] = {}
        self._acked: list[str] = []
        self._status_due: str | None = None
        self._status_acked = threading.Event()
        self._reset_cursor = False
        self._fallback_due = False
        self._cursor = 0
        self._use_v5 = protocol != "3.1.1"
        self._client = self._build_client()
        self._drain_thread = threading.Thread(
            target=self._drain_loop, name=f"mqtt-drain-{node}", daemon=True
        )

    def __repr__(self) -> str:
        return (
            f"MqttPublisher(url={self.address.host}:{self.address.port}, "
            f"client_id={self.client_id!r}, username={self._username!r})"
        )

    def _build_client(self) -> paho.Client:
        version = (
            MQTTProtocolVersion.MQTTv5 if self._use_v5 else MQTTProtocolVersion.MQTTv311
        )
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=version,
            clean_session=None if self._use_v5 else True,
        )
        # paho's own logger is left off: it logs one ERROR per failed
        # reconnect attempt; _handle_connect_fail logs those rate-limited.
        client.max_inflight_messages_set(self.inflight_max)
        client.reconnect_delay_set(
            min_delay=max(1, round(self.reconnect_min_s)),
            max_delay=max(1, round(self.reconnect_max_s)),
        )
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        if self.tls is not None:
            client.tls_set(
                ca_certs=_str_or_none(self.tls.ca_file),
                certfile=_str_or_none(self.tls.cert_file),
                keyfile=_str_or_none(self.tls.key_file),
            )
            client.tls_insecure_set(self.tls.insecure)
        self._set_will(client)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_connect_fail = self._handle_connect_fail
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        return client

    def _set_will(self, client: paho.Client) -> None:
        will = self.status_payload("offline", "connection_lost")
        client.will_set(self.status_topic, encode(will), qos=1, retain=True)

    def status_payload(self, state: str, reason: str) -> dict[str, Any]:
        """Build a schema-valid status message that repeats the last seq."""
        payload = (
            envelope("status", self.site, self.node, seq=self.outbox.last_seq())
            | self._status_factory()
            | {"state": state, "reason": reason}
        )
        return validate(payload, "status")

    def start(self) -> None:
        """Connect in the background and start draining the outbox.

        Returns at once; connection attempts repeat with backoff until the
        broker accepts.
        """
        logger.info(
            "connecting to %s:%d as %s (tls=%s, protocol=%s)",
            self.address.host,
            self.address.port,
            self.client_id,
            self.tls is not None,
            self.protocol,
        )
        self._connect(self._client)
        self._drain_thread.start()

    def _connect(self, client: paho.Client) -> None:
        client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=self.keepalive_s,
            clean_start=True if self._use_v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
        )
        client.loop_start()

    def notify(self) -> None:
        """Wake the drain thread after an `Outbox.add`, without any network I/O."""
        with self._cond:
            self._wake = True
            self._cond.notify()

    def add(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store a message in the outbox and wake the drain thread."""
        payload = self.outbox.add(kind, body)
        self.notify()
        return payload

    def publish_transient(self, kind: str, body: dict[str, Any]) -> bool:
        """Publish a heartbeat with QoS 0, not stored.

        The envelope repeats the outbox's last seq.

        Returns:
            True when the message was handed to a connected client; False
            while the broker is unreachable, because a stale heartbeat is
            worth nothing later.
        """
        if kind in SEQUENCED_KINDS or kind == "status":
            raise ValueError(
                f"kind {kind!r} is not transient; counts and incidents go through "
                "the outbox, status through start() and stop()"
            )
        payload = (
            envelope(kind, self.site, self.node, seq=self.outbox.last_seq()) | body
        )
        validate(payload, kind)
        if not self._connected:
            return False
        info = self._client.publish(
            topic_for(self.site, self.node, kind), encode(payload)
        )
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def publish_reply(self, kind: str, body: dict[str, Any]) -> bool:
        """Publish a config_state or model_state reply with QoS 1, not stored.

        While the broker is unreachable, paho keeps the reply in its queue
        and sends it after the next connect, so a short outage does not lose
        it. A node restart does. The envelope repeats the outbox's last seq.

        Returns:
            True when paho sent or queued the reply; False when it refused
            it (its queue is full).
        """
        if kind not in REPLY_KINDS:
            raise ValueError(
                f"kind {kind!r} is not a reply; expected one of {sorted(REPLY_KINDS)}"
            )
        payload = (
            envelope(kind, self.site, self.node, seq=self.outbox.last_seq()) | body
        )
        validate(payload, kind)
        info = self._client.publish(
            topic_for(self.site, self.node, kind), encode(payload), qos=1
        )
        if info.rc not in (
            MQTTErrorCode.MQTT_ERR_SUCCESS,
            MQTTErrorCode.MQTT_ERR_NO_CONN,
        ):
            return False
        self._track(info.mid, _REPLY)
        return True

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the current connection."""
        return self._connected

    def stats(self) -> PublisherStats:
        """Return link health and outbox figures for the heartbeat."""
        with self._cond:
            connected = self._connected
            reconnects = self._reconnects
            inflight = len(self._inflight)
            rejected = self._rejected
        return PublisherStats(
            connected=connected,
            reconnects=reconnects,
            inflight=inflight,
            rejected=rejected,
            outbox=self.outbox.stats(),
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        """Drain, publish the retained offline status and disconnect.

        Waits at most `timeout_s` for the outbox to empty and again for the
        PUBACK of the offline status. Messages still waiting stay in the
        outbox for the next start.
        """
        if self._connected:
            self._wait_for_drain(timeout_s)
            with self._cond:
                self._status_acked.clear()
                self._status_due = "stopped"
                self._wake = True
                self._cond.notify()
            if not self._status_acked.wait(timeout_s):
                logger.warning(
                    "no PUBACK for the offline status within %.1f s; the broker "
                    "keeps the previous status",
                    timeout_s,
                )
        with self._cond:
            self._stopping = True
            self._wake = True
            self._cond.notify()
        if self._drain_thread.is_alive():
            self._drain_thread.join(timeout_s)
        self._client.disconnect()
        self._client.loop_stop()
        depth = self.outbox.stats().depth
        logger.info("MQTT publisher stopped; %d messages stay in the outbox", depth)

    def _wait_for_drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._connected:
            with self._cond:
                busy = bool(self._inflight or self._acked)
            if not busy and self.outbox.stats().depth == 0:
                return
            time.sleep(0.05)

    # -- paho callbacks, on paho's network thread -----------------------------

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._handle_refused(reason_code)
            return
        with self._cond:
            if self._ever_connected:
                self._reconnects += 1
            self._ever_connected = True
            self._connected = True
            self._failed_attempts = 0
            self._status_due = "started"
            self._reset_cursor = True
            self._wake = True
            self._cond.notify()
            reconnects = self._reconnects
            inflight = len(self._inflight)
        for topic_filter, qos in self._subscriptions:
            client.subscribe(topic_filter, qos)
        logger.info(
            "connected to %s:%d (reconnects=%d, %d publishes to re-send)",
            self.address.host,
            self.address.port,
            reconnects,
            inflight,
        )

    def _handle_connect_fail(self, client: paho.Client, userdata: object) -> None:
        with self._cond:
            self._failed_attempts += 1
            attempts = self._failed_attempts
        if attempts == 1 or attempts % 10 == 0:
            logger.warning(
                "cannot reach broker %s:%d (%d failed attempts so far); the outbox "
                "keeps %d messages",
                self.address.host,
                self.address.port,
                attempts,
                self.outbox.stats().depth,
            )

    def _handle_refused(self, reason_code: ReasonCode) -> None:
        if (
            reason_code.value == UNSUPPORTED_PROTOCOL_VERSION
            and self.protocol == "auto"
        ):
            logger.warning(
                "broker %s:%d rejected MQTT 5; falling back to MQTT 3.1.1",
                self.address.host,
                self.address.port,
            )
            with self._cond:
                self._fallback_due = True
                self._wake = True
                self._cond.notify()
            return
        logger.error(
            "broker %s:%d refused the connection of %s: %s; check the username, "
            "password file and client certificate",
            self.address.host,
            self.address.port,
            self.client_id,
            reason_code,
        )

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            was_connected = self._connected
            self._connected = False
            stopping = self._stopping
            inflight = len(self._inflight)
        if not stopping and was_connected:
            logger.warning(
                "lost connection to %s:%d (%s); %d publishes wait for re-send, "
                "retrying every %.0f-%.0f s",
                self.address.host,
                self.address.port,
                reason_code,
                inflight,
                self.reconnect_min_s,
                self.reconnect_max_s,
            )
        # The Will goes out with the next CONNECT; refresh its seq.
        self._set_will(client)

    def _handle_publish(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            if mid not in self._inflight:
                # The PUBACK beat the drain thread's bookkeeping.
                self._early_acks[mid] = reason_code
                return
            message_id = self._inflight.pop(mid)
            self._settle(message_id, reason_code)
            self._wake = True
            self._cond.notify()

    def _handle_message(
        self, client: paho.Client, userdata: object, message: paho.MQTTMessage
    ) -> None:
        if self._on_message is None:
            return
        try:
            self._on_message(message.topic, bytes(message.payload))
        except Exception:
            logger.exception("on_message callback failed for topic %s", message.topic)

    def _settle(self, message_id: str | None, reason_code: ReasonCode) -> None:
        """Record a PUBACK. The caller must own `_cond`."""
        if message_id is None:
            self._status_acked.set()
            return
        if message_id == _REPLY:
            if reason_code.is_failure:
                logger.warning("broker rejected a state reply (%s)", reason_code)
            return
        if not reason_code.is_failure:
            self._acked.append(message_id)
            return
        if reason_code.value in PERMANENT_PUBACK_FAILURES:
            self._rejected += 1
            self._acked.append(message_id)
            logger.error(
                "broker rejected message %s for good (%s); removed from the outbox, "
                "%d rejected so far",
                message_id,
                reason_code,
                self._rejected,
            )
            return
        self._reset_cursor = True
        logger.warning(
            "broker rejected message %s for now (%s); it is re-sent after the next "
            "connect",
            message_id,
            reason_code,
        )

    # -- drain thread ---------------------------------------------------------

    def _drain_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wake, timeout=_IDLE_WAKE_S)
                self._wake = False
                if self._stopping:
                    acked, self._acked = self._acked, []
                    self.outbox.remove(acked)
                    return
                acked, self._acked = self._acked, []
                fallback = self._fallback_due
                self._fallback_due = False
            try:
                self.outbox.remove(acked)
                if fallback:
                    self._fall_back_to_v311()
                self._fill_window()
            except Exception:
                # The thread must survive a full disk or a broken database;
                # the next wake retries.
                logger.exception(
                    "outbox drain failed; retrying in %.0f s", _IDLE_WAKE_S
                )
                time.sleep(_IDLE_WAKE_S)

    def _fill_window(self) -> None:
        with self._cond:
            if not self._connected:
                return
            room = self.inflight_max - len(self._inflight)
            status_reason, self._status_due = self._status_due, None
            if self._reset_cursor:
                self._cursor = 0
                self._reset_cursor = False
            busy = {mid_id for mid_id in self._inflight.values() if mid_id}
        if status_reason is not None:
            if room <= 0:
                with self._cond:
                    self._status_due = self._status_due or status_reason
                return
            self._publish_status(status_reason)
            room -= 1
        if room <= 0:
            return
        batch = self.outbox.pending(room, after_id=self._cursor, exclude=busy)
        if not batch:
            return
        self.outbox.mark_sent(message.row_id for message in batch)
        for message in batch:
            info = self._client.publish(message.topic, message.payload, qos=message.qos)
            if info.rc not in (
                MQTTErrorCode.MQTT_ERR_SUCCESS,
                MQTTErrorCode.MQTT_ERR_NO_CONN,
            ):
                logger.warning(
                    "paho did not queue seq %d (%s); retrying after the next connect",
                    message.seq,
                    paho.error_string(info.rc),
                )
                with self._cond:
                    self._reset_cursor = True
                return
            self._track(info.mid, message.message_id)
            self._cursor = message.row_id
        logger.debug("published seq %d-%d", batch[0].seq, batch[-1].seq)

    def _publish_status(self, reason: str) -> None:
        state = "offline" if reason == "stopped" else "online"
        payload = self.status_payload(state, reason)
        info = self._client.publish(
            self.status_topic, encode(payload), qos=1, retain=True
        )
        self._track(info.mid, None)
        logger.info("published retained status %s (%s)", state, reason)

    def _track(self, mid: int, message_id: str | None) -> None:
        with self._cond:
            early = self._early_acks.pop(mid, None)
            if early is None:
                self._inflight[mid] = message_id
                return
            self._settle(message_id, early)
            self._wake = True

    def _fall_back_to_v311(self) -> None:
        old = self._client
        old.loop_stop()
        old.disconnect()
        with self._cond:
            self._use_v5 = False
            # The old client's queue is gone; the outbox sends everything again.
            self._inflight.clear()
            self._early_acks.clear()
            self._reset_cursor = True
        self._client = self._build_client()
        self._connect(self._client)


def _check_limits(
    keepalive_s: int, inflight_max: int, reconnect_min_s: float, reconnect_max_s: float
) -> None:
    if not 1 <= keepalive_s <= 65535:
        raise ValueError(f"keepalive_s={keepalive_s}; expected seconds from 1 to 65535")
    if not 1 <= inflight_max <= 65535:
        raise ValueError(f"inflight_max={inflight_max}; expected 1 to 65535 publishes")
    if not 0 < reconnect_min_s <= reconnect_max_s:
        raise ValueError(
            f"reconnect_min_s={reconnect_min_s}, reconnect_max_s={reconnect_max_s}; "
            "expected 0 < reconnect_min_s <= reconnect_max_s"
        )


def _str_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)
