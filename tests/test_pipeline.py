"""The node end to end on real footage with the real model."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from edge.cli import main
from edge.messages import validate

pytestmark = pytest.mark.media


def run_node(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> list[dict[str, Any]]:
    code = main(["run", "--sink", "stdout", *args])
    out = capsys.readouterr().out
    assert code == 0
    return [json.loads(line) for line in io.StringIO(out) if line.strip()]


def line_totals(records: list[dict[str, Any]], line: str, cls: str) -> tuple[int, int]:
    rows = [
        row
        for record in records
        if record["payload"]["kind"] == "counts"
        for row in record["payload"]["lines"]
        if row["line"] == line and row["class"] == cls
    ]
    return sum(row["in"] for row in rows), sum(row["out"] for row in rows)


@pytest.mark.parametrize(
    ("points", "expected_in_out"),
    [("320,0,320,480", (1, 4)), ("320,480,320,0", (4, 1))],
    ids=["downward-line", "swapped-points"],
)
def test_tud_campus_counts_match_ground_truth(
    tud_campus: Path,
    model_640: Path,
    capsys: pytest.CaptureFixture[str],
    points: str,
    expected_in_out: tuple[int, int],
) -> None:
    # Ground truth: 5 people cross x=320, 4 left to right and 1 right to left.
    # A line pointing down the screen counts right-to-left motion as `in`.
    records = run_node(
        [
            "--source",
            str(tud_campus),
            "--fps",
            "25",
            "--model",
            str(model_640),
            "--line",
            f"door:{points}",
        ],
        capsys,
    )
    assert line_totals(records, "door", "person") == expected_in_out
    for record in records:
        validate(record["payload"])


def test_file_source_flushes_last_interval(
    tud_campus: Path, model_640: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = run_node(
        [
            "--source",
            str(tud_campus),
            "--fps",
            "25",
            "--model",
            str(model_640),
            "--line",
            "door:320,0,320,480",
            "--interval",
            "1",
        ],
        capsys,
    )
    counts = [r["payload"] for r in records if r["payload"]["kind"] == "counts"]
    # 71 frames at 25 fps span 2.84 s: two whole 1 s intervals and a partial one.
    assert len(counts) == 3
    assert sum(c["frames"] for c in counts) == 71
    assert [c["seq"] for c in counts] == [1, 2, 3]
    assert records[0]["payload"]["kind"] == "status"


def test_missing_model_fails_with_path(
    tud_campus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    code = main(
        [
            "run",
            "--sink",
            "stdout",
            "--source",
            str(tud_campus),
            "--fps",
            "25",
            "--model",
            str(tmp_path / "absent.onnx"),
        ]
    )
    assert code == 1
    assert "absent.onnx" in caplog.text
    assert "sitlab-models" in caplog.text
