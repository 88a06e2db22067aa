"""The provisioning script and the systemd units.

The dry run is checked on an empty root and, when SITLAB_DEBIAN_ROOT names
one (made with `debootstrap --variant=minbase bookworm DIR`), on a clean
Debian root. The real run installs into a scratch root with --skip-packages
(no network, no venv) and must be idempotent: the second run changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "firmware-config" / "provision.sh"
UNITS = REPO / "firmware-config" / "systemd"
DEBIAN_ROOT = os.environ.get("SITLAB_DEBIAN_ROOT")


def provision(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def snapshot(root: Path) -> dict[str, str]:
    """Return path -> mode and content hash of every entry under `root`."""
    state = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest = ""
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        state[str(path.relative_to(root))] = f"{info.st_mode:o} {info.st_uid} {digest}"
    return state


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    config = tmp_path / "cam1.yaml"
    config.write_text("site: s1\nnode: cam1\n")
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "password").write_text("secret\n")
    (credentials / "ca.crt").write_text("certificate\n")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not a real model; only copied")
    return {"config": config, "credentials": credentials, "model": model}


def node_args(root: Path, inputs: dict[str, Path]) -> list[str]:
    return [
        "--root",
        str(root),
        "--node",
        "cam1",
        "--node-config",
        str(inputs["config"]),
        "--credentials",
        str(inputs["credentials"]),
        "--model-file",
        str(inputs["model"]),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "camera"], "--role 'camera' is invalid"),
        (["--node", "Cam 1"], "--node 'Cam 1' is invalid"),
        ([], "--node is missing"),
        (
            ["--node", "a", "--wheel", "/nonexistent.whl"],
            "--wheel '/nonexistent.whl' not found",
        ),
        (["--node", "a", "--platform", "mac"], "--platform 'mac' is invalid"),
        (["--node", "a", "--model-from", "/tmp"], "--model-from needs --model NAME"),
        (["--bogus"], "unknown option '--bogus'"),
    ],
    ids=[
        "role",
        "node-name",
        "no-node",
        "no-wheel",
        "platform",
        "model-from",
        "unknown",
    ],
)
def test_bad_arguments(args: list[str], message: str, tmp_path: Path) -> None:
    result = provision("--dry-run", "--root", str(tmp_path), *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_dry_run_changes_nothing(tmp_path: Path, inputs: dict[str, Path]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result = provision("--dry-run", "--src", str(REPO), *node_args(root, inputs))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert list(root.iterdir()) == []
    for expected in (
        "[packages] would install python3 python3-venv",
        "[user] would create system user sitlab",
        "[venv] would create /opt/sitlab/venv",
        "[product] would pip install",
        "[credentials] would install /etc/sitlab/credentials/password (600)",
        "[credentials] would install /etc/sitlab/credentials/ca.crt (640)",
        "[config] would install /var/lib/sitlab/cam1/node.yaml",
        "[units] would enable sitlab-edge@cam1.service",
    ):
        assert expected in result.stdout


def test_pi_venv_sees_system_packages(tmp_path: Path, inputs: dict[str, Path]) -> None:
    result = provision(
        "--dry-run",
        "--platform",
        "pi",
        "--src",
        str(REPO),
        *node_args(tmp_path, inputs),
    )
    assert "python3-picamera2" in result.stdout
    assert "--system-site-packages" in result.stdout


@pytest.mark.skipif(DEBIAN_ROOT is None, reason="SITLAB_DEBIAN_ROOT not set")
def test_dry_run_on_clean_debian(inputs: dict[str, Path]) -> None:
    root = Path(str(DEBIAN_ROOT))
    before = snapshot(root / "etc")
    result = provision("--dry-run", "--src", str(REPO), *node_args(root, inputs))
    assert result.returncode == 0, result.stderr
    assert "provisioning a node on debian" in result.stdout
    assert "[packages] would install" in result.stdout
    assert "[user] would create system user sitlab" in result.stdout
    assert snapshot(root / "etc") == before


def seed_root(root: Path) -> None:
    """Make the few files useradd needs in a scratch root."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nvideo:x:44:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\nvideo:!::\n")
    (etc / "login.defs").write_text("SYS_UID_MIN 100\nSYS_UID_MAX 999\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="the real run needs root")
@pytest.mark.skipif(shutil.which("useradd") is None, reason="useradd missing")
def test_real_run_is_idempotent(tmp_path: Path, inputs: dict[str, Path]) -> None:
    root = tmp_path / "root"
    seed_root(root)
    args = ["--skip-packages", *node_args(root, inputs)]

    first = provision(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "sitlab:" in (root / "etc/passwd").read_text()
    assert "video:x:44:sitlab" in (root / "etc/group").read_text()
    secret = root / "etc/sitlab/credentials/password"
    assert f"{secret.stat().st_mode & 0o777:o}" == "600"
    assert (
        f"{(root / 'etc/sitlab/credentials/ca.crt').stat().st_mode & 0o777:o}" == "640"
    )
    wants = root / "etc/systemd/system/multi-user.target.wants/sitlab-edge@cam1.service"
    assert os.readlink(wants) == "/etc/systemd/system/sitlab-edge@.service"
    config = root / "var/lib/sitlab/cam1/node.yaml"
    assert config.read_text() == inputs["config"].read_text()

    before = snapshot(root)
    second = provision(*args)
    assert second.returncode == 0, second.stderr
    assert "done: 0 changes made" in second.stdout
    assert snapshot(root) == before

    # A config the gateway changed remotely is kept unless forced.
    config.write_text("site: s1\nnode: cam1\nconfig_version: '7'\n")
    third = provision(*args)
    assert "[config] kept" in third.stdout
    assert "config_version: '7'" in config.read_text()


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="no systemd-analyze"
)
@pytest.mark.parametrize(
    ("unit", "installed_as"),
    [
        ("sitlab-edge@.service", "sitlab-edge@cam1.service"),
        ("sitlab-gateway.service", "sitlab-gateway.service"),
    ],
    ids=["node", "gateway"],
)
def test_units_verify(unit: str, installed_as: str, tmp_path: Path) -> None:
    target = tmp_path / installed_as
    shutil.copy(UNITS / unit, target)
    result = subprocess.run(  # noqa: S603
        ["systemd-analyze", "verify", str(target)],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        # The venv is not installed on the test machine.
        if line.strip() and "/opt/sitlab/venv/bin/" not in line
    ]
    assert problems == []


@pytest.mark.parametrize(
    "setting",
    [
        "Type=notify",
        "WatchdogSec=30",
        "Restart=on-failure",
        "User=sitlab",
        "DynamicUser=no",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/sitlab/%i",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "MemoryMax=1536M",
        "CPUQuota=300%",
        "TasksMax=64",
        "StandardOutput=journal",
    ],
)
def test_node_unit_settings(setting: str) -> None:
    assert setting in (UNITS / "sitlab-edge@.service").read_text().splitlines()
