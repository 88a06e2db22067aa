"""The shipped broker config: TLS, per-node credentials and the topic ACL."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.mqtt import MqttPublisher
from edge.mqtt_endpoint import TlsSettings
from edge.outbox import Outbox
from tests.support.broker import free_port, wait_for_port
from tests.test_mqtt_publisher import Collector, wait_until
from tests.test_outbox import REPO, SITE, counts_body

CONFIG_DIR = REPO / "firmware-config"
SCRIPT = CONFIG_DIR / "make-node-credentials.sh"
INSTALL_DIR = "/etc/mosquitto/sitlab/"
NOT_AUTHORIZED = 0x87

pytestmark = pytest.mark.mqtt


@dataclass(frozen=True)
class SecureBroker:
    port: int
    credentials: Path

    def user_tls(self, user: str, credentials: Path | None = None) -> dict[str, Any]:
        folder = credentials or self.credentials
        return {
            "ca_certs": str(self.credentials / "ca.crt"),
            "certfile": str(folder / "users" / f"{user}.crt"),
            "keyfile": str(folder / "users" / f"{user}.key"),
        }

    def password(self, user: str) -> str:
        return (self.credentials / "users" / f"{user}.password").read_text().strip()


def make_credentials(folder: Path, *users: str) -> None:
    subprocess.run(  # noqa: S603
        [str(SCRIPT), "-d", str(folder), *users], check=True, capture_output=True
    )


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    """Mosquitto with the shipped mosquitto.conf and acl, moved to tmp_path."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    credentials = tmp_path / "credentials"
    make_credentials(credentials, "node-1", "node-2", "gateway")
    shutil.copy(CONFIG_DIR / "mosquitto" / "acl", credentials / "acl")
    port = free_port()
    config = (CONFIG_DIR / "mosquitto" / "mosquitto.conf").read_text()
    config = config.replace(INSTALL_DIR, f"{credentials}/")
    config = config.replace("listener 8883", f"listener {port} 127.0.0.1")
    config = config.replace("/var/lib/mosquitto/", f"{tmp_path}/")
    # Running as root, Mosquitto would switch to the mosquitto user, which
    # cannot read the 0600 files of the test.
    config += f"user root\nlog_dest file {tmp_path}/mosquitto.log\n"
    (tmp_path / "mosquitto.conf").write_text(config)
    process = subprocess.Popen(  # noqa: S603
        [binary, "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield SecureBroker(port, credentials)
    finally:
        process.terminate()
        process.wait(10)


def test_credentials_script_is_idempotent(tmp_path: Path) -> None:
    folder = tmp_path / "credentials"
    make_credentials(folder, "node-1")
    first = {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    make_credentials(folder, "node-1", "node-2")
    second = {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    passwd = (folder / "passwd").read_text().splitlines()
    assert all(
        second[name] == data
        for name, data in first.items()
        if name not in {"passwd", "ca.srl"}
    )
    assert [line.split(":")[0] for line in passwd] == ["node-1", "node-2"]
    assert passwd[0] == first["passwd"].decode().splitlines()[0]
    assert (folder / "users" / "node-1.password").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("arguments", "match"),
    [([], "no USER given"), (["Node/1"], "must start with a lower-case")],
    ids=["no-user", "bad-user"],
)
def test_credentials_script_rejects_bad_input(
    tmp_path: Path, arguments: list[str], match: str
) -> None:
    result = subprocess.run(  # noqa: S603
        [str(SCRIPT), "-d", str(tmp_path / "c"), *arguments],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert match in result.stderr


def test_node_publishes_over_tls(secure_broker: SecureBroker, tmp_path: Path) -> None:
    gateway = Collector(
        secure_broker.port,
        tls=secure_broker.user_tls("gateway"),
        username="gateway",
        password=secure_broker.password("gateway"),
    )
    tls = secure_broker.user_tls("node-1")
    outbox = Outbox(tmp_path / "o.db", SITE, "node-1")
    publisher = MqttPublisher(
        outbox,
        url=f"mqtts://127.0.0.1:{secure_broker.port}",
        client_id="node-1",
        site=SITE,
        node="node-1",
        username="node-1",
        password_file=secure_broker.credentials / "users" / "node-1.password",
        tls=TlsSettings(
            ca_file=Path(tls["ca_certs"]),
            cert_file=Path(tls["certfile"]),
            key_file=Path(tls["keyfile"]),
        ),
    )
    publisher.start()
    try:
        publisher.add("counts", counts_body(0))
        wait_until(lambda: gateway.of_kind("counts"), 10, "counts over TLS")
        wait_until(lambda: outbox.stats().depth == 0, 10, "the outbox to drain")
    finally:
        publisher.stop()
        gateway.stop()
        outbox.close()
    assert [s["state"] for s in gateway.of_kind("status")][0] == "online"


@pytest.mark.parametrize(
    ("protocol", "puback_code"),
    [(MQTTProtocolVersion.MQTTv5, NOT_AUTHORIZED), (MQTTProtocolVersion.MQTTv311, 0)],
    ids=["mqtt5-reason-code", "mqtt311-silent-drop"],
)
def test_node_cannot_publish_as_other_node(
    secure_broker: SecureBroker, protocol: MQTTProtocolVersion, puback_code: int
) -> None:
    gateway = Collector(
        secure_broker.port,
        tls=secure_broker.user_tls("gateway"),
        username="gateway",
        password=secure_broker.password("gateway"),
    )
    acks: dict[int, ReasonCode] = {}
    node = connect(secure_broker, "node-1", protocol=protocol)
    node.on_publish = lambda c, u, mid, code, p: acks.__setitem__(mid, code)
    try:
        spoof = node.publish(f"sitlab/v1/{SITE}/node-2/counts", b'{"seq":1}', qos=1)
        own = node.publish(
            f"sitlab/v1/{SITE}/node-1/counts", b'{"message_id":"own"}', 1
        )
        wait_until(lambda: own.mid in acks and spoof.mid in acks, 10, "both PUBACKs")
        wait_until(lambda: "own" in gateway.deliveries, 10, "the node's own message")
        time.sleep(0.5)
    finally:
        node.disconnect()
        node.loop_stop()
        gateway.stop()
    assert acks[spoof.mid].value == puback_code
    assert acks[own.mid].value == 0
    assert list(gateway.deliveries) == ["own"]


def connect(
    broker: SecureBroker,
    user: str,
    *,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    tls: dict[str, Any] | None = None,
    password: str | None = None,
) -> paho.Client:
    """Connect as `user` and return the running client; raise if refused."""
    result = try_connect(broker, user, protocol=protocol, tls=tls, password=password)
    assert isinstance(result, paho.Client), result
    return result


def try_connect(
    broker: SecureBroker,
    user: str | None,
    *,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    tls: dict[str, Any] | None = None,
    password: str | None = None,
) -> paho.Client | str:
    """Return the connected client, or why the connection failed."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"probe-{user}", protocol=protocol
    )
    client.tls_set(**(tls if tls is not None else broker.user_tls(user or "node-1")))
    if user is not None:
        client.username_pw_set(user, password or broker.password(user))
    outcome: list[str] = []
    done = threading.Event()

    def on_connect(
        c: paho.Client, u: object, f: object, code: ReasonCode, p: object
    ) -> None:
        outcome.append("connected" if not code.is_failure else f"refused: {code}")
        done.set()

    def on_disconnect(
        c: paho.Client, u: object, f: object, code: ReasonCode, p: object
    ) -> None:
        outcome.append(f"disconnected: {code}")
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect("127.0.0.1", broker.port, keepalive=5)
    except (ssl.SSLError, OSError) as error:
        return f"TLS handshake failed: {error}"
    client.loop_start()
    done.wait(5)
    time.sleep(0.3)  # a rejected client certificate shows up after CONNACK time
    if outcome == ["connected"]:
        return client
    client.loop_stop()
    return "; ".join(outcome) or "no CONNACK"


@pytest.mark.parametrize(
    ("case", "failure"),
    [
        ("no-client-cert", "disconnected|TLS handshake failed"),
        ("foreign-ca-cert", "disconnected|TLS handshake failed"),
        ("wrong-password", "refused: Not authorized"),
        ("no-username", "refused: Not authorized"),
    ],
    ids=["no-client-cert", "foreign-ca-cert", "wrong-password", "no-username"],
)
def test_bad_credentials_cannot_connect(
    secure_broker: SecureBroker, tmp_path: Path, case: str, failure: str
) -> None:
    options: dict[str, Any] = {}
    user: str | None = "node-1"
    if case == "no-client-cert":
        options["tls"] = {"ca_certs": str(secure_broker.credentials / "ca.crt")}
    elif case == "foreign-ca-cert":
        foreign = tmp_path / "foreign"
        make_credentials(foreign, "node-1")
        options["tls"] = secure_broker.user_tls("node-1", foreign)
    elif case == "wrong-password":
        options["password"] = "not-the-password"
    else:
        user = None
    result = try_connect(secure_broker, user, **options)
    if isinstance(result, paho.Client):
        result.disconnect()
        result.loop_stop()
    assert not isinstance(result, paho.Client), f"{case} connected"
    assert re.match(failure, result)
