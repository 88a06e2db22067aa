"""Shared fixtures: where the real models and clips are, and a real broker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Broker

REPO = Path(__file__).resolve().parent.parent


def _shared_dir(variable: str, default: Path) -> Path | None:
    value = os.environ.get(variable)
    path = Path(value) if value else default
    return path if path.is_dir() else None


def _require(path: Path | None, variable: str) -> Path:
    if path is not None:
        return path
    message = (
        f"{variable} is not set or is not a folder; point it at the shared "
        "models or media folder (.ci/run sets both)"
    )
    if os.environ.get("SITLAB_REQUIRE_MEDIA") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Folder with the COCO YOLOv8n ONNX files."""
    found = _shared_dir("SITLAB_MODELS_DIR", REPO.parent / "shared" / "models")
    return _require(found, "SITLAB_MODELS_DIR")


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """Folder with the real test clips."""
    found = _shared_dir("SITLAB_MEDIA_DIR", REPO.parent / "shared" / "media")
    return _require(found, "SITLAB_MEDIA_DIR")


@pytest.fixture(scope="session")
def model_640(models_dir: Path) -> Path:
    """YOLOv8n fp32 at 640x640."""
    return models_dir / "yolov8n_640_fp32.onnx"


@pytest.fixture(scope="session")
def vtest_avi(media_dir: Path) -> Path:
    """The PETS 2009 campus clip."""
    return media_dir / "pets09_s2l1_vtest" / "vtest.avi"


@pytest.fixture(scope="session")
def tud_campus(media_dir: Path) -> Path:
    """The TUD-Campus image folder."""
    return media_dir / "tud_campus" / "img1"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running Mosquitto broker of this test alone."""
    workdir = tmp_path / "broker"
    workdir.mkdir()
    instance = Broker(workdir)
    instance.start()
    yield instance
    instance.stop()
