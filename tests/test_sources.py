"""Video sources against real files, real folders and a real loopback MJPEG stream."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.sources import (
    ImageFolderSource,
    LiveSource,
    ReconnectPolicy,
    SourceConfigError,
    SourceDecodeError,
    SourceDependencyError,
    SourceError,
    SourceNotFoundError,
    SourceStatus,
    StatusEvent,
    VideoSource,
    open_source,
)
from edge.sources.base import plausible_fps
from edge.sources.images import natural_key
from edge.sources.live import redact_uri
from edge.sources.picamera import SUPPORTED_FORMATS, to_bgr
from edge.types import Frame
from tests.support.fake_picamera import FakePicamera2
from tests.support.video_files import write_matroska_without_frame_rate
from tests.support.video_mjpeg_server import MjpegServer, encode_clip, free_port

START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def next_event(source: VideoSource, timeout_s: float) -> StatusEvent:
    return source.events.get(timeout=timeout_s)


# Files ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def matroska_without_rate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("video")
    path = folder / "no_rate.mkv"
    return write_matroska_without_frame_rate(path, frames=250, fps=25.0)


@pytest.mark.parametrize(
    ("fallback_fps", "expected_fps"),
    [(None, None), (25.0, 25.0)],
    ids=["timestamps-only", "configured-fallback"],
)
def test_file_without_frame_rate_uses_timestamps(
    matroska_without_rate: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fallback_fps: float | None,
    expected_fps: float | None,
) -> None:
    # With its default 20-frame probe FFmpeg estimates 25 fps from the block
    # timestamps, so no rate reaches OpenCV as 0 from this file. Turning the
    # probe off makes OpenCV fall back to 1 / time_base, i.e. 1000 fps for
    # Matroska, which is the broken value seen on real files.
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "fpsprobesize;0")
    probe = cv2.VideoCapture(str(matroska_without_rate), cv2.CAP_FFMPEG)
    reported = probe.get(cv2.CAP_PROP_FPS)
    probe.release()
    assert reported == 1000.0

    caplog.set_level(logging.WARNING, logger="edge.sources.file")
    with open_source(str(matroska_without_rate), fps=fallback_fps) as source:
        frames = list(source)

    warnings = [r for r in caplog.records if "not a usable frame rate" in r.message]
    assert len(warnings) == 1
    assert source.fps == expected_fps
    assert len(frames) == 250
    pts = [frame.pts_s for frame in frames]
    assert pts[0] == 0.0
    assert pts[-1] == pytest.approx(9.96)
    steps = np.diff(pts)
    assert np.allclose(steps, 0.04)
    assert pts[-1] + float(np.median(steps)) == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (25.0, 25.0),
        (0.0, None),
        (float("nan"), None),
        (float("inf"), None),
        (1000.0, None),
        (90000.0, None),
        (-1.0, None),
        (None, None),
    ],
    ids=[
        "normal",
        "zero",
        "nan",
        "inf",
        "matroska-time-base",
        "mp4-time-base",
        "negative",
        "missing",
    ],
)
def test_plausible_fps(value: float | None, expected: float | None) -> None:
    assert plausible_fps(value) == expected


@pytest.mark.media
def test_vtest_avi_every_frame_in_order(vtest_avi: Path) -> None:
    with open_source(vtest_avi.as_uri(), start_at=START) as source:
        frames = list(source)

    assert source.fps == 10.0
    assert source.resolution_wh == (768, 576)
    assert source.is_live is False
    assert len(frames) == 795
    assert [frame.index for frame in frames] == list(range(795))
    pts = [frame.pts_s for frame in frames]
    assert pts[0] == 0.0
    assert pts[-1] == pytest.approx(79.4)
    assert all(later > earlier for earlier, later in zip(pts, pts[1:], strict=False))
    assert frames[-1].captured_at == START + timedelta(seconds=pts[-1])
    assert frames[0].image.shape == (576, 768, 3)
    assert source.stats.frames_read == 795
    assert source.stats.frames_dropped_stale == 0


@pytest.mark.media
def test_tud_campus_folder_at_25_fps(tud_campus: Path) -> None:
    with open_source(str(tud_campus), fps=25, start_at=START) as source:
        frames = list(source)

    assert isinstance(source, ImageFolderSource)
    assert len(frames) == 71
    assert frames[0].pts_s == 0.0
    assert frames[-1].pts_s == pytest.approx(2.8)
    assert source.resolution_wh == (640, 480)
    assert frames[-1].captured_at == START + timedelta(seconds=2.8)


@pytest.mark.media
def test_gif_decodes(media_dir: Path) -> None:
    gif = media_dir / "parking_lot_bicycle_gif" / "person-bicycle-car-detection.gif"
    with open_source(str(gif)) as source:
        frames = list(source)

    assert len(frames) == 41
    assert source.resolution_wh == (480, 270)
    assert frames[0].image.shape == (270, 480, 3)
    pts = [frame.pts_s for frame in frames]
    assert all(later > earlier for earlier, later in zip(pts, pts[1:], strict=False))


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["img10.jpg", "img2.jpg", "img1.jpg"], ["img1.jpg", "img2.jpg", "img10.jpg"]),
        (["000010.png", "000002.png"], ["000002.png", "000010.png"]),
        (["b2.jpg", "a10.jpg", "a9.jpg"], ["a9.jpg", "a10.jpg", "b2.jpg"]),
        (["IMG3.JPG", "img20.jpg"], ["IMG3.JPG", "img20.jpg"]),
    ],
    ids=["plain-numbers", "zero-padded", "prefix-then-number", "case-insensitive"],
)
def test_natural_order(names: list[str], expected: list[str]) -> None:
    assert sorted(names, key=natural_key) == expected


def _folder_with_images(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    image = np.full((24, 32, 3), 90, dtype=np.uint8)
    for name in names:
        cv2.imwrite(str(folder / name), image)
    return folder


def test_folder_sorted_naturally(tmp_path: Path) -> None:
    folder = _folder_with_images(tmp_path / "seq", ["f10.png", "f2.bmp", "f1.jpg"])
    (folder / "notes.txt").write_text("not an image")
    source = ImageFolderSource(folder, fps=5)
    frames = list(source)

    assert source.frame_count == 3
    assert [frame.pts_s for frame in frames] == [0.0, 0.2, 0.4]


def test_folder_with_unreadable_image_names_it(tmp_path: Path) -> None:
    folder = _folder_with_images(tmp_path / "seq", ["img1.jpg", "img3.jpg"])
    (folder / "img2.jpg").write_bytes(b"not a jpeg")
    source = ImageFolderSource(folder, fps=5)
    iterator = iter(source)

    assert next(iterator).index == 0
    with pytest.raises(SourceDecodeError, match=r"img2\.jpg cannot be decoded"):
        next(iterator)


def _empty_folder(tmp_path: Path) -> str:
    (tmp_path / "empty").mkdir()
    return str(tmp_path / "empty")


def _garbage_file(tmp_path: Path) -> str:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00" * 4096)
    return str(path)


def _missing_file(tmp_path: Path) -> str:
    return str(tmp_path / "nope.mp4")


@pytest.mark.parametrize(
    ("make_uri", "fps", "error", "message"),
    [
        (
            _missing_file,
            None,
            SourceNotFoundError,
            r"video file not found: .*nope\.mp4",
        ),
        (_garbage_file, None, SourceDecodeError, r"broken\.mp4 exists but OpenCV"),
        (_empty_folder, 25.0, SourceConfigError, r"has no images \(\.bmp, \.jpeg"),
        (lambda _: "   ", None, SourceConfigError, "source URI is empty"),
        (
            lambda _: "ftp://cam.example/stream",
            None,
            SourceConfigError,
            "unsupported URI scheme 'ftp'",
        ),
        (
            lambda _: "picamera:0?format=YUV420",
            None,
            SourceConfigError,
            "unsupported picamera2 format 'YUV420'.*RGB888",
        ),
        (
            lambda _: "picamera:0?size=big",
            None,
            SourceConfigError,
            "invalid size 'big'.*WIDTHxHEIGHT",
        ),
    ],
    ids=[
        "missing-file",
        "undecodable-file",
        "folder-without-images",
        "empty-uri",
        "unsupported-scheme",
        "picamera-bad-format",
        "picamera-bad-size",
    ],
)
def test_open_errors(
    tmp_path: Path,
    make_uri: object,
    fps: float | None,
    error: type[SourceError],
    message: str,
) -> None:
    uri = make_uri(tmp_path)  # type: ignore[operator]
    with pytest.raises(error, match=message):
        open_source(uri, fps=fps)


@pytest.mark.media
def test_folder_without_fps_says_how(tud_campus: Path) -> None:
    with pytest.raises(SourceConfigError, match=r"pass --fps or set source\.fps"):
        open_source(str(tud_campus))


def test_gstreamer_without_backend() -> None:
    if cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
        pytest.skip("this OpenCV build has GStreamer")
    with pytest.raises(SourceDependencyError, match="no GStreamer backend"):
        open_source("gst:videotestsrc ! videoconvert ! appsink")


def test_picamera_without_picamera2() -> None:
    try:
        import picamera2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("picamera2 is installed")
    with pytest.raises(
        SourceDependencyError, match="sudo apt install python3-picamera2"
    ):
        open_source("picamera:0")


# Live sources ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("rtsp://admin:secret@10.0.0.5:554/h264", "rtsp://admin:***@10.0.0.5:554/h264"),
        ("rtsp://10.0.0.5/h264", "rtsp://10.0.0.5/h264"),
        ("http://viewer:pw@cam/mjpg", "http://viewer:***@cam/mjpg"),
    ],
    ids=["password", "no-user", "http-password"],
)
def test_redact_uri(uri: str, expected: str) -> None:
    assert redact_uri(uri) == expected


@pytest.mark.parametrize(
    ("failures", "base_s"),
    [(0, 0.5), (1, 1.0), (3, 4.0), (6, 30.0), (30, 30.0)],
    ids=["first", "doubled", "eighth", "capped", "long-outage"],
)
def test_backoff_doubles_then_caps(failures: int, base_s: float) -> None:
    policy = ReconnectPolicy(reconnect_initial_s=0.5, reconnect_max_s=30.0)
    rng = random.Random(7)
    delays = [policy.backoff_s(failures, rng) for _ in range(50)]
    assert min(delays) >= base_s
    assert max(delays) <= base_s * 1.2
    assert len(set(delays)) > 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("read_timeout_s", 0.0, "read_timeout_s must be > 0 seconds, got 0.0"),
        ("reconnect_max_s", 0.1, r"reconnect_max_s \(0.1\) must be >="),
        ("max_reconnects", -1, "max_reconnects must be >= 0 or None, got -1"),
    ],
    ids=["zero-read-timeout", "max-below-initial", "negative-max-reconnects"],
)
def test_policy_rejects_bad_values(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReconnectPolicy(**{field: value})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def clip_jpegs(vtest_avi: Path) -> list[bytes]:
    return encode_clip(vtest_avi, frames=40, width=320)


@pytest.fixture
def mjpeg_server(clip_jpegs: list[bytes]) -> Iterator[MjpegServer]:
    server = MjpegServer(clip_jpegs, fps=25.0)
    server.start()
    yield server
    server.stop()


def _consume_in_background(source: VideoSource) -> list[Frame]:
    """Iterate `source` on a daemon thread, as the pipeline does, until it ends."""
    frames: list[Frame] = []
    thread = threading.Thread(target=lambda: frames.extend(source), daemon=True)
    thread.start()
    return frames


@pytest.mark.media
def test_stream_stall_goes_offline_then_recovers(mjpeg_server: MjpegServer) -> None:
    read_timeout_s = 1.0
    source = open_source(
        mjpeg_server.url,
        read_timeout_s=read_timeout_s,
        reconnect_initial_s=0.2,
        reconnect_max_s=1.0,
    )
    with source:
        frames = _consume_in_background(source)
        online = next_event(source, timeout_s=5.0)
        assert online.status is SourceStatus.ONLINE
        assert source.resolution_wh == (320, 240)

        time.sleep(0.3)
        mjpeg_server.stall()
        stalled_at = time.monotonic()
        offline = next_event(source, timeout_s=read_timeout_s + 3.0)
        assert offline.status is SourceStatus.OFFLINE
        assert "read timeout" in offline.reason
        assert offline.monotonic_s - stalled_at <= read_timeout_s + 1.0
        assert source.stats.read_timeouts == 1
        frames_before = len(frames)
        assert frames_before > 0

        mjpeg_server.drop_connections()
        mjpeg_server.resume()
        back = next_event(source, timeout_s=10.0)
        assert back.status is SourceStatus.ONLINE
        assert back.offline_for_s is not None
        assert back.offline_for_s > 0
        assert source.stats.reconnects == 1
        deadline = time.monotonic() + 2.0
        while len(frames) == frames_before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(frames) > frames_before

    pts = [frame.pts_s for frame in frames]
    assert all(later > earlier for earlier, later in zip(pts, pts[1:], strict=False))
    assert frames[0].image.shape == (240, 320, 3)


@pytest.mark.media
def test_slow_consumer_gets_newest_frames(mjpeg_server: MjpegServer) -> None:
    with open_source(mjpeg_server.url, read_timeout_s=3.0) as source:
        taken = []
        for frame in source:
            taken.append(frame)
            if len(taken) == 8:
                break
            time.sleep(0.2)  # 5 frames arrive at 25 fps during this sleep
        stats = source.stats

    indices = [frame.index for frame in taken]
    assert all(
        later > earlier for earlier, later in zip(indices, indices[1:], strict=False)
    )
    assert indices[-1] - indices[0] > len(taken)
    assert stats.frames_dropped_stale > 0
    assert stats.frames_read >= len(taken) + stats.frames_dropped_stale
    assert stats.frames_read <= len(taken) + stats.frames_dropped_stale + 1
    pts = [frame.pts_s for frame in taken]
    assert all(later > earlier for earlier, later in zip(pts, pts[1:], strict=False))
    assert taken[-1].captured_at.tzinfo is UTC


def test_nobody_listening_backs_off_then_gives_up() -> None:
    url = f"http://127.0.0.1:{free_port()}/stream.mjpg"
    events: list[StatusEvent] = []
    cpu_before = time.process_time()
    started = time.monotonic()
    source = open_source(
        url,
        read_timeout_s=1.0,
        reconnect_initial_s=0.1,
        reconnect_max_s=0.4,
        max_reconnects=4,
        on_status=events.append,
    )
    with source:
        frames = list(source)
    elapsed = time.monotonic() - started
    cpu_s = time.process_time() - cpu_before

    assert frames == []
    assert isinstance(source, LiveSource)
    assert source.stats.open_failures == 5
    assert [event.status for event in events] == [SourceStatus.OFFLINE]
    assert "cannot open stream" in events[0].reason
    assert source.last_error is not None
    # Retries wait 0.1, 0.2, 0.4 and 0.4 s before jitter.
    assert elapsed >= 1.1
    assert cpu_s < elapsed * 0.5


def test_missing_v4l2_device_goes_offline() -> None:
    device = "/dev/video97"
    if Path(device).exists():
        pytest.skip(f"{device} exists on this machine")
    with open_source(device, max_reconnects=0, reconnect_initial_s=0.05) as source:
        assert list(source) == []
    assert isinstance(source.last_error, SourceNotFoundError)
    event = next_event(source, timeout_s=1.0)
    assert event.status is SourceStatus.OFFLINE
    assert "camera device /dev/video97 not found" in event.reason


# Pi camera ------------------------------------------------------------------


@pytest.mark.parametrize("pixel_format", SUPPORTED_FORMATS, ids=SUPPORTED_FORMATS)
def test_picamera_formats_become_bgr(pixel_format: str) -> None:
    red = (255, 0, 0)
    with open_source(
        f"picamera:0?size=64x48&format={pixel_format}",
        picamera_factory=lambda number: FakePicamera2(number, rgb=red),
    ) as source:
        frame = next(iter(source))

    assert frame.image.shape == (48, 64, 3)
    assert frame.image.dtype == np.uint8
    assert frame.image.flags["C_CONTIGUOUS"]
    assert frame.image[0, 0].tolist() == [0, 0, 255]
    assert source.resolution_wh == (64, 48)


@pytest.mark.parametrize(
    ("shape", "pixel_format"),
    [((4, 4, 3), "XBGR8888"), ((4, 4, 4), "RGB888"), ((4, 4), "BGR888")],
    ids=["three-for-four", "four-for-three", "grey"],
)
def test_picamera_wrong_shape_is_rejected(
    shape: tuple[int, ...], pixel_format: str
) -> None:
    with pytest.raises(ValueError, match=f"for format {pixel_format}"):
        to_bgr(np.zeros(shape, dtype=np.uint8), pixel_format)


def test_picamera_busy_goes_offline() -> None:
    def busy(number: int) -> FakePicamera2:
        return FakePicamera2(number, busy=True)

    with open_source("picamera:0", picamera_factory=busy, max_reconnects=0) as source:
        assert list(source) == []
    event = next_event(source, timeout_s=1.0)
    assert event.status is SourceStatus.OFFLINE
    assert "cannot be acquired" in event.reason


def test_picamera_released_on_close() -> None:
    cameras: list[FakePicamera2] = []

    def factory(number: int) -> FakePicamera2:
        camera = FakePicamera2(number)
        cameras.append(camera)
        return camera

    source = open_source("picamera:1?size=32x24", picamera_factory=factory, fps=15)
    next(iter(source))
    source.close()
    deadline = time.monotonic() + 2.0
    while not cameras[0].closed and time.monotonic() < deadline:
        time.sleep(0.01)

    assert cameras[0].camera_num == 1
    assert cameras[0].closed
    assert cameras[0].config is not None
    assert cameras[0].config["controls"] == {"FrameRate": 15}
    assert source.fps == 15


@pytest.mark.media
def test_truncated_file_warns_about_missing_frames(
    vtest_avi: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(vtest_avi.read_bytes()[:300_000])
    with (
        caplog.at_level(logging.WARNING, logger="edge.sources.file"),
        open_source(str(truncated)) as source,
    ):
        frames = sum(1 for _ in source)
    assert frames < 100
    assert f"ended after {frames} of the 795 frames" in caplog.text
