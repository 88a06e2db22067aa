"""The preview's ground overlay: marked points with metres and a metre grid."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.preview import _grid_step, render_preview
from edge.config import parse_config
from tests.support.ground_camera import RESOLUTION, ground_section, project

BASE = {
    "site": "lab",
    "node": "road-04",
    "source": {"uri": "rtsp://127.0.0.1:8554/cam"},
    "model": {"path": "model.onnx"},
    "geometry": {"reference_resolution": list(RESOLUTION)},
}
GRID_GREY = np.array([200, 200, 200])


@pytest.mark.parametrize("with_ground", [True, False], ids=["ground", "no-ground"])
def test_preview_draws_ground_only_when_set(with_ground: bool) -> None:
    document = dict(BASE)
    if with_ground:
        document["ground"] = ground_section()
    config = parse_config(document)
    black = np.zeros((RESOLUTION[1], RESOLUTION[0], 3), dtype=np.uint8)
    image = render_preview(black, config)
    grey = np.all(image == GRID_GREY, axis=2).sum()
    assert (grey > 500) == with_ground
    if with_ground:
        # The grid's 0 m lines meet at the origin, which is inside the picture.
        x, y = np.round(project([(0.0, 0.0)])[0]).astype(int)
        window = image[y - 2 : y + 3, x - 2 : x + 3].astype(int)
        # Anti-aliasing dims the line's pixels, so any light grey counts.
        assert window.min(axis=2).max() > 80


@pytest.mark.parametrize(
    ("extent_m", "step"),
    [(3.0, 0.5), (12.0, 1.0), (20.0, 2.0), (50.0, 5.0), (5000.0, 100.0)],
    ids=["small", "street", "plaza", "road", "huge"],
)
def test_grid_step_keeps_lines_readable(extent_m: float, step: float) -> None:
    assert _grid_step(extent_m) == step
