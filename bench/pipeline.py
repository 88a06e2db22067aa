"""Benchmark the node's frame loop on a clip, against bare inference and Ultralytics.

Run from the repository root:

    python bench/pipeline.py --clip CLIP --model MODEL [--threads 2] [--input 640]
        [--seconds N] [--gate] [--busy-core] [--loop-minutes 30] [--ultralytics]

Every ratio is measured within one run: the bare detector's `infer` runs on
the same preprocessed frames, in the same process and with the same threads,
right before and right after the pipeline. The JSON report goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.config import NodeConfig  # noqa: E402
from edge.detector import Detector  # noqa: E402
from edge.motion import MotionConfig  # noqa: E402
from edge.pipeline import Pipeline, RunSummary  # noqa: E402
from edge.sinks import open_sink  # noqa: E402
from edge.sources import FileSource, open_source  # noqa: E402
from edge.types import Frame  # noqa: E402

logger = logging.getLogger(__name__)

VENV = ROOT / "var" / "bench-venv"
REPORTED_STAGES = (
    "decode",
    "motion",
    "preprocess",
    "inference",
    "postprocess",
    "tracking",
    "analytics",
    "publish",
)


# --- the pipeline with capture thread and detection scheduler wired in -----


class ScheduledPipeline(Pipeline):
    """The node's `Pipeline` run with a given motion config, timing each frame.

    The node's own loop decodes on a capture thread and plans detection with
    the motion config; this subclass only records each frame's wall time for
    percentiles and calls `between_frames` (when set) after each frame,
    outside the frame's time, for interleaved bare-inference runs.
    """

    def __init__(
        self, config: NodeConfig, motion: MotionConfig, *, capture_depth: int = 2
    ) -> None:
        config = config.model_copy(update={"motion": motion})
        super().__init__(config, open_sink("none", config), on_frame=self._frame_done)
        self.motion_config = motion
        self.capture_depth = capture_depth
        self.frame_times_s: list[float] = []
        self.between_frames: Callable[[int], None] | None = None
        self._frame_start = time.perf_counter()

    def run_source(
        self,
        source: Any,  # noqa: ANN401
        stop: threading.Event | None = None,
    ) -> RunSummary:
        """Process an already opened source (anything `Pipeline` can iterate)."""
        self._prepare_resume(source)
        start = time.perf_counter()
        self._frame_start = start
        with source:
            self._send_status()
            self._loop(source, stop or threading.Event())
        self.summary.wall_s = time.perf_counter() - start
        return self.summary

    def _frame_done(self, _frame: Frame) -> None:
        self.frame_times_s.append(time.perf_counter() - self._frame_start)
        if self.between_frames is not None:
            self.between_frames(len(self.frame_times_s))
        self._frame_start = time.perf_counter()


# --- sources for the benchmark ----------------------------------------------


@dataclass
class FrameListSource:
    """Frames already in memory, presented like a file source."""

    frames: Iterable[Frame]
    fps: float
    is_live: bool = False

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.frames)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None


@dataclass
class ClipSource:
    """A video file played once or looped, cut after `seconds` of stream time.

    Looping continues the frame index and stream time, as a camera would.
    """

    path: Path
    seconds: float | None = None
    loop_s: float | None = None
    fps: float = 0.0
    is_live: bool = False
    _start: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        with FileSource(self.path) as probe:
            self.fps = probe.fps or 25.0

    def __iter__(self) -> Iterator[Frame]:
        index, offset = 0, 0.0
        wall_start = time.monotonic()
        while True:
            last_pts = 0.0
            with FileSource(self.path, start_at=self._start) as clip:
                for frame in clip:
                    pts = offset + frame.pts_s
                    if self.seconds is not None and pts >= self.seconds:
                        return
                    yield Frame(
                        frame.image, index, pts, self._start + timedelta(seconds=pts)
                    )
                    index += 1
                    last_pts = frame.pts_s
            if self.loop_s is None or time.monotonic() - wall_start >= self.loop_s:
                return
            offset += last_pts + 1.0 / self.fps

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None


def still_then_real(
    real: list[Frame], *, fps: float, still_s: float, sigma: float, seed: int = 7
) -> Iterator[Frame]:
    """Yield the first real frame held for `still_s` with sensor noise, then `real`.

    The noise is Gaussian with `sigma` grey levels, drawn from a bank of 8
    fields picked at random per frame, so a minute of frames is cheap to make.
    """
    rng = np.random.default_rng(seed)
    still = real[0].image.astype(np.int16)
    noise_bank = [
        rng.normal(0.0, sigma, still.shape).round().astype(np.int16) for _ in range(8)
    ]
    held = int(still_s * fps)
    start = real[0].captured_at
    for index in range(held):
        noise = noise_bank[rng.integers(len(noise_bank))]
        image = np.clip(still + noise, 0, 255).astype(np.uint8)
        pts = index / fps
        yield Frame(image, index, pts, start + timedelta(seconds=pts))
    for frame in real:
        pts = still_s + frame.pts_s
        yield Frame(
            frame.image.copy(), held + frame.index, pts, start + timedelta(seconds=pts)
        )


# --- measurements -------------------------------------------------------------


def node_config(clip: Path, model: Path, threads: int, spin: bool) -> NodeConfig:
    """Return a node config for `clip` with one vertical line through its middle."""
    with FileSource(clip) as probe:
        width, height = probe.resolution_wh
    return NodeConfig.model_validate(
        {
            "site": "bench",
            "node": "bench",
            "source": {"uri": str(clip)},
            "model": {
                "path": str(model),
                "intra_op_threads": threads,
                "spin_wait": spin,
            },
            "geometry": {"reference_resolution": [width, height]},
            "lines": [
                {"name": "middle", "points": [[width / 2, 0], [width / 2, height]]}
            ],
            "outbox": {"path": str(ROOT / "var" / "bench-outbox" / "outbox.db")},
        }
    )


class BareInference:
    """Times the detector's `infer` alone on preprocessed frames of the clip.

    The tensors are copies made once, so the timing covers the session run
    and nothing else. `maybe_run` is hooked between pipeline frames, so bare
    and pipeline timings alternate through the run and share the machine's
    load at each moment.
    """

    def __init__(
        self, detector: Detector, frames: list[Frame], every: int, count: int = 8
    ) -> None:
        self.detector = detector
        self.every = every
        # A few tensors spread over the sample are enough, and keep the copies
        # (5 MB each at 640) from inflating the peak memory the report gives.
        step = max(1, len(frames) // count)
        self.tensors = [
            detector.preprocess(frame.image)[0].copy() for frame in frames[::step]
        ][:count]
        self.times_ms: list[float] = []
        self.cpu_s = 0.0
        self._next = 0

    def run(self, count: int) -> None:
        """Time `count` session runs on the next tensors, cycling through them."""
        cpu_start = cpu_seconds()
        for _ in range(count):
            tensor = self.tensors[self._next % len(self.tensors)]
            self._next += 1
            started = time.perf_counter()
            self.detector.infer(tensor)
            self.times_ms.append(1000.0 * (time.perf_counter() - started))
        self.cpu_s += cpu_seconds() - cpu_start

    def maybe_run(self, frames_done: int) -> None:
        """Run two timed inferences every `every` pipeline frames."""
        if frames_done % self.every == 0:
            self.run(2)


def cpu_seconds() -> float:
    """Return user plus system CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (0..100) of `values`, 0 when empty."""
    return float(np.percentile(values, q)) if values else 0.0


def run_pipeline(
    args: argparse.Namespace, *, gate: bool, threads: int, spin: bool
) -> dict[str, Any]:
    """Run the clip through the pipeline once, with bare inference timed alongside."""
    config = node_config(args.clip, args.model, threads, spin)
    motion = MotionConfig(gating=gate)
    pipeline = ScheduledPipeline(config, motion)
    sample = list(ClipSource(args.clip, seconds=args.sample_seconds))
    bare = BareInference(pipeline.detector, sample, every=args.bare_every)
    del sample
    bare.run(args.bare_runs)
    pipeline.between_frames = bare.maybe_run

    cpu_start = cpu_seconds()
    summary = pipeline.run_source(ClipSource(args.clip, seconds=args.seconds))
    cpu = cpu_seconds() - cpu_start - bare.cpu_s

    bare.run(args.bare_runs)
    frames = max(summary.frames, 1)
    timer = summary.timer
    frame_ms = 1000.0 * sum(pipeline.frame_times_s) / frames
    infer_ms = statistics.mean(bare.times_ms)
    return {
        "gate": gate,
        "threads": threads,
        "spin_wait": spin,
        "frames": summary.frames,
        "fps": round(frames / summary.wall_s, 2),
        "frame_ms": round(frame_ms, 2),
        "frame_p50_ms": round(1000 * percentile(pipeline.frame_times_s, 50), 2),
        "frame_p90_ms": round(1000 * percentile(pipeline.frame_times_s, 90), 2),
        "bare_inference_ms": round(infer_ms, 2),
        "bare_inference_p50_ms": round(percentile(bare.times_ms, 50), 2),
        "bare_inference_runs": len(bare.times_ms),
        "pipeline_inference_ms": round(timer.mean_ms("inference"), 2),
        "frame_to_inference": round(frame_ms / infer_ms, 3),
        "frame_to_inference_p50": round(
            percentile(pipeline.frame_times_s, 50)
            * 1000
            / percentile(bare.times_ms, 50),
            3,
        ),
        "frame_to_pipeline_inference": round(
            frame_ms / max(timer.mean_ms("inference"), 1e-9), 3
        ),
        "stage_ms_per_frame": {
            name: round(1000.0 * timer.totals_s.get(name, 0.0) / frames, 2)
            for name in REPORTED_STAGES
        },
        "decode_thread_ms_per_frame": round(
            1000.0 * pipeline.capture_stats.decode_s / frames, 2
        ),
        "inference_calls_per_frame": round(timer.calls.get("inference", 0) / frames, 3),
        "detection_frames": summary.detection_frames,
        "cpu_s_per_frame": round(cpu / frames, 4),
        "line_totals": {
            "/".join(key): count for key, count in summary.line_totals.items() if count
        },
    }


def still_scene_runs(args: argparse.Namespace) -> dict[str, Any]:
    """Count line crossings ungated on the real frames and gated after a still minute.

    `--still-scene` is an image folder at `--still-fps`; the line is the
    vertical through the middle of its frames.
    """
    folder = args.still_scene
    with open_source(str(folder), fps=args.still_fps) as source:
        real = list(source)
    width, height = real[0].resolution_wh
    config = node_config(args.clip, args.model, args.threads, spin=False)
    config = config.model_copy(
        update={
            "source": config.source.model_copy(
                update={"uri": str(folder), "fps": args.still_fps}
            ),
            "geometry": config.geometry.model_copy(
                update={"reference_resolution": (width, height)}
            ),
            "lines": [
                config.lines[0].model_copy(
                    update={"points": ((width / 2, 0.0), (width / 2, float(height)))}
                )
            ],
        }
    )
    rows = {}
    for name, gate, frames in (
        ("ungated_real_only", False, real),
        (
            "gated_still_then_real",
            True,
            still_then_real(
                real, fps=args.still_fps, still_s=args.still_s, sigma=args.still_sigma
            ),
        ),
    ):
        pipeline = ScheduledPipeline(config, MotionConfig(gating=gate))
        summary = pipeline.run_source(FrameListSource(frames, fps=args.still_fps))
        rows[name] = {
            "frames": summary.frames,
            "inference_frames": summary.detection_frames,
            "inference_share": round(summary.detection_frames / summary.frames, 4),
            "line_totals": {
                "/".join(key): n for key, n in summary.line_totals.items() if n
            },
            "motion_ms_per_frame": round(
                1000.0 * summary.timer.totals_s.get("motion", 0.0) / summary.frames, 3
            ),
        }
    return rows


def busy_core_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Compare quiet and busy p90 frame times per thread count and spin setting."""
    rows = []
    for threads, spin in ((2, False), (2, True), (1, False)):
        quiet = run_pipeline(args, gate=False, threads=threads, spin=spin)
        busy_loop = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed code
            [sys.executable, "-c", "while True: pass"]
        )
        try:
            busy = run_pipeline(args, gate=False, threads=threads, spin=spin)
        finally:
            busy_loop.kill()
            busy_loop.wait()
        rows.append(
            {
                "threads": threads,
                "spin_wait": spin,
                "quiet_p90_ms": quiet["frame_p90_ms"],
                "busy_p90_ms": busy["frame_p90_ms"],
                "busy_to_quiet_p90": round(
                    busy["frame_p90_ms"] / quiet["frame_p90_ms"], 3
                ),
                "quiet_fps": quiet["fps"],
                "busy_fps": busy["fps"],
            }
        )
    return rows


