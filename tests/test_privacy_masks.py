"""Privacy masks on real footage: masked pixels are black and yield no counts.

TUD-Campus (640x480, 71 frames) with a mask over the left third. A line inside
the mask must stop counting, a line far from it must count as before, and no
detection may stand inside the mask, because the frame is blacked out before
the detector reads it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ruamel.yaml import YAML

from edge.cli import main
from edge.config import load_config
from edge.masks import PrivacyMask
from edge.pipeline import Pipeline
from edge.sinks import NullSink
from edge.types import Detections, Frame

pytestmark = pytest.mark.media

WIDTH, HEIGHT = 640, 480
MASK_RIGHT = WIDTH // 3
LEFT_THIRD = [[0, 0], [MASK_RIGHT, 0], [MASK_RIGHT, HEIGHT], [0, HEIGHT]]
INSIDE_LINE = "inside"  # x = 100, well inside the mask
OUTSIDE_LINE = "outside"  # x = 480, two thirds of the way across
# A box that straddles the mask edge can have its anchor a few pixels inside.
EDGE_MARGIN_PX = 16


def write_config(tmp_path: Path, model: Path, source: Path, *, masked: bool) -> Path:
    data: dict[str, Any] = {
        "site": "lab",
        "node": "campus",
        "source": {"uri": str(source), "fps": 25},
        "model": {"path": str(model), "intra_op_threads": 1},
        "detection": {"classes": ["person"]},
        "geometry": {"reference_resolution": [WIDTH, HEIGHT]},
        "lines": [
            {"name": INSIDE_LINE, "points": [[100, 0], [100, HEIGHT]]},
            {"name": OUTSIDE_LINE, "points": [[480, 0], [480, HEIGHT]]},
        ],
        "counts": {"interval_s": 60},
        "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
    }
    if masked:
        data["masks"] = [{"name": "left-third", "polygon": LEFT_THIRD}]
    path = tmp_path / ("masked.yaml" if masked else "plain.yaml")
    with path.open("w") as file:
        YAML().dump(data, file)
    return path


def crossings(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, int]:
    """Run the node through the CLI and return in + out per line."""
    code = main(["run", "--config", str(config), "--sink", "stdout"])
    assert code == 0
    totals: dict[str, int] = {INSIDE_LINE: 0, OUTSIDE_LINE: 0}
    for text in io.StringIO(capsys.readouterr().out):
        payload = json.loads(text)["payload"]
        if payload["kind"] != "counts":
            continue
        for row in payload["lines"]:
            totals[row["line"]] += row["in"] + row["out"]
    return totals


def test_mask_stops_counts_inside_it(
    tud_campus: Path,
    model_640: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain = crossings(
        write_config(tmp_path, model_640, tud_campus, masked=False), capsys
    )
    masked = crossings(
        write_config(tmp_path, model_640, tud_campus, masked=True), capsys
    )

    assert plain[INSIDE_LINE] > 0, plain
    assert masked[INSIDE_LINE] == 0, masked
    assert masked[OUTSIDE_LINE] == plain[OUTSIDE_LINE], (plain, masked)


class FrameAudit:
    """Records, per processed frame, the masked pixels and the detections."""

    def __init__(self, pipeline: Pipeline, coverage: np.ndarray) -> None:
        self.coverage = coverage
        self.frames = 0
        self.lit_masked_pixels = 0
        self.anchors: list[tuple[float, float]] = []
        postprocess = pipeline.detector.postprocess

        def recording_postprocess(*args: Any, **kwargs: Any) -> Detections:  # noqa: ANN401
            detections = postprocess(*args, **kwargs)
            for left, _top, right, bottom in detections.xyxy.tolist():
                self.anchors.append(((left + right) / 2, bottom))
            return detections

        pipeline.detector.postprocess = recording_postprocess  # type: ignore[method-assign]

    def on_frame(self, frame: Frame) -> None:
        self.frames += 1
        self.lit_masked_pixels += int(np.count_nonzero(frame.image[self.coverage]))


def test_mask_blacks_out_before_detection(
    tud_campus: Path, model_640: Path, tmp_path: Path
) -> None:
    config = load_config(write_config(tmp_path, model_640, tud_campus, masked=True))
    coverage = PrivacyMask([tuple(p) for p in LEFT_THIRD], (WIDTH, HEIGHT)).coverage()
    audit: FrameAudit | None = None

    def on_frame(frame: Frame) -> None:
        assert audit is not None
        audit.on_frame(frame)

    pipeline = Pipeline(config, NullSink("lab", "campus"), on_frame=on_frame)
    audit = FrameAudit(pipeline, coverage)
    pipeline.run()

    assert audit.frames == 71
    assert audit.lit_masked_pixels == 0
    assert audit.anchors, "the detector found nobody outside the mask either"
    deep_inside = [(x, y) for x, y in audit.anchors if x < MASK_RIGHT - EDGE_MARGIN_PX]
    assert deep_inside == []
