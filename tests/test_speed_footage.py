"""Speeds on real footage: the campus clip with the technician guide's ground points.

The guide's points are an example, not a survey of the PETS 2009 scene, so
the test checks that speeds flow from the frame loop into counts and
incidents with plausible magnitudes, not their accuracy. With those points
walkers cross the line at about 7 to 10 km/h, roughly twice a real walking
pace.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from calibration.ground import PointPair, build_ground
from edge.config import parse_config
from edge.pipeline import Pipeline
from edge.sinks import StdoutSink

pytestmark = pytest.mark.media

VTEST_WH = (768, 576)
# The points of the technician guide's `sitlab-calibrate ground` example, in
# metres east and north of the bottom-left marker.
GUIDE_POINTS = [
    PointPair((120, 540), (0.0, 0.0)),
    PointPair((700, 545), (12.5, 0.0)),
    PointPair((610, 260), (12.5, 18.0)),
    PointPair((170, 262), (0.0, 18.0)),
    PointPair((400, 380), (6.0, 8.0)),
]
STREAM_S = 30.0


def run_campus(
    vtest_avi: Path, model_640: Path, tmp_path: Path
) -> list[dict[str, Any]]:
    _, ground = build_ground(GUIDE_POINTS, VTEST_WH)
    config = parse_config(
        {
            "site": "lab",
            "node": "campus",
            "source": {"uri": str(vtest_avi)},
            "model": {"path": str(model_640)},
            "geometry": {"reference_resolution": list(VTEST_WH)},
            "lines": [{"name": "walkway", "points": [[120, 330], [700, 330]]}],
            "ground": ground.model_dump(mode="json"),
            "rules": [
                {
                    "name": "running",
                    "type": "speeding",
                    "classes": ["person"],
                    "limit_kmh": 3.0,
                    "release_margin_kmh": 1.0,
                }
            ],
            "counts": {"interval_s": 10},
            "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
        }
    )
    stream = io.StringIO()
    Pipeline(config, StdoutSink("lab", "campus", stream), max_stream_s=STREAM_S).run()
    return [json.loads(line)["payload"] for line in stream.getvalue().splitlines()]


def test_campus_run_reports_speeds(
    vtest_avi: Path, model_640: Path, tmp_path: Path
) -> None:
    payloads = run_campus(vtest_avi, model_640, tmp_path)

    stats = [
        row[field]
        for payload in payloads
        if payload["kind"] == "counts"
        for row in payload["lines"]
        for field in ("speed_in", "speed_out")
        if field in row
    ]
    speeding = [p for p in payloads if p["kind"] == "incident"]
    print("speed stats:", stats)
    print("incident details:", [p["detail"] for p in speeding])
    assert stats, "no crossing of the walkway had a speed"
    assert all(1.0 < item["mean_kmh"] < 15.0 for item in stats)
    assert all(item["max_kmh"] < 25.0 for item in stats)
    starts = [p for p in speeding if p["phase"] == "start"]
    assert starts, "nobody walked faster than 3 km/h"
    assert all(p["type"] == "speeding" for p in starts)
    assert all(p["detail"]["limit_kmh"] == 3.0 for p in starts)
