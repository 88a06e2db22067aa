"""A TCP proxy between a node and its broker that can cut or stall the link.

It also reads the MQTT packets that pass through, so a test can measure how
many QoS 1 publishes were on the wire without a PUBACK at any time.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

from tests.support.broker import free_port

PUBLISH = 3
PUBACK = 4
_POLL_S = 0.1


class MqttStream:
    """Splits one direction of an MQTT byte stream into packets."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Add bytes; return the complete packets as (type, flags, body)."""
        self._buffer += data
        packets = []
        while True:
            parsed = self._next_packet()
            if parsed is None:
                return packets
            packets.append(parsed)

    def _next_packet(self) -> tuple[int, int, bytes] | None:
        if len(self._buffer) < 2:
            return None
        length = 0
        shift = 0
        index = 1
        while True:
            if index >= len(self._buffer):
                return None
            byte = self._buffer[index]
            length |= (byte & 0x7F) << shift
            shift += 7
            index += 1
            if not byte & 0x80:
                break
        end = index + length
        if len(self._buffer) < end:
            return None
        header = self._buffer[0]
        body = bytes(self._buffer[index:end])
        del self._buffer[:end]
        return header >> 4, header & 0x0F, body


@dataclass
class LinkStats:
    """What the proxy saw on all connections so far."""

    connections: int = 0
    qos1_publishes: int = 0
    pubacks: int = 0
    max_unacked: int = 0
    publish_topics: list[str] = field(default_factory=list)


class _Link:
    """One node connection and its upstream twin."""

    def __init__(self, proxy: TcpProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = socket.create_connection(proxy.upstream, timeout=5)
        self.unacked: set[int] = set()
        self.closed = threading.Event()
        self.held = bytearray()
        self.send_lock = threading.Lock()
        self.up_parser = MqttStream()
        self.down_parser = MqttStream()
        for target in (self._pump_up, self._pump_down):
            threading.Thread(target=target, daemon=True).start()

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _receive(self, sock: socket.socket) -> bytes | None:
        try:
            sock.settimeout(_POLL_S)
        except OSError:  # closed by cut() before this pump started
            return None
        while not self.closed.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                self._flush_held()
                continue
            except OSError:
                return None
            return data or None
        return None

    def _pump_up(self) -> None:
        while (data := self._receive(self.client)) is not None:
            self._count_up(data)
            try:
                self.upstream.sendall(data)
            except OSError:
                break
        self.close()

    def _pump_down(self) -> None:
        while (data := self._receive(self.upstream)) is not None:
            with self.proxy.lock:
                self.held += data
            self._flush_held()
        self.close()

    def _flush_held(self) -> None:
        # One sender at a time, so held bytes keep their order.
        with self.send_lock:
            with self.proxy.lock:
                if self.proxy.acks_stalled or not self.held:
                    return
                data = bytes(self.held)
                self.held.clear()
            self._count_down(data)
            with contextlib.suppress(OSError):
                self.client.sendall(data)

    def _count_up(self, data: bytes) -> None:
        stats = self.proxy.stats
        for kind, flags, body in self.up_parser.feed(data):
            qos = (flags >> 1) & 0x03
            if kind != PUBLISH or qos == 0:
                continue
            topic_length = int.from_bytes(body[:2], "big")
            packet_id = int.from_bytes(body[2 + topic_length : 4 + topic_length], "big")
            with self.proxy.lock:
                stats.qos1_publishes += 1
                stats.publish_topics.append(body[2 : 2 + topic_length].decode())
                self.unacked.add(packet_id)
                stats.max_unacked = max(stats.max_unacked, len(self.unacked))

    def _count_down(self, data: bytes) -> None:
        for kind, _, body in self.down_parser.feed(data):
            if kind == PUBACK:
                with self.proxy.lock:
                    self.proxy.stats.pubacks += 1
                    self.unacked.discard(int.from_bytes(body[:2], "big"))


class TcpProxy:
    """Forwards 127.0.0.1:`port` to the broker, with a switch to break the link.

    `cut()` closes every connection and closes new ones at once until
    `restore()`. `stall_acks()` holds back everything the broker sends
    (PUBACKs, PINGRESPs) until `release_acks()`.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.lock = threading.Lock()
        self.stats = LinkStats()
        self.acks_stalled = False
        self._refusing = False
        self._links: list[_Link] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(_POLL_S)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """MQTT URL that reaches the broker through this proxy."""
        return f"mqtt://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._refusing:
                client.close()
                continue
            try:
                link = _Link(self, client)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.stats.connections += 1
                self._links.append(link)

    def cut(self) -> None:
        """Break every connection and refuse new ones."""
        self._refusing = True
        with self.lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    def restore(self) -> None:
        """Accept connections again."""
        self._refusing = False

    def stall_acks(self) -> None:
        """Hold back all bytes from the broker to the node."""
        with self.lock:
            self.acks_stalled = True

    def release_acks(self) -> None:
        """Forward the held bytes and stop holding."""
        with self.lock:
            self.acks_stalled = False

    def open_links(self) -> int:
        """Return how many connections are open."""
        with self.lock:
            return sum(not link.closed.is_set() for link in self._links)

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._stopped.set()
        self.cut()
        self._server.close()
        self._thread.join(2)
