"""`sitlab-models` commands: list, info, pull, export errors, bench, evaluate."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edge.types import Detections
from models.bench import BenchError, markdown_table, measure
from models.cli import main
from models.evaluate import (
    average_precision,
    check_model_usable,
    compare,
    load_mot_ground_truth,
)
from models.export import ExportError, check_export_args, export_onnx


def test_list_prints_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "yolov8n-int8" in out
    assert "AGPL-3.0" in out


@pytest.mark.media
@pytest.mark.parametrize(
    ("file", "kind", "size"),
    [
        ("yolov8n_int8.onnx", "dynamic-int8", "640x640"),
        ("yolov8n_640_fp32.onnx", "fp32", "640x640"),
        ("yolov8n_320_fp32.onnx", "fp32", "320x320"),
    ],
    ids=["dynamic", "fp32-640", "fp32-320"],
)
def test_info_describes_model(
    models_dir: Path,
    capsys: pytest.CaptureFixture[str],
    file: str,
    kind: str,
    size: str,
) -> None:
    assert main(["info", str(models_dir / file)]) == 0
    out = capsys.readouterr().out
    assert f"quantization:  {kind}" in out
    assert f"images 1x3x{size}" in out
    assert "format:        yolov8" in out
    assert "classes:       80" in out
    assert "names:         person, bicycle" in out


@pytest.mark.media
def test_pull_from_folder_cli(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "pull",
                "yolov8n-320-fp32",
                "--from",
                str(models_dir),
                "--dest",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert (tmp_path / "yolov8n_320_fp32.onnx").exists()


def test_cli_error_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", str(tmp_path / "none.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("weights", "imgsz", "opset", "message"),
    [
        ("yolov8n.pt", 300, 17, "multiple of 32"),
        ("yolov8n.pt", 640, 9, "opset 9"),
        ("yolov8n.onnx", 640, 17, "must be an Ultralytics .pt"),
        ("missing.pt", 640, 17, "not found; get them with"),
    ],
    ids=["size", "opset", "suffix", "missing"],
)
def test_export_argument_checks(
    tmp_path: Path, weights: str, imgsz: int, opset: int, message: str
) -> None:
    with pytest.raises(ExportError, match=message):
        check_export_args(tmp_path / weights, imgsz, opset)


def test_export_without_extra_names_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "yolov8n.pt"
    weights.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "ultralytics", None)
    with pytest.raises(ExportError, match=r"pip install sitlab-edge\[ultralytics\]"):
        export_onnx(weights, tmp_path / "out.onnx", imgsz=320)


@pytest.mark.media
def test_bench_measures_and_formats(models_dir: Path) -> None:
    result = measure(
        models_dir / "yolov8n_320_fp32.onnx", threads=1, warmup=1, runs=3, spin=False
    )
    table = markdown_table([result])
    assert result.median_ms > 0
    assert "| yolov8n_320_fp32.onnx | 320 | fp32 | CPU | 1 | off |" in table


def test_bench_rejects_missing_provider(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="'NoSuchExecutionProvider' is not available"):
        measure(tmp_path / "m.onnx", provider="NoSuchExecutionProvider")


def dets(rows: list[tuple[float, float, float, float, float, int]]) -> Detections:
    array = np.array(rows, dtype=np.float32).reshape(-1, 6)
    return Detections(array[:, :4], array[:, 4], array[:, 5].astype(np.int64))


@pytest.mark.parametrize(
    ("candidate", "reference", "expected"),
    [
        ([(0, 0, 10, 10, 0.9, 0)], [(0, 0, 10, 10, 1, 0)], 1.0),
        ([(0, 0, 10, 10, 0.9, 1)], [(0, 0, 10, 10, 1, 0)], 0.0),
        (
            [(20, 20, 30, 30, 0.9, 0), (0, 0, 10, 10, 0.5, 0)],
            [(0, 0, 10, 10, 1, 0)],
            0.5,
        ),
        (
            [(0, 0, 10, 10, 0.9, 0)],
            [(0, 0, 10, 10, 1, 0), (50, 50, 60, 60, 1, 0)],
            51 / 101,
        ),
        ([], [(0, 0, 10, 10, 1, 0)], 0.0),
    ],
    ids=["exact", "wrong-class", "false-positive-first", "half-recall", "nothing"],
)
def test_compare_map50(candidate, reference, expected) -> None:
    assert compare([dets(candidate)], [dets(reference)]).map50 == pytest.approx(
        expected, abs=1e-6
    )


def test_average_precision_no_positives() -> None:
    assert average_precision(np.array([0.5], np.float32), np.array([False]), 0) == (
        0.0,
        0.0,
    )


def test_usable_rejects_blind_model() -> None:
    frames = [np.zeros((8, 8, 3), np.uint8)] * 2
    verdict = check_model_usable(
        lambda _: Detections.empty(), frames, lambda _: dets([(0, 0, 4, 4, 1, 0)])
    )
    assert not verdict.usable
    assert (
        verdict.reason
        == "model detects nothing on 2 frames where the reference detects 2 objects"
    )


def test_usable_without_reference() -> None:
    frames = [np.zeros((8, 8, 3), np.uint8)]
    assert not check_model_usable(lambda _: Detections.empty(), frames).usable
    assert check_model_usable(lambda _: dets([(0, 0, 4, 4, 1, 0)]), frames).usable


@pytest.mark.media
def test_mot_ground_truth_reads_frames(media_dir: Path) -> None:
    truth = load_mot_ground_truth(media_dir / "tud_campus" / "gt" / "gt.txt", [1, 71])
    assert len(truth) == 2
    assert len(truth[0]) >= 4
