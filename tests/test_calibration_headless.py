"""The headless technician path on vtest.avi: snapshot, draw, preview, verify, check."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.cli import main
from edge.config import load_config

CONFIG_TEXT = """\
# Campus node, set up with sitlab-calibrate.
site: sitlab-polygon
node: campus-01   # the node id in topics
source:
  uri: {source}
  fps: 10
model:
  path: {model}
  intra_op_threads: 1
detection:
  classes: [person]
mqtt:
  heartbeat_interval_s: 3600
outbox:
  path: {outbox}
"""


@pytest.fixture
def campus_config(tmp_path: Path, vtest_avi: Path, model_640: Path) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(
        CONFIG_TEXT.format(
            source=vtest_avi, model=model_640, outbox=tmp_path / "outbox.sqlite3"
        )
    )
    return path


@pytest.mark.media
def test_headless_setup_on_vtest(
    campus_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = tmp_path / "snapshot.png"
    preview = tmp_path / "preview.png"

    assert (
        main(
            [
                "snapshot",
                "--config",
                str(campus_config),
                "--at",
                "2",
                "--out",
                str(snapshot),
            ]
        )
        == 0
    )
    sidecar = json.loads(snapshot.with_suffix(".json").read_text())
    assert sidecar["resolution"] == [768, 576]
    assert sidecar["pts_s"] == pytest.approx(2.0, abs=0.11)

    code = main(
        [
            "draw",
            "--config",
            str(campus_config),
            "--snapshot",
            str(snapshot),
            "--line",
            "walkway:200,300,600,300",
            "--zone",
            "plaza:100,250,700,250,700,560,100,560",
            "--mask",
            "windows:0,0,200,0,200,80,0,80",
        ]
    )
    assert code == 0
    config = load_config(campus_config)
    assert config.geometry.reference_resolution == (768, 576)
    assert [line.name for line in config.lines] == ["walkway"]
    assert config.zones[0].polygon[2] == (700, 560)
    assert config.masks[0].name == "windows"
    assert "# the node id in topics" in campus_config.read_text()
    assert list(tmp_path.glob("node.yaml.*.bak"))

    assert (
        main(
            [
                "preview",
                "--config",
                str(campus_config),
                "--snapshot",
                str(snapshot),
                "--out",
                str(preview),
                "--detect",
            ]
        )
        == 0
    )
    image = cv2.imread(str(preview))
    assert image.shape == (576, 768, 3)
    assert (
        int(image[:80, :200].max()) < 170
    )  # the mask is black but for its outline and label
    assert (
        float(np.abs(image.astype(int) - cv2.imread(str(snapshot)).astype(int)).mean())
        > 2
    )
    output = capsys.readouterr().out
    detections = int(output.split("\n")[-2].split()[0])
    assert detections >= 3

    assert main(["verify", "--config", str(campus_config), "--seconds", "8"]) == 0
    table = capsys.readouterr().out
    print(table)
    assert "line  walkway" in table
    assert "zone  plaza" in table
    frames = int(table.split()[0])
    assert 80 <= frames <= 82
    plaza = next(row for row in table.splitlines() if row.startswith("zone  plaza"))
    assert int(plaza.split()[-1]) >= 2  # several people walk across the plaza


@pytest.mark.media
def test_check_stores_reference(
    campus_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check", "--config", str(campus_config), "--seconds", "3"])

    output = capsys.readouterr().out
    assert code == 0, output
    assert "verdict:" in output
    reference = campus_config.with_name("node.reference.png")
    grey = cv2.imread(str(reference), cv2.IMREAD_UNCHANGED)
    assert grey.ndim == 2
    text = campus_config.read_text()
    assert "reference_frame: node.reference.png" in text
    assert load_config(campus_config)


@pytest.mark.media
def test_draw_rejects_point_outside_snapshot(
    campus_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = tmp_path / "snapshot.png"
    assert (
        main(
            [
                "snapshot",
                "--source",
                str(campus_config.parent / "missing.avi"),
                "--out",
                str(snapshot),
            ]
        )
        == 1
    )
    assert "missing.avi" in capsys.readouterr().err
    assert (
        main(["snapshot", "--config", str(campus_config), "--out", str(snapshot)]) == 0
    )
    before = campus_config.read_bytes()

    code = main(
        [
            "draw",
            "--config",
            str(campus_config),
            "--snapshot",
            str(snapshot),
            "--line",
            "gate:10,10,800,10",
        ]
    )

    assert code == 1
    assert (
        "line 'gate' end (800, 10) is outside the reference frame 768x576"
        in capsys.readouterr().err
    )
    assert campus_config.read_bytes() == before
