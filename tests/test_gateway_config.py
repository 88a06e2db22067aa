"""Configuration validation and the command line that does not need a broker."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gateway.auth import login
from gateway.cli import main
from gateway.config import ConfigError, load_config, parse_config
from gateway.store import open_database

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "firmware-config" / "gateway.example.yaml"


def test_example_config_valid() -> None:
    config = load_config(EXAMPLE)
    assert config == parse_config({})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"mqtt": {"url": "http://x"}},
            r"mqtt\.url: .*must start with mqtt:// or mqtts://",
        ),
        ({"mqtt": {"shared_group": "a/b"}}, r"mqtt\.shared_group: .*1-64 letters"),
        ({"store": {"url": "mysql://x"}}, r"store\.url: .*sqlite:/// or postgresql://"),
        (
            {"store": {"batch_max": 0}},
            r"store\.batch_max: .*greater than or equal to 1 \(got 0\)",
        ),
        ({"api": {"listen": "8080"}}, r"api\.listen: .*HOST:PORT"),
        ({"api": {"listen": "h:70000"}}, r"api\.listen: .*PORT 1-65535"),
        (
            {"nodes": {"offline_after_heartbeats": 0.5}},
            r"nodes\.offline_after_heartbeats",
        ),
        ({"mqtt": {"colour": "red"}}, r"mqtt\.colour: Extra inputs are not permitted"),
        ({"log_level": "LOUD"}, r"log_level: String should match"),
    ],
    ids=[
        "mqtt_scheme",
        "group",
        "store_scheme",
        "batch",
        "listen",
        "port",
        "heartbeats",
        "extra",
        "level",
    ],
)
def test_invalid_config_names_field(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_missing_file_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "none.yaml")


def test_bad_yaml_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("mqtt: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(path)


def test_check_config_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("store:\n  batch_max: -1\n")
    assert main(["check-config", str(bad)]) == 2
    assert "store.batch_max" in capsys.readouterr().err


def test_token_command_stores_hash(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["migrate", "--db", url]) == 0
    assert (
        main(["token", "create", "--role", "dispatcher", "--name", "desk", "--db", url])
        == 0
    )
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("sgw_")
    db = open_database(url)
    stored = db.query("SELECT name, role, token_sha256 FROM tokens")
    db.close()
    assert stored[0][:2] == ("desk", "dispatcher")
    assert token not in stored[0][2]


def test_with_overrides_precedence() -> None:
    config = parse_config({"mqtt": {"url": "mqtt://127.0.0.1:1999"}})
    overridden = config.with_overrides(
        {"mqtt.url": "mqtt://127.0.0.1:2000", "api.listen": None}
    )
    assert overridden.mqtt.url == "mqtt://127.0.0.1:2000"
    assert overridden.api.listen == config.api.listen


def test_user_command_then_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("SITLAB_TEST_PASSWORD", "long enough secret")
    args = [
        "user",
        "erin",
        "--role",
        "viewer",
        "--password-env",
        "SITLAB_TEST_PASSWORD",
    ]
    assert main([*args, "--db", url]) == 0
    db = open_database(url)
    found = login(db, "erin", "long enough secret", ttl_s=60)
    wrong = login(db, "erin", "wrong", ttl_s=60)
    db.close()
    assert found is not None
    assert found[1] == "viewer"
    assert wrong is None


def test_user_command_short_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SITLAB_TEST_PASSWORD", "short")
    args = [
        "user",
        "erin",
        "--role",
        "viewer",
        "--password-env",
        "SITLAB_TEST_PASSWORD",
    ]
    assert main([*args, "--db", f"sqlite:///{tmp_path / 'cli.db'}"]) == 2
    assert "is 5 characters; use 8 or more" in capsys.readouterr().err


def test_non_utf8_file_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes("# brána na nádraží\n".encode("cp1250"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 .*save it as UTF-8"):
        load_config(path)


def test_run_refuses_busy_port_before_mqtt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # Port 1 on loopback: the gateway must stop before it tries MQTT.
        code = main(
            [
                "run",
                "--listen",
                f"127.0.0.1:{port}",
                "--mqtt",
                "mqtt://127.0.0.1:1",
                "--db",
                f"sqlite:///{tmp_path / 'g.sqlite3'}",
            ]
        )
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert not (tmp_path / "g.sqlite3").exists()
