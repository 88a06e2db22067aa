"""Ground-plane homography, WGS84 conversion and track speeds on a known camera."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from calibration.ground import (
    GroundCalibrationError,
    PointPair,
    apply_homography,
    build_ground,
    fit_homography,
    parse_point,
    wgs84_to_local,
)
from edge.ground import GroundError, GroundPlane, SpeedMethod, TrackSpeeds
from edge.types import TrackedFrame
from tests.support.ground_camera import tracked_at

RESOLUTION = (1280, 720)
CAMERA = np.array([[1000.0, 0, 640], [0, 1000.0, 360], [0, 0, 1]])
TILT = math.radians(40)
# Camera 9 m up, 6 m south of the origin, looking north and down.
CAMERA_CENTRE = np.array([0.0, -6.0, 9.0])
ROTATION = np.array(
    [
        [1.0, 0.0, 0.0],
        [0.0, -math.sin(TILT), -math.cos(TILT)],
        [0.0, math.cos(TILT), -math.sin(TILT)],
    ]
)


def project(world_en: np.ndarray) -> np.ndarray:
    """Image pixels of ground points (east, north) in metres."""
    points = np.hstack(
        [np.asarray(world_en, float).reshape(-1, 2), np.zeros((len(world_en), 1))]
    )
    camera = (points - CAMERA_CENTRE) @ ROTATION.T
    pixels = camera @ CAMERA.T
    return pixels[:, :2] / pixels[:, 2:3]


MARKERS = np.array(
    [
        [-5, 0],
        [5, 0],
        [5, 10],
        [-5, 10],
        [0, 5],
        [-3, 2],
        [3, 8],
        [2, 1],
        [-2, 9],
        [4, 4],
    ],
    dtype=float,
)


def true_plane() -> GroundPlane:
    fit = fit_homography(project(MARKERS), MARKERS)
    return GroundPlane(fit.homography, RESOLUTION)


@pytest.mark.parametrize("count", [4, 6, 10], ids=["four", "six-lsq", "ten-ransac"])
def test_noisy_points_give_centimetre_world_error(count: int) -> None:
    rng = np.random.default_rng(7)
    image = project(MARKERS[:count]) + rng.normal(0.0, 1.0, (count, 2))
    assert np.all((image >= 0) & (image <= RESOLUTION))

    fit = fit_homography(image, MARKERS[:count])

    grid = np.array(
        [[x, y] for x in np.linspace(-5, 5, 11) for y in np.linspace(0, 10, 11)]
    )
    error = np.hypot(*(apply_homography(fit.homography, project(grid)) - grid).T)
    print(
        f"{count} points, 1 px noise: max {error.max():.3f} m, "
        f"rms {np.sqrt(np.mean(error**2)):.3f} m"
    )
    assert float(np.sqrt(np.mean(error**2))) < 0.05
    assert all(fit.inliers)


def test_four_points_report_no_leave_one_out() -> None:
    fit = fit_homography(project(MARKERS[:4]), MARKERS[:4])

    assert fit.loo_errors_m is None
    assert fit.rms_error_m < 1e-6


def test_wrong_measurement_shows_in_errors() -> None:
    world = MARKERS[:6].copy()
    clean = fit_homography(project(MARKERS[:6]), world)
    world[4] += [0.8, 0.0]  # point 5 measured 80 cm off

    wrong = fit_homography(project(MARKERS[:6]), world)

    assert clean.loo_errors_m is not None
    assert wrong.loo_errors_m is not None
    assert float(np.nanmax(clean.loo_errors_m)) < 1e-3
    assert float(np.max(wrong.errors_m)) > 0.1
    assert float(np.nanmax(wrong.loo_errors_m)) > 0.5


def test_ransac_drops_a_wrong_point() -> None:
    world = MARKERS.copy()
    world[6] += [2.0, 1.0]

    fit = fit_homography(project(MARKERS), world)

    assert fit.inliers[6] is False
    assert sum(fit.inliers) == len(MARKERS) - 1


@pytest.mark.parametrize(
    ("image", "world", "message"),
    [
        (
            [[100, 600], [400, 600], [700, 600], [600, 300]],
            [[0, 0], [3, 0], [6, 0], [5, 8]],
            r"image points are \(nearly\) collinear: "
            r"1 \(100, 600\), 2 \(400, 600\), 3 \(700, 600\)",
        ),
        (
            [[100, 600], [400, 620], [700, 500], [600, 300]],
            [[0, 0], [3, 0], [6, 0.05], [5, 8]],
            r"world points are \(nearly\) collinear: "
            r"1 \(0, 0\), 2 \(3, 0\), 3 \(6, 0.05\)",
        ),
        (
            [[100, 600], [400, 600], [700, 600], [900, 600], [1000, 600]],
            [[0, 0], [3, 0], [6, 0], [8, 0], [9, 0]],
            "collinear",
        ),
        (
            [[100, 600], [400, 620], [700, 500]],
            [[0, 0], [3, 0], [5, 8]],
            "3 point.s. given; a ground plane needs at least 4",
        ),
        (
            [[100, 600], [100.5, 600], [700, 500], [600, 300]],
            [[0, 0], [3, 0], [6, 4], [5, 8]],
            "image points 1 and 2 are the same place",
        ),
    ],
    ids=[
        "collinear-image",
        "collinear-world",
        "all-on-a-line",
        "three-points",
        "duplicate",
    ],
)
def test_degenerate_point_sets_rejected(image: list, world: list, message: str) -> None:
    with pytest.raises(GroundCalibrationError, match=message):
        fit_homography(np.array(image, float), np.array(world, float))


def test_collinear_triple_allowed_among_more_points() -> None:
    # Points 1, 5 and 2 lie on one line, but 1, 2, 3, 4 span an area.
    world = np.array([[-5, 0], [5, 0], [5, 10], [-5, 10], [0, 0]], float)

    fit = fit_homography(project(world), world)

    assert fit.rms_error_m < 1e-6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("120,400=3.5,-2", PointPair((120, 400), (3.5, -2))),
        ("1,2=50.1,14.4", PointPair((1, 2), (50.1, 14.4))),
    ],
    ids=["metres", "degrees"],
)
def test_point_parsing(text: str, expected: PointPair) -> None:
    assert parse_point(text) == expected


@pytest.mark.parametrize(
    "text",
    ["120,400", "120=3,4", "a,b=1,2", "1,2=3,4,5"],
    ids=["no-world", "one-coord", "letters", "three-world"],
)
def test_point_parsing_rejects(text: str) -> None:
    with pytest.raises(GroundCalibrationError, match="write X,Y=EAST,NORTH"):
        parse_point(text)


def _enu_exact(lat: float, lon: float, lat0: float, lon0: float) -> tuple[float, float]:
    a, e2 = 6378137.0, 6.69437999014e-3

    def ecef(phi_deg: float, lam_deg: float) -> np.ndarray:
        phi, lam = math.radians(phi_deg), math.radians(lam_deg)
        n = a / math.sqrt(1 - e2 * math.sin(phi) ** 2)
        return np.array(
            [
                n * math.cos(phi) * math.cos(lam),
                n * math.cos(phi) * math.sin(lam),
                n * (1 - e2) * math.sin(phi),
            ]
        )

    d = ecef(lat, lon) - ecef(lat0, lon0)
    phi, lam = math.radians(lat0), math.radians(lon0)
    east = -math.sin(lam) * d[0] + math.cos(lam) * d[1]
    north = (
        -math.sin(phi) * math.cos(lam) * d[0]
        - math.sin(phi) * math.sin(lam) * d[1]
        + math.cos(phi) * d[2]
    )
    return east, north


@pytest.mark.parametrize(
    "lat0", [0.0, 50.08, 69.6], ids=["equator", "prague", "tromso"]
)
def test_wgs84_matches_east_north_up_at_1km(lat0: float) -> None:
    lon0 = 14.42
    offsets = [
        (0.009, 0.0),
        (0.0, 0.009 / math.cos(math.radians(lat0))),
        (-0.0064, -0.0064),
    ]
    points = [(lat0 + dlat, lon0 + dlon) for dlat, dlon in offsets]

    local, _ = wgs84_to_local(points, origin=(lat0, lon0))

    for (lat, lon), (east, north) in zip(points, local, strict=True):
        exact_east, exact_north = _enu_exact(lat, lon, lat0, lon0)
        assert math.hypot(exact_east, exact_north) < 1010
        assert math.hypot(east - exact_east, north - exact_north) < 0.001


def test_wgs84_rejects_swapped_coordinates() -> None:
    with pytest.raises(GroundCalibrationError, match="give LAT,LON in that order"):
        wgs84_to_local([(14.4, 150.0), (100.0, 14.0)])


def test_build_ground_from_wgs84_points() -> None:
    lat0, lon0 = 50.08, 14.42
    metres_per_degree_lat = 111_250.0
    metres_per_degree_lon = 111_320.0 * math.cos(math.radians(lat0))
    pairs = [
        PointPair(
            tuple(project(np.array([marker]))[0]),
            (
                lat0 + marker[1] / metres_per_degree_lat,
                lon0 + marker[0] / metres_per_degree_lon,
            ),
        )
        for marker in MARKERS[:6]
    ]

    fit, config = build_ground(pairs, RESOLUTION, wgs84=True)

    assert config.origin_wgs84 is not None
    assert config.wgs84_points is not None
    assert fit.rms_error_m < 0.01
    # Distances survive the conversion: markers 1 and 2 are 10 m apart.
    plane = GroundPlane.from_config(config)
    assert plane.distance_m(pairs[0].image_xy, pairs[1].image_xy) == pytest.approx(
        10.0, rel=0.01
    )


def test_build_ground_rejects_point_outside_snapshot() -> None:
    pairs = [PointPair((1300, 10), (0, 0))] + [
        PointPair((x, 500), (x / 100, 1)) for x in (10, 300, 600)
    ]

    with pytest.raises(
        GroundCalibrationError,
        match=r"image point 1 \(1300, 10\) is outside the 1280x720 snapshot",
    ):
        build_ground(pairs, RESOLUTION)


@pytest.mark.parametrize(
    ("start", "heading"),
    [((-5.0, 3.0), (1.0, 0.0)), ((0.0, 0.0), (0.0, 1.0)), ((-3.0, 1.0), (0.6, 0.8))],
    ids=["east", "north-away", "diagonal"],
)
@pytest.mark.parametrize("method", list(SpeedMethod), ids=lambda m: m.value)
def test_ten_metres_per_second_is_36_kmh(
    start: tuple[float, float], heading: tuple[float, float], method: SpeedMethod
) -> None:
    plane = true_plane()
    speeds = TrackSpeeds(plane, method=method)
    fps, dt = 10.0, 1e-3
    results = {}
    for step in range(11):
        t = step / fps
        position = np.array(start) + 10.0 * t * np.array(heading)
        before = project(np.array([position - 10.0 * dt * np.array(heading)]))[0]
        after = project(np.array([position + 10.0 * dt * np.array(heading)]))[0]
        velocity = tuple((after - before) / (2 * dt))
        results = speeds.update(
            tracked_at(t, *project(np.array([position]))[0], velocity=velocity)
        )

    assert results[1] == pytest.approx(36.0, rel=0.02)
    assert speeds.speed_kmh(1) == results[1]


def test_speed_state_is_purged() -> None:
    speeds = TrackSpeeds(true_plane(), max_tracks=2)
    tracked = tracked_at(0.0, *project(np.array([[0.0, 5.0]]))[0])
    speeds.update(tracked)
    tracked.ended_track_ids.append(1)
    speeds.update(TrackedFrame(frame=tracked.frame, ended_track_ids=[1]))

    assert speeds.tracked_count == 0


def test_points_above_horizon_have_no_ground_position() -> None:
    plane = true_plane()
    # With a 40 degree tilt and f = 1000 px the horizon is near y = -480.
    east, north = plane.to_world_point(640.0, -900.0)

    assert math.isnan(east)
    assert math.isnan(north)


def test_ground_plane_scales_to_stream() -> None:
    plane = true_plane()
    half = plane.for_stream((640, 360))
    a, b = project(np.array([[-5.0, 0.0], [5.0, 10.0]]))

    assert half.distance_m(a / 2, b / 2) == pytest.approx(
        plane.distance_m(a, b), rel=1e-9
    )
    assert plane.metres_per_pixel(a) == pytest.approx(
        half.metres_per_pixel(a / 2) / 2, rel=1e-3
    )


def test_lens_corrected_ground_needs_lens() -> None:
    _, config = build_ground(
        [
            PointPair(tuple(p), tuple(w))
            for p, w in zip(project(MARKERS[:4]), MARKERS[:4], strict=True)
        ],
        RESOLUTION,
    )
    broken = config.model_copy(update={"lens_corrected": True})

    with pytest.raises(GroundError, match="no lens section"):
        GroundPlane.from_config(broken)


def test_lens_undistortion_applies_before_homography() -> None:
    from calibration.lens import LensResult
    from edge.lens import LensModel

    dist = np.array([-0.25, 0.06, 0.0, 0.0, 0.0])
    lens = LensResult(CAMERA, dist, RESOLUTION, 0.2, {}, (), ()).to_config()
    model = LensModel.from_config(lens)
    distorted = model.distort_points(project(MARKERS))
    pairs = [
        PointPair(tuple(p), tuple(w)) for p, w in zip(distorted, MARKERS, strict=True)
    ]

    fit, config = build_ground(pairs, RESOLUTION, lens=lens)
    plane = GroundPlane.from_config(config, lens)

    assert fit.rms_error_m < 0.01
    np.testing.assert_allclose(plane.to_world(distorted), MARKERS, atol=0.01)
    assert cv2.__version__
