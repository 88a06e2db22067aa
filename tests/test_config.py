"""Node config: validation errors name the field, the line and the fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from edge.cli import main
from edge.config import ConfigError, json_schema, load_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "firmware-config" / "examples").glob("*.yaml"))

MINIMAL = """\
site: lab
node: cam-01
source:
  uri: clip.avi
model:
  path: model.onnx
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_configs_are_valid(path: Path) -> None:
    config = load_config(path)
    assert config.site


def test_example_configs_match_published_schema() -> None:
    schema = json.loads(
        (REPO / "firmware-config" / "node-config.schema.json").read_text()
    )
    assert schema == json.loads(json.dumps(json_schema())), (
        "firmware-config/node-config.schema.json is stale; regenerate it with "
        "`sitlab-edge schema > firmware-config/node-config.schema.json`"
    )
    for path in EXAMPLES:
        jsonschema.validate(YAML(typ="safe").load(path.read_text()), schema)


def test_relative_paths_resolve_against_config_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.model.path == (tmp_path / "model.onnx").resolve()
    assert config.outbox.path.is_absolute()
    assert config.source.uri == str((tmp_path / "clip.avi").resolve())


@pytest.mark.parametrize(
    "uri",
    [
        "rtsp://cam.local/stream",
        "/dev/video0",
        "0",
        "gst:videotestsrc ! appsink",
        "picamera:0",
        "/abs/clip.avi",
    ],
    ids=["rtsp", "v4l2-device", "device-index", "gstreamer", "picamera", "absolute"],
)
def test_non_file_sources_are_not_resolved(tmp_path: Path, uri: str) -> None:
    config = load_config(
        write(tmp_path, MINIMAL.replace("uri: clip.avi", f"uri: '{uri}'"))
    )
    assert config.source.uri == uri


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("colour: red\n", r"node.yaml:7: colour: unknown key"),
        (
            "lines:\n  - name: a\n    points: [[0, 0], [1, 1]]\n",
            r"reference_resolution is missing.*e\.g\. \[1280, 720\]",
        ),
        ("timezone: Mars/Olympus\n", r"timezone: unknown time zone 'Mars/Olympus'"),
        ("detection:\n  confidence: 1.5\n", r"node.yaml:8: detection.confidence"),
        ("tracker:\n  lost_track_buffer_s: 0\n", r"tracker.lost_track_buffer_s"),
        ("zones:\n  - name: z\n    polygon: [[0, 0], [1, 0]]\n", r"at least 3 items"),
        (
            "geometry:\n  reference_resolution: [640, 480]\nlines:\n"
            "  - name: a\n    points: [[0, 0], [1, 1]]\n"
            "  - name: a\n    points: [[0, 1], [1, 1]]\n",
            r"two entries named 'a'",
        ),
    ],
    ids=[
        "unknown-key",
        "pixels-without-reference",
        "unknown-timezone",
        "confidence-out-of-range",
        "zero-lost-buffer",
        "zone-with-two-points",
        "duplicate-line-names",
    ],
)
def test_invalid_config_names_field_and_fix(
    tmp_path: Path, extra: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, MINIMAL + extra))


