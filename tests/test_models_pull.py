"""Registry parsing and verified install from a local HTTP server or folder."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from models.pull import ChecksumError, PullError, copy_local, download
from models.registry import (
    ModelEntry,
    RegistryError,
    load_registry,
    lookup,
    parse_registry,
)

PAYLOAD = b"onnx-bytes" * 1000
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


def entry(**changes: str) -> ModelEntry:
    base = ModelEntry(
        name="tiny",
        file="tiny.onnx",
        format="yolov8",
        input_size=320,
        classes=80,
        class_names="metadata:names",
        sha256=DIGEST,
        licence="AGPL-3.0",
        url="",
        recipe="make tiny.onnx",
    )
    return replace(base, **changes)


class Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}

    def do_GET(self) -> None:
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.routes = {
        "/good/tiny.onnx": PAYLOAD,
        "/corrupt/tiny.onnx": PAYLOAD[:-1] + b"X",
    }
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_packaged_registry_lists_shared_models() -> None:
    registry = load_registry()
    assert registry["yolov8n-int8"].sha256.startswith("83de8f0d")
    assert registry["yolov8n-640-fp32"].input_size == 640
    assert registry["yolov8n-pt"].licence == "AGPL-3.0"
    assert registry["yolov8n-pt"].url.startswith("https://github.com/ultralytics/")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models = 3", "no \\[models.NAME\\]"),
        ("[models.a]\nfile='a'", "has no 'format'"),
        (
            '[models.a]\nfile="a"\nformat="ssd"\ninput_size=1\nclasses=1\nclass_names="coco80"\nsha256=""\nlicence=""\nurl=""\nrecipe=""',
            "not one of yolov8",
        ),
        (
            '[models.a]\nfile="a"\nformat="yolov8"\ninput_size="640"\nclasses=1\nclass_names="coco80"\nsha256=""\nlicence=""\nurl=""\nrecipe=""',
            "input_size' must be int",
        ),
        (
            '[models.a]\nfile="a"\nformat="yolov8"\ninput_size=640\nclasses=1\nclass_names="coco80"\nsha256="abc"\nlicence=""\nurl=""\nrecipe=""',
            "not 64 hex",
        ),
        ("[models", "not valid TOML"),
    ],
    ids=[
        "no-tables",
        "missing-field",
        "bad-format",
        "wrong-type",
        "bad-digest",
        "bad-toml",
    ],
)
def test_registry_rejects_invalid(text: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_registry(text)


def test_lookup_lists_known_names() -> None:
    with pytest.raises(RegistryError, match="known models: .*yolov8n-int8"):
        lookup("yolov9")


def test_download_installs_verified(server: str, tmp_path: Path) -> None:
    path = download(entry(), tmp_path, mirror=f"{server}/good")
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]


def test_download_from_entry_url(server: str, tmp_path: Path) -> None:
    path = download(entry(url=f"{server}/good/tiny.onnx"), tmp_path)
    assert path.name == "tiny.onnx"


def test_corrupt_download_rejected(server: str, tmp_path: Path) -> None:
    with pytest.raises(ChecksumError, match=f"expected {DIGEST}.*not installed"):
        download(entry(), tmp_path, mirror=f"{server}/corrupt")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_download_keeps_old_file(server: str, tmp_path: Path) -> None:
    (tmp_path / "tiny.onnx").write_bytes(b"previous")
    with pytest.raises(ChecksumError):
        download(entry(), tmp_path, mirror=f"{server}/corrupt")
    assert (tmp_path / "tiny.onnx").read_bytes() == b"previous"


@pytest.mark.parametrize(
    ("changes", "mirror", "message"),
    [
        ({}, "/missing", "HTTP 404"),
        ({"sha256": ""}, "/good", "no sha256 .*--sha256"),
        ({}, None, "no download URL; produce it with `make tiny.onnx`"),
    ],
    ids=["not-found", "no-digest", "no-url"],
)
def test_download_errors(
    server: str,
    tmp_path: Path,
    changes: dict[str, str],
    mirror: str | None,
    message: str,
) -> None:
    with pytest.raises(PullError, match=message):
        download(
            entry(**changes), tmp_path, mirror=f"{server}{mirror}" if mirror else None
        )
    assert list(tmp_path.iterdir()) == []


def test_download_times_out(tmp_path: Path) -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        with pytest.raises(PullError, match="failed"):
            download(
                entry(), tmp_path, mirror=f"http://127.0.0.1:{port}", timeout_s=0.5
            )
    finally:
        listener.close()
    assert list(tmp_path.iterdir()) == []


def test_sha256_override_used(server: str, tmp_path: Path) -> None:
    path = download(
        entry(sha256=""), tmp_path, mirror=f"{server}/good", sha256=DIGEST.upper()
    )
    assert path.exists()


@pytest.mark.media
def test_pull_from_shared_folder(models_dir: Path, tmp_path: Path) -> None:
    path = copy_local(lookup("yolov8n-int8"), models_dir, tmp_path)
    assert path.stat().st_size == (models_dir / "yolov8n_int8.onnx").stat().st_size


def test_copy_local_rejects_other_file(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "tiny.onnx").write_bytes(b"other")
    with pytest.raises(ChecksumError, match="sha256 is"):
        copy_local(entry(), source, tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


def test_copy_local_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PullError, match="tiny.onnx not found; copy"):
        copy_local(entry(), tmp_path, tmp_path / "dest")
