"""Config of speeds and metre distances: parsing, errors and check-config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from edge.cli import main
from edge.config import ConfigError, NodeConfig, load_config, parse_config
from edge.config_check import check_deployable
from edge.ground import GroundPlane
from edge.incident_setup import build_engine
from edge.incidents import SpeedingRule, StoppedVehicleRule, WrongWayRule
from edge.scene import Scene
from tests.support.ground_camera import RESOLUTION, ground_section, pixel

REPO = Path(__file__).resolve().parent.parent
ROAD = [list(pixel(-5, 1)), list(pixel(5, 1)), list(pixel(5, 9)), list(pixel(-5, 9))]
GATE = [list(pixel(0, 0)), list(pixel(0, 10))]


def config_data(
    rules: list[dict[str, Any]],
    *,
    ground: bool = True,
    **extra: Any,  # noqa: ANN401
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "site": "lab",
        "node": "cam-01",
        "source": {"uri": "clip.avi"},
        "model": {"path": "model.onnx"},
        "geometry": {"reference_resolution": list(RESOLUTION)},
        "lines": [{"name": "gate", "points": GATE}],
        "zones": [{"name": "road", "polygon": ROAD}],
        "rules": rules,
        **extra,
    }
    if ground:
        data["ground"] = ground_section()
    return data


SPEEDING = {"name": "fast", "type": "speeding", "limit_kmh": 50}
STOPPED = {"name": "stopped", "type": "stopped_vehicle", "zones": ["road"]}
WRONG_WAY = {"name": "wrong", "type": "wrong_way", "lines": ["gate"], "allowed": "in"}
NO_GROUND_FIX = "run `sitlab-calibrate ground` to add one"


@pytest.mark.parametrize(
    ("rules", "ground", "extra", "message"),
    [
        (
            [SPEEDING],
            False,
            {},
            "rule 'fast' uses type speeding, which needs a ground plane, but the "
            f"config has no ground section; {NO_GROUND_FIX}",
        ),
        (
            [{**STOPPED, "min_size_m": 1.5}],
            False,
            {},
            f"rule 'stopped' uses min_size_m, .*{NO_GROUND_FIX}, or give the "
            r"distance in pixels \(the \*_px form\)",
        ),
        (
            [{**STOPPED, "still_radius_m": 0.5}],
            False,
            {},
            "rule 'stopped' uses still_radius_m, which needs a ground plane",
        ),
        (
            [{**WRONG_WAY, "min_travel_m": 1.0}],
            False,
            {},
            "rule 'wrong' uses min_travel_m, which needs a ground plane",
        ),
        (
            [],
            False,
            {"speed": {"method": "kalman"}},
            f"the speed section needs a ground plane, .*{NO_GROUND_FIX}",
        ),
        (
            [{**STOPPED, "still_radius_px": 20, "still_radius_m": 0.5}],
            True,
            {},
            "rule 'stopped': still_radius_px=20 and still_radius_m=0.5 are both "
            "set; give the distance once, as still_radius_px or as still_radius_m",
        ),
        (
            [{**WRONG_WAY, "min_travel_px": 10, "min_travel_m": 1.0}],
            True,
            {},
            "min_travel_px=10 and min_travel_m=1 are both set",
        ),
        (
            [{**SPEEDING, "min_size_px": 20, "min_size_m": 1.0}],
            True,
            {},
            "min_size_px=20 and min_size_m=1 are both set",
        ),
        (
            [{**SPEEDING, "release_margin_kmh": 50}],
            True,
            {},
            "rule 'fast': release_margin_kmh=50 must be below limit_kmh=50",
        ),
        (
            [{**SPEEDING, "zones": ["lawn"]}],
            True,
            {},
            "rule 'fast' refers to zone 'lawn', which is not configured",
        ),
        (
            [{**SPEEDING, "limit_kmh": 0}],
            True,
            {},
            "limit_kmh: Input should be greater than 0",
        ),
        (
            [],
            True,
            {"speed": {"window_s": 1.0, "min_span_s": 2.0}},
            "speed.min_span_s=2 is longer than speed.window_s=1",
        ),
        (
            [],
            True,
            {"speed": {"method": "average"}},
            "speed.method: Input should be 'window' or 'kalman'",
        ),
    ],
    ids=[
        "speeding-no-ground",
        "min-size-m-no-ground",
        "still-radius-m-no-ground",
        "min-travel-m-no-ground",
        "speed-section-no-ground",
        "radius-both-forms",
        "travel-both-forms",
        "size-both-forms",
        "margin-at-limit",
        "unknown-zone",
        "zero-limit",
        "span-longer-than-window",
        "unknown-method",
    ],
)
def test_config_errors(
    rules: list[dict[str, Any]], ground: bool, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(config_data(rules, ground=ground, **extra), "node.yaml")


def build_rules(config: NodeConfig) -> list[Any]:
    scene = Scene.from_config(config, RESOLUTION)
    engine = build_engine(config, scene, RESOLUTION, ["person", "bicycle", "car"])
    return [state.settings for state in engine._states]  # noqa: SLF001


def test_rules_in_metres_are_built() -> None:
    config = parse_config(
        config_data(
            [
                {**SPEEDING, "zones": ["road"], "min_size_m": 1.0},
                {**STOPPED, "still_radius_m": 0.5},
                {**WRONG_WAY, "min_travel_m": 1.0},
            ]
        )
    )

    speeding, stopped, wrong = build_rules(config)

    assert isinstance(speeding, SpeedingRule)
    assert speeding.limit_kmh == 50
    assert speeding.trigger_delay_s == 0.5
    assert speeding.min_size_m == 1.0
    assert speeding.ground_plane is not None
    assert speeding.classes == {"bicycle", "car", "motorcycle", "bus", "truck"}
    assert [zone.name for zone in speeding.zones] == ["road"]
    assert isinstance(stopped, StoppedVehicleRule)
    assert stopped.still_radius_m == 0.5
    assert isinstance(wrong, WrongWayRule)
    assert wrong.min_travel_m == 1.0


def test_pixel_defaults_apply_when_no_form_given() -> None:
    config = parse_config(config_data([STOPPED, WRONG_WAY], ground=False))

    stopped, wrong = build_rules(config)

    assert stopped.still_radius_px == 20.0
    assert stopped.still_radius_m == 0.0
    assert wrong.min_travel_px == 10.0
    assert wrong.min_travel_m == 0.0


def test_speeding_on_whole_frame_checks_clean() -> None:
    config = parse_config(config_data([SPEEDING]))

    assert check_deployable(config, load_model=False) == []


def test_lens_corrected_ground_without_lens_fails_check() -> None:
    data = config_data([SPEEDING])
    data["ground"]["lens_corrected"] = True
    config = parse_config(data)

    problems = check_deployable(config, load_model=False)

    assert len(problems) == 1
    assert "no lens section" in problems[0]


def test_check_config_names_rule_without_ground(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.yaml"
    with path.open("w") as stream:
        YAML().dump(config_data([SPEEDING], ground=False), stream)

    code = main(["check-config", "--no-model", str(path)])

    assert code == 2
    assert "rule 'fast' uses type speeding" in capsys.readouterr().err


def test_road_speed_example_checks_clean() -> None:
    path = REPO / "firmware-config" / "examples" / "road-speed.yaml"

    assert main(["check-config", "--no-model", str(path)]) == 0


def test_road_speed_gate_crosses_road() -> None:
    config = load_config(REPO / "firmware-config" / "examples" / "road-speed.yaml")
    assert config.ground is not None
    plane = GroundPlane.from_config(config.ground)
    gate = next(line for line in config.lines if line.name == "speed-gate")

    (east_a, north_a), (east_b, north_b) = plane.to_world(gate.points)

    assert abs(east_b - east_a) > 9.0
    assert abs(north_b - north_a) < 0.5