def rss_kib() -> int:
    """Return the resident set size of this process in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory_loop(args: argparse.Namespace) -> dict[str, Any]:
    """Loop the clip for `--loop-minutes` and sample RSS every `--rss-every` s."""
    config = node_config(args.clip, args.model, args.threads, spin=False)
    pipeline = ScheduledPipeline(config, MotionConfig(gating=args.gate))
    samples: list[tuple[float, int]] = []
    done = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not done.wait(args.rss_every):
            samples.append((round(time.monotonic() - started, 1), rss_kib()))

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    source = ClipSource(args.clip, loop_s=60.0 * args.loop_minutes)
    summary = pipeline.run_source(source)
    done.set()
    sampler.join()
    warm = [kib for at, kib in samples if at >= args.warm_up_s]
    growth = (max(warm) - warm[0]) / warm[0] if warm else 0.0
    return {
        "minutes": args.loop_minutes,
        "frames": summary.frames,
        "warm_up_s": args.warm_up_s,
        "rss_first_after_warm_up_kib": warm[0] if warm else None,
        "rss_max_after_warm_up_kib": max(warm) if warm else None,
        "rss_growth": round(growth, 4),
        "samples": samples,
    }


def ultralytics_run(args: argparse.Namespace) -> dict[str, Any]:
    """Run Ultralytics' ObjectCounter on the clip in its own virtual environment."""
    python = VENV / "bin" / "python"
    if not python.exists():
        return {
            "error": f"{python} not found; run bench/ultralytics_counter.py --install"
        }
    command = [
        str(python),
        str(ROOT / "bench" / "ultralytics_counter.py"),
        "--clip",
        str(args.clip),
        "--model",
        str(args.model),
        "--threads",
        str(args.threads),
        "--input",
        str(args.input),
    ]
    if args.seconds is not None:
        command += ["--seconds", str(args.seconds)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-2000:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def load_average() -> list[float]:
    """Return the 1, 5 and 15 minute load averages."""
    return [float(part) for part in Path("/proc/loadavg").read_text().split()[:3]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, required=True, help="video file")
    parser.add_argument("--model", type=Path, required=True, help="ONNX model file")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument(
        "--input", type=int, default=640, help="model input size; must match --model"
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="stream seconds to process"
    )
    parser.add_argument(
        "--sample-seconds",
        type=float,
        default=5.0,
        help="stream seconds of frames for the bare inference timing",
    )
    parser.add_argument(
        "--bare-runs",
        type=int,
        default=30,
        help="bare inference runs right before and right after the pipeline",
    )
    parser.add_argument(
        "--bare-every",
        type=int,
        default=20,
        help="pipeline frames between two interleaved bare inference runs",
    )
    parser.add_argument("--gate", action="store_true", help="also run motion gated")
    parser.add_argument(
        "--busy-core", action="store_true", help="compare with one core busy"
    )
    parser.add_argument(
        "--loop-minutes", type=float, default=0.0, help="memory loop length; 0 skips"
    )
    parser.add_argument("--rss-every", type=float, default=10.0, help="RSS sample s")
    parser.add_argument("--warm-up-s", type=float, default=60.0, help="RSS warm-up s")
    parser.add_argument(
        "--ultralytics", action="store_true", help="run Ultralytics' ObjectCounter"
    )
    parser.add_argument(
        "--still-scene",
        type=Path,
        default=None,
        help="image folder whose first frame is held still before its real frames",
    )
    parser.add_argument("--still-fps", type=float, default=25.0, help="its fps")
    parser.add_argument(
        "--still-s", type=float, default=60.0, help="seconds the first frame is held"
    )
    parser.add_argument(
        "--still-sigma", type=float, default=2.5, help="noise sigma, grey levels"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the requested measurements and write one JSON report to stdout."""
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    report: dict[str, Any] = {
        "clip": str(args.clip),
        "model": str(args.model),
        "threads": args.threads,
        "load_average_start": load_average(),
    }
    threads = args.threads
    report["pipeline"] = run_pipeline(args, gate=False, threads=threads, spin=False)
    if args.gate:
        report["gated"] = run_pipeline(args, gate=True, threads=threads, spin=False)
    if args.ultralytics:
        report["ultralytics"] = ultralytics_run(args)
        ours = report["pipeline"]["fps"]
        theirs = report["ultralytics"].get("fps")
        if theirs:
            report["speedup_vs_ultralytics"] = round(ours / theirs, 3)
    if args.still_scene is not None:
        report["still_scene"] = still_scene_runs(args)
    if args.busy_core:
        report["busy_core"] = busy_core_runs(args)
    if args.loop_minutes > 0:
        report["memory_loop"] = memory_loop(args)
    report["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report["load_average_end"] = load_average()
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