GEOMETRY_768 = "geometry:\n  reference_resolution: [768, 576]\n"
ZONE = (
    "geometry:\n  reference_resolution: [768, 576]\n"
    "zones:\n  - {name: z, polygon: [[0, 0], [100, 0], [100, 100]]}\n"
)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("detection:\n  confidence: .nan\n", r"detection.confidence: .*finite"),
        ("tracker:\n  lost_track_buffer_s: .inf\n", r"lost_track_buffer_s: .*finite"),
        (
            "detection:\n  confidence: true\n",
            r"confidence is true, invalid for a number",
        ),
        ("motion:\n  max_interval_s: .nan\n", r"motion.max_interval_s: .*finite"),
        ('config_version: "v\\0x"\n', r"config_version: String should match"),
        (
            "geometry:\n  reference_resolution: [true, 576]\n",
            r"reference_resolution contains true or false",
        ),
        (
            GEOMETRY_768 + "lines:\n  - {name: l1, points: [[true, 0], [384, 576]]}\n",
            r"points contains true or false",
        ),
        (
            ZONE
            + "rules:\n  - {name: r, type: loitering, zones: [z], limit_s: .nan}\n",
            r"limit_s: .*finite",
        ),
        (
            ZONE
            + "rules:\n  - {name: r, type: loitering, zones: [z], limit_s: false}\n",
            r"limit_s is false, invalid for a number",
        ),
        (
            ZONE + "rules:\n  - {name: r, type: intrusion, zones: [z],"
            " classes: [pedestrian]}\n",
            r"\['pedestrian'\], which are not COCO class names",
        ),
        (
            ZONE
            + "rules:\n  - {name: r, type: intrusion, zones: [z], classes: [dog]}\n",
            r"\['dog'\], which detection.classes drops",
        ),
    ],
    ids=[
        "nan",
        "infinity",
        "bool-as-number",
        "motion-nan",
        "nul-in-config-version",
        "bool-in-resolution",
        "bool-in-points",
        "rule-nan",
        "rule-bool",
        "rule-class-misspelt",
        "rule-class-not-detected",
    ],
)
def test_config_rejects_bad_numbers_and_classes(
    tmp_path: Path, extra: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, MINIMAL + extra))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("site: [unclosed\n", "invalid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
    ids=["bad-yaml", "not-a-mapping"],
)
def test_unreadable_config_is_rejected(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_missing_config_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*absent.yaml"):
        load_config(tmp_path / "absent.yaml")


def test_password_env_missing_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SITLAB_TEST_PASSWORD", raising=False)
    config = load_config(
        write(tmp_path, MINIMAL + "mqtt:\n  password_env: SITLAB_TEST_PASSWORD\n")
    )
    with pytest.raises(ConfigError, match="SITLAB_TEST_PASSWORD.*not set"):
        config.mqtt.password()
    monkeypatch.setenv("SITLAB_TEST_PASSWORD", "s3cret")
    assert config.mqtt.password() == "s3cret"


GEOMETRY = "geometry:\n  reference_resolution: [768, 576]\n"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (
            GEOMETRY + "lines:\n  - {name: l1, points: [[384, 0], [384, 0]]}\n",
            r"counting: line 'l1' has zero length",
        ),
        (
            GEOMETRY + "lines:\n  - {name: l1, points: [[384, 0], [900, 576]]}\n",
            r"line 'l1' end \(900, 576\) is outside the reference frame 768x576",
        ),
        (
            GEOMETRY + "zones:\n  - name: z\n"
            "    polygon: [[0, 0], [100, 100], [0, 100], [100, 0]]\n",
            r"zone 'z'.*(cross|intersect)",
        ),
        (
            "geometry:\n  units: normalized\n"
            "lines:\n  - {name: l1, points: [[0, 0], [384, 576]]}\n",
            r"outside the normalised frame",
        ),
        (
            GEOMETRY
            + "zones:\n  - {name: z, polygon: [[0, 0], [100, 0], [100, 100]]}\n"
            "rules:\n  - {name: r, type: intrusion, zones: [nowhere]}\n",
            r"rule 'r' refers to zone 'nowhere'",
        ),
        (
            GEOMETRY
            + "zones:\n  - {name: z, polygon: [[0, 0], [100, 0], [100, 100]]}\n"
            "rules:\n  - {name: r, type: abandoned_object, zones: [z]}\n",
            r"watches \['backpack', 'handbag', 'suitcase'\].*"
            r"add them to detection.classes",
        ),
    ],
    ids=[
        "zero-length-line",
        "point-outside-frame",
        "self-intersecting-zone",
        "pixels-as-normalised",
        "rule-on-unknown-zone",
        "rule-class-not-detected",
    ],
)
def test_check_config_rejects_what_run_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, match: str
) -> None:
    path = write(tmp_path, MINIMAL + extra)
    assert main(["check-config", "--no-model", str(path)]) == 2
    assert re.search(match, capsys.readouterr().err)


@pytest.mark.media
@pytest.mark.parametrize(
    ("model_line", "match"),
    [
        ("  path: absent.onnx\n", r"model: model file .*absent.onnx' not found"),
        (
            "  path: {models}/yolov8n_320_fp32.onnx\n  sha256: '" + "0" * 64 + "'\n",
            r"model: .*has sha256 b73aa24b.*expected 0000",
        ),
    ],
    ids=["missing-model", "wrong-sha256"],
)
def test_check_config_loads_model(
    tmp_path: Path,
    models_dir: Path,
    capsys: pytest.CaptureFixture[str],
    model_line: str,
    match: str,
) -> None:
    text = MINIMAL.replace("  path: model.onnx\n", model_line.format(models=models_dir))
    assert main(["check-config", str(write(tmp_path, text))]) == 2
    assert re.search(match, capsys.readouterr().err)


def test_check_config_command_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--no-model", str(write(tmp_path, MINIMAL))]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["check-config", str(write(tmp_path, MINIMAL + "bogus: 1\n"))]) == 2
    assert "bogus: unknown key" in capsys.readouterr().err


def test_non_utf8_config_names_fix(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_bytes(MINIMAL.encode() + "# kamera u nádraží\n".encode("cp1250"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 .*save it as UTF-8"):
        load_config(path)
