"""Incidents raised by the whole node on real footage."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from edge.cli import main
from edge.messages import validate

pytestmark = [pytest.mark.media, pytest.mark.slow]
EXAMPLES = Path(__file__).resolve().parent.parent / "firmware-config" / "examples"


def run_config(
    config: Path,
    source: Path,
    model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> list[dict[str, Any]]:
    text = config.read_text().replace(
        "../../var/models/yolov8n_640_fp32.onnx", str(model)
    )
    local = tmp_path / config.name
    local.write_text(text)
    code = main(
        ["run", "--config", str(local), "--source", str(source), "--sink", "stdout"]
    )
    assert code == 0
    out = capsys.readouterr().out
    return [json.loads(line)["payload"] for line in io.StringIO(out) if line.strip()]


def test_cyclist_on_hard_shoulder_raises_one_intrusion(
    media_dir: Path, model_640: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payloads = run_config(
        EXAMPLES / "highway-shoulder.yaml",
        media_dir / "highway_pedestrian_cctv" / "video02.avi",
        model_640,
        tmp_path,
        capsys,
    )
    incidents = [p for p in payloads if p["kind"] == "incident"]
    for payload in payloads:
        validate(payload)
    intrusions = [p for p in incidents if p["type"] == "intrusion"]
    phases = [p["phase"] for p in intrusions]
    assert phases.count("start") == 1
    assert phases.count("end") == 1
    assert len({p["incident_id"] for p in intrusions}) == 1
    assert intrusions[0]["class"] in ("person", "bicycle")
    assert intrusions[0]["zone"] == "hard-shoulder"
    assert not [p for p in incidents if p["type"] == "tampering"]
