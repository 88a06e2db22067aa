"""Atomic, validated, comment-keeping config edits and the commands that make them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.cli import main
from calibration.config_edit import ConfigDocument, ConfigEditError
from calibration.draw import DrawError, ItemKind, apply_items, parse_item
from calibration.editor import EditorState
from edge.config import load_config
from edge.ground import GroundPlane
from tests.test_calibration_ground import MARKERS, project
from tests.test_calibration_lens import BOARD, FX, POSES, render_board

CONFIG = """\
# Test node; keep this comment.
site: lab
node: cam-01
config_version: "7"   # quoted on purpose
source:
  uri: clip.avi
model:
  path: model.onnx
geometry:
  reference_resolution: [1280, 720]
lines:
  # The door line; keep this comment too.
  - name: door
    points: [[100, 300], [1100, 300]]
    hysteresis_px: 12
"""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def snapshot_1280(tmp_path: Path) -> Path:
    path = tmp_path / "snap.png"
    cv2.imwrite(str(path), np.zeros((720, 1280, 3), np.uint8))
    return path


def test_invalid_edit_leaves_file_identical(config_path: Path) -> None:
    before = config_path.read_bytes()
    document = ConfigDocument.load(config_path)
    document.data["counts"] = {"interval_s": 0.5}

    with pytest.raises(
        ConfigEditError,
        match=r"counts\.interval_s: Input should be greater than or equal to 1",
    ):
        document.save()

    assert config_path.read_bytes() == before
    assert not list(config_path.parent.glob("*.bak"))
    assert not list(config_path.parent.glob(".node.yaml.*"))


def test_edit_keeps_comments_and_backs_up(config_path: Path) -> None:
    document = ConfigDocument.load(config_path)
    document.data["timezone"] = "Europe/Prague"

    backup = document.save()

    text = config_path.read_text()
    assert "# Test node; keep this comment." in text
    assert "# The door line; keep this comment too." in text
    assert 'config_version: "7"   # quoted on purpose' in text
    assert "timezone: Europe/Prague" in text
    assert backup is not None
    assert backup.read_text() == CONFIG


def test_draw_replaces_line_and_keeps_its_settings(
    config_path: Path, snapshot_1280: Path
) -> None:
    code = main(
        [
            "draw",
            "--config",
            str(config_path),
            "--snapshot",
            str(snapshot_1280),
            "--line",
            "door:1100,320,100,320",
        ]
    )

    assert code == 0
    line = load_config(config_path).lines[0]
    assert line.points == ((1100, 320), (100, 320))
    assert line.hysteresis_px == 12
    assert "points: [[1100, 320], [100, 320]]" in config_path.read_text()


def test_draw_on_other_resolution_converts_existing(
    config_path: Path, tmp_path: Path
) -> None:
    snapshot = tmp_path / "small.png"
    cv2.imwrite(str(snapshot), np.zeros((360, 640, 3), np.uint8))

    assert (
        main(
            [
                "draw",
                "--config",
                str(config_path),
                "--snapshot",
                str(snapshot),
                "--zone",
                "hall:10,10,600,10,600,350",
            ]
        )
        == 0
    )

    config = load_config(config_path)
    assert config.geometry.reference_resolution == (640, 360)
    assert config.lines[0].points == ((50, 150), (550, 150))


def test_draw_normalized(config_path: Path, snapshot_1280: Path) -> None:
    assert (
        main(
            [
                "draw",
                "--config",
                str(config_path),
                "--snapshot",
                str(snapshot_1280),
                "--normalized",
                "--line",
                "exit:640,0,640,720",
            ]
        )
        == 0
    )

    config = load_config(config_path)
    assert config.geometry.units == "normalized"
    assert config.lines[1].points == ((0.5, 0.0), (0.5, 1.0))
    assert config.lines[0].points[0] == pytest.approx((100 / 1280, 300 / 720), abs=1e-5)


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        (
            ItemKind.LINE,
            "door:10,10,10,10",
            r"line 'door' has zero length: start and end are both \(10, 10\)",
        ),
        (
            ItemKind.ZONE,
            "bow:0,0,100,100,100,0,0,100",
            "zone 'bow' is self-intersecting: edge 0",
        ),
        (
            ItemKind.MASK,
            "win:0,0,1300,0,0,100",
            r"mask 'win' point 1 \(1300, 0\) is outside the reference frame 1280x720",
        ),
        (ItemKind.ZONE, "flat:0,0,100,0,200,0", "zone 'flat' has zero area"),
        (ItemKind.LINE, "bad name!:0,0,10,10", "line name 'bad name!' is invalid"),
    ],
    ids=["zero-length", "self-intersecting", "outside", "zero-area", "bad-name"],
)
def test_draw_rejects_bad_geometry(
    config_path: Path, kind: ItemKind, text: str, message: str
) -> None:
    document = ConfigDocument.load(config_path)
    before = document.dump()

    with pytest.raises(DrawError, match=message):
        apply_items(document, [parse_item(kind, text)], (1280, 720))

    assert document.dump() == before


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        (ItemKind.LINE, "10,10,20,20", "has no name"),
        (ItemKind.LINE, "a:1,2,3", "has 3 numbers; give x,y pairs"),
        (ItemKind.LINE, "a:1,2,3,4,5,6", "a line has exactly 2"),
        (ItemKind.ZONE, "a:1,2,3,4", "a zone needs at least 3"),
        (ItemKind.MASK, "a:1,x,3,4", "is not a comma-separated list"),
    ],
    ids=["no-name", "odd", "line-three-points", "zone-two-points", "not-number"],
)
def test_item_parsing_rejects(kind: ItemKind, text: str, message: str) -> None:
    with pytest.raises(DrawError, match=message):
        parse_item(kind, text)


def test_editor_state_commit_and_undo() -> None:
    state = EditorState(resolution_wh=(640, 480))
    state.click(10, 10)
    state.click(10, 10)
    assert not state.commit("door")
    assert "zero length" in state.message

    state.undo()
    state.click(300, 10)
    assert state.commit("door")
    state.set_mode(ItemKind.ZONE)
    for x, y in ((0, 100), (200, 100), (200, 300)):
        state.click(x, y)
    assert state.commit("hall")
    state.undo()

    assert [(item.kind, item.name) for item in state.items] == [(ItemKind.LINE, "door")]


def test_interactive_needs_a_display(
    config_path: Path, snapshot_1280: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if (
        cv2.getBuildInformation().find("GTK") != -1
        or cv2.getBuildInformation().find("QT:") != -1
    ):
        pytest.skip("this OpenCV has a GUI backend")
    before = config_path.read_bytes()

    assert (
        main(
            [
                "draw",
                "--config",
                str(config_path),
                "--snapshot",
                str(snapshot_1280),
                "--interactive",
            ]
        )
        == 1
    )

    assert "cannot open a window" in capsys.readouterr().err
    assert config_path.read_bytes() == before


def test_ground_command_stores_homography(
    config_path: Path, snapshot_1280: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = project(MARKERS[:6])
    points = [
        f"{x:.2f},{y:.2f}={e:g},{n:g}"
        for (x, y), (e, n) in zip(image, MARKERS[:6], strict=True)
    ]

    code = main(
        [
            "ground",
            "--config",
            str(config_path),
            "--snapshot",
            str(snapshot_1280),
            *[arg for p in points for arg in ("--point", p)],
        ]
    )

    output = capsys.readouterr().out
    assert code == 0, output
    assert "RMS error 0.00" in output
    config = load_config(config_path)
    assert config.ground is not None
    plane = GroundPlane.from_config(config.ground, config.lens)
    assert plane.distance_m(image[0], image[1]) == pytest.approx(10.0, abs=0.01)
    assert "# The door line; keep this comment too." in config_path.read_text()


def test_ground_command_rejects_collinear(
    config_path: Path, snapshot_1280: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = config_path.read_bytes()
    args = ["ground", "--config", str(config_path), "--snapshot", str(snapshot_1280)]
    for point in ("100,600=0,0", "400,600=3,0", "700,600=6,0", "600,300=5,8"):
        args += ["--point", point]

    assert main(args) == 1

    assert (
        "image points are (nearly) collinear: 1 (100, 600), 2 (400, 600), 3 (700, 600)"
        in capsys.readouterr().err
    )
    assert config_path.read_bytes() == before


def test_lens_command_stores_section(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "board"
    folder.mkdir()
    for index, pose in enumerate(POSES):
        cv2.imwrite(str(folder / f"{index:02d}.png"), render_board(*pose))

    code = main(
        [
            "lens",
            "--images",
            str(folder / "*.png"),
            "--board",
            f"{BOARD.columns}x{BOARD.rows}",
            "--square-mm",
            "30",
            "--config",
            str(config_path),
        ]
    )

    output = capsys.readouterr().out
    assert code == 0, output
    assert "good: the lens model is accurate" in output
    lens = load_config(config_path).lens
    assert lens is not None
    assert lens.camera_matrix[0][0] == pytest.approx(FX, rel=0.01)
    assert lens.rms_px < 0.5
