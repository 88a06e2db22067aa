"""`sitlab-calibrate`: set up a camera node from a technician's laptop or the node.

Every subcommand that changes the config validates the result first, keeps a
backup and replaces the file atomically (see `calibration.config_edit`).
Exit codes: 0 done, 1 failed or a check failed, 2 bad command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel
from ruamel.yaml.comments import CommentedMap

from calibration import check as quality
from calibration.config_edit import ConfigDocument, flow_list
from calibration.draw import DrawnItem, ItemKind, apply_items, parse_item, remove_items
from calibration.errors import CalibrationError
from calibration.ground import (
    DEFAULT_RANSAC_THRESHOLD_M,
    GOOD_ERROR_M,
    USABLE_ERROR_M,
    GroundFit,
    PointPair,
    build_ground,
    parse_point,
)
from calibration.ground import verdict_advice as ground_advice
from calibration.lens import Board, Verdict, calibrate, expand_images, verdict_advice
from calibration.preview import PreviewDetections, render_preview
from calibration.snapshot import grab_frame, load_snapshot, save_snapshot
from calibration.verify import format_table, run_verify
from edge.analytics import GeometryError
from edge.config import ConfigError, NodeConfig, load_config
from edge.config_calibration import TamperingConfig
from edge.detector import DetectorError
from edge.ground import same_aspect
from edge.ground_points import is_mirrored
from edge.lens import LensError
from edge.masks import PrivacyMask
from edge.messages import utc_iso
from edge.scene import Scene

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_OK = 0
EXIT_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run `sitlab-calibrate` with `argv` (default: the process arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.handler(args))
    except (
        CalibrationError,
        ConfigError,
        GeometryError,
        DetectorError,
        LensError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `sitlab-calibrate`."""
    parser = argparse.ArgumentParser(
        prog="sitlab-calibrate",
        description="Set up a camera node: snapshot, geometry, lens, ground, checks.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_snapshot(commands)
    _add_draw(commands)
    _add_preview(commands)
    _add_lens(commands)
    _add_ground(commands)
    _add_check(commands)
    _add_verify(commands)
    return parser


def _source_options(command: argparse.ArgumentParser) -> None:
    group = command.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--config", type=Path, help="node config file; its source.uri is read"
    )
    group.add_argument(
        "--source", help="video file, image folder, stream URL or device"
    )
    command.add_argument("--fps", type=float, help="frame rate of an image folder")


def _add_snapshot(commands: Commands) -> None:
    command = commands.add_parser(
        "snapshot", help="save one frame of the source as PNG"
    )
    _source_options(command)
    command.add_argument(
        "--at",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="stream time of the frame in seconds (default 0, the first frame)",
    )
    command.add_argument("--out", type=Path, required=True, help="PNG file to write")
    command.set_defaults(handler=_snapshot)


def _add_draw(commands: Commands) -> None:
    command = commands.add_parser(
        "draw", help="add or change lines, zones and masks drawn on a snapshot"
    )
    command.add_argument(
        "--config", type=Path, required=True, help="node config to edit"
    )
    command.add_argument("--snapshot", type=Path, required=True, help="snapshot PNG")
    for kind, minimum in (
        (ItemKind.LINE, "X1,Y1,X2,Y2"),
        (ItemKind.ZONE, "X1,Y1,..."),
        (ItemKind.MASK, "X1,Y1,..."),
    ):
        command.add_argument(
            f"--{kind.value}",
            action="append",
            default=[],
            metavar=f"NAME:{minimum}",
            help=f"{kind.value} in snapshot pixels; repeatable",
        )
    command.add_argument(
        "--remove",
        action="append",
        default=[],
        metavar="KIND:NAME",
        help="delete a line, zone or mask, e.g. line:door; repeatable",
    )
    command.add_argument(
        "--normalized",
        action="store_true",
        help="store coordinates as fractions 0..1 of the picture instead of pixels",
    )
    command.add_argument(
        "--interactive",
        action="store_true",
        help="draw with the mouse in a window (needs a display and OpenCV with GUI)",
    )
    command.set_defaults(handler=_draw)


def _add_preview(commands: Commands) -> None:
    command = commands.add_parser(
        "preview", help="draw the config's geometry on a snapshot"
    )
    command.add_argument("--config", type=Path, required=True, help="node config file")
    command.add_argument("--snapshot", type=Path, required=True, help="snapshot PNG")
    command.add_argument("--out", type=Path, required=True, help="preview PNG to write")
    command.add_argument(
        "--detect",
        action="store_true",
        help="also run the config's model and draw detections with their anchor points",
    )
    command.set_defaults(handler=_preview)


def _add_lens(commands: Commands) -> None:
    command = commands.add_parser(
        "lens", help="calibrate the lens from chessboard photos"
    )
    command.add_argument(
        "--images", required=True, metavar="GLOB", help="photos, e.g. 'board/*.jpg'"
    )
    command.add_argument(
        "--board",
        required=True,
        metavar="COLSxROWS",
        help="inner corners of the chessboard, e.g. 9x6 for 10x7 squares",
    )
    command.add_argument(
        "--square-mm", type=float, required=True, help="side of one square in mm"
    )
    command.add_argument(
        "--config", type=Path, help="node config to store the lens section in"
    )
    command.add_argument(
        "--force",
        action="store_true",
        help="store the result even when the verdict is redo",
    )
    command.set_defaults(handler=_lens)


def _add_ground(commands: Commands) -> None:
    command = commands.add_parser(
        "ground",
        help="map the ground plane to metres",
        description=(
            "Fit the ground plane to marked points and store it in the config. "
            "With 5 or more points the verdict comes from the larger of the RMS "
            "error and the worst leave-one-out error: good under "
            f"{GOOD_ERROR_M:g} m, ok under {USABLE_ERROR_M:g} m, otherwise redo. "
            "A redo result is stored only with --force."
        ),
    )
    command.add_argument(
        "--config", type=Path, required=True, help="node config to edit"
    )
    command.add_argument(
        "--snapshot",
        type=Path,
        help="snapshot the points were read from (default: the size in "
        "geometry.reference_resolution)",
    )
    command.add_argument(
        "--point",
        action="append",
        default=[],
        required=True,
        metavar="X,Y=EAST,NORTH",
        help="image pixel and measured ground position in metres (or LAT,LON with "
        "--wgs84); at least 4",
    )
    command.add_argument(
        "--wgs84",
        action="store_true",
        help="positions are latitude,longitude in degrees",
    )
    command.add_argument(
        "--ransac-threshold-m",
        type=float,
        default=DEFAULT_RANSAC_THRESHOLD_M,
        help="with more than 6 points, drop points off by more than this many metres "
        f"(default {DEFAULT_RANSAC_THRESHOLD_M:g})",
    )
    command.add_argument(
        "--no-lens", action="store_true", help="ignore the config's lens section"
    )
    command.add_argument(
        "--force",
        action="store_true",
        help="store the result even when the verdict is redo",
    )
    command.set_defaults(handler=_ground)


def _add_check(commands: Commands) -> None:
    command = commands.add_parser(
        "check",
        help="check focus, exposure, noise and frame rate; store the reference frame",
    )
    _source_options(command)
    command.add_argument(
        "--seconds",
        type=positive_seconds,
        default=5.0,
        help="stream seconds to read (default 5)",
    )
    command.add_argument(
        "--reference-out",
        type=Path,
        help="reference PNG to write (default with --config: NAME.reference.png "
        "next to it)",
    )
    command.add_argument(
        "--force",
        action="store_true",
        help="store the reference even when a check fails",
    )
    command.set_defaults(handler=_check)


def positive_seconds(text: str) -> float:
    """Parse a duration in seconds that is finite and above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is invalid; give a finite number of seconds above 0"
        )
    return value


def _add_verify(commands: Commands) -> None:
    command = commands.add_parser(
        "verify", help="run the node on the source and print the counts"
    )
    command.add_argument("--config", type=Path, required=True, help="node config file")
    command.add_argument("--source", help="read this source instead of source.uri")
    command.add_argument(
        "--seconds",
        type=positive_seconds,
        help="stream seconds to process (default: the whole file)",
    )
    command.set_defaults(handler=_verify)


def _source_of(args: argparse.Namespace) -> tuple[str, float | None, NodeConfig | None]:
    if args.source:
        return args.source, args.fps, None
    config = load_config(args.config)
    return config.source.uri, args.fps or config.source.fps, config


def _snapshot(args: argparse.Namespace) -> int:
    uri, fps, _ = _source_of(args)
    frame = grab_frame(uri, fps=fps, at_s=args.at)
    snapshot = save_snapshot(frame, args.out, uri)
    width, height = snapshot.resolution_wh
    print(
        f"saved {args.out} ({width}x{height}, {snapshot.pts_s:.2f} s into "
        f"{snapshot.source})"
    )
    return EXIT_OK


def _draw(args: argparse.Namespace) -> int:
    snapshot = load_snapshot(args.snapshot)
    document = ConfigDocument.load(args.config)
    items: list[DrawnItem] = []
    for kind in ItemKind:
        items.extend(parse_item(kind, text) for text in getattr(args, kind.value))
    if args.interactive:
        from calibration.editor import run_editor  # noqa: PLC0415 - needs a GUI build

        items = run_editor(snapshot.image, items)
    changes = []
    for text in args.remove:
        kind_text, _, name = text.partition(":")
        try:
            kind = ItemKind(kind_text)
        except ValueError:
            raise CalibrationError(
                f"--remove {text!r}: kind must be line, zone or mask, e.g. line:door"
            ) from None
        changes.extend(remove_items(document, kind, [name]))
    if not items and not changes:
        raise CalibrationError(
            "nothing to draw; give --line, --zone, --mask, --remove or --interactive"
        )
    changes.extend(
        apply_items(document, items, snapshot.resolution_wh, normalized=args.normalized)
    )
    backup = document.save()
    for change in changes:
        print(change)
    _print_saved(args.config, backup)
    return EXIT_OK


def _print_saved(path: Path, backup: Path | None) -> None:
    suffix = f" (previous version in {backup})" if backup else ""
    print(f"saved {path}{suffix}")


def _preview(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    snapshot = load_snapshot(args.snapshot)
    detections = None
    if args.detect:
        detections = _detect(config, snapshot.image)
    image = render_preview(snapshot.image, config, detections)
    import cv2  # noqa: PLC0415

    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), image):
        raise CalibrationError(f"cannot write {args.out}")
    print(f"saved {args.out}")
    if detections is not None:
        print(f"{len(detections.detections)} detections drawn")
    return EXIT_OK


def _detect(config: NodeConfig, image: object) -> PreviewDetections:
    import numpy as np  # noqa: PLC0415

    from edge.detector import Detector  # noqa: PLC0415 - loads onnxruntime

    picture = np.asarray(image).copy()
    height, width = picture.shape[:2]
    scene = Scene.from_config(config, (width, height))
    PrivacyMask(scene.masks, (width, height)).apply(picture)
    detector = Detector(
        config.model.path,
        sha256=config.model.sha256,
        providers=tuple(config.model.providers),
        intra_op_threads=config.model.intra_op_threads,
        confidence=config.detection.confidence,
        class_confidence=config.detection.class_confidence or None,
        iou=config.detection.iou,
        classes=config.detection.classes,
        max_detections=config.detection.max_detections,
        output_format=config.model.output_format,
    )
    return PreviewDetections(
        detections=detector.detect(picture),
        class_names=detector.class_names,
        anchor=config.geometry.anchor,
    )


def _lens(args: argparse.Namespace) -> int:
    board = Board.parse(args.board, args.square_mm)
    result = calibrate(expand_images(args.images), board)
    matrix = result.camera_matrix
    print(
        f"photos used: {len(result.used)}, board not found in: {len(result.rejected)}"
    )
    for path in result.rejected:
        print(f"  not found: {path}")
    for path, rms in sorted(result.per_image_rms_px.items(), key=lambda kv: -kv[1]):
        print(f"  {rms:6.3f} px  {path}")
    print(
        f"fx {matrix[0, 0]:.2f}  fy {matrix[1, 1]:.2f}  cx {matrix[0, 2]:.2f}  "
        f"cy {matrix[1, 2]:.2f} px; distortion "
        + ", ".join(f"{value:.5f}" for value in result.dist_coeffs)
    )
    print(
        f"RMS reprojection error {result.rms_px:.3f} px: "
        f"{verdict_advice(result.verdict)}"
    )
    if args.config is None:
        return EXIT_OK if result.verdict is not Verdict.REDO else EXIT_FAILED
    if result.verdict is Verdict.REDO and not args.force:
        print("not stored: the verdict is redo (use --force to store it anyway)")
        return EXIT_FAILED
    document = ConfigDocument.load(args.config)
    set_section(document, "lens", result.to_config())
    _print_saved(args.config, document.save())
    return EXIT_OK


def _ground(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    resolution = _ground_resolution(args, config)
    pairs = [parse_point(text) for text in args.point]
    lens = None if args.no_lens else getattr(config, "lens", None)
    fit, section = build_ground(
        pairs,
        resolution,
        wgs84=args.wgs84,
        lens=lens,
        ransac_threshold_m=args.ransac_threshold_m,
    )
    _print_ground_fit(pairs, fit)
    if fit.verdict is Verdict.REDO and not args.force:
        print("not stored: the verdict is redo (use --force to store it anyway)")
        return EXIT_FAILED
    document = ConfigDocument.load(args.config)
    set_section(document, "ground", section)
    _print_saved(args.config, document.save())
    return EXIT_OK


def _print_ground_fit(pairs: Sequence[PointPair], fit: GroundFit) -> None:
    print(" #  image x,y          world east,north m   error m  leave-one-out m")
    for index, pair in enumerate(pairs):
        east, north = fit.world_m[index]
        flag = "" if fit.inliers[index] else "  dropped by RANSAC"
        print(
            f"{index + 1:2d}  {pair.image_xy[0]:7.1f},{pair.image_xy[1]:7.1f}  "
            f"{east:9.3f},{north:9.3f}   {fit.errors_m[index]:7.3f}  "
            f"{_loo_text(fit, index)}{flag}"
        )
    print(f"RMS error {fit.rms_error_m:.3f} m over {sum(fit.inliers)} points")
    print(f"verdict: {ground_advice(fit)}")
    loo = fit.loo_errors_m
    if loo is not None and np.isnan(loo[np.array(fit.inliers)]).any():
        print(
            "note: n/a marks a point whose leave-one-out error cannot be measured "
            "because the other points have three on one line (the point is, for "
            "example, where the diagonals of the other four cross); move it off "
            "those lines to check it"
        )
    fit_points = np.array([pair.image_xy for pair in pairs], dtype=np.float64)
    if is_mirrored(fit.homography, fit_points):
        print(
            "warning: the world points are a mirror image of the picture; either "
            "two points are paired with each other's positions, or the world frame "
            "is left-handed (east and north swapped), which mirrors directions"
        )


def _loo_text(fit: GroundFit, index: int) -> str:
    if fit.loo_errors_m is None or not fit.inliers[index]:
        return "      -"
    error = float(fit.loo_errors_m[index])
    if math.isnan(error):
        return "n/a (the other points are degenerate)"
    return f"{error:7.3f}"


def _ground_resolution(args: argparse.Namespace, config: NodeConfig) -> tuple[int, int]:
    reference = config.geometry.reference_resolution
    if args.snapshot is None:
        if isinstance(reference, tuple):
            return reference
        raise CalibrationError(
            "the picture size of the points is unknown; give --snapshot PNG (the "
            "snapshot the points were read from)"
        )
    resolution = load_snapshot(args.snapshot).resolution_wh
    if isinstance(reference, tuple) and not same_aspect(resolution, reference):
        raise CalibrationError(
            f"the snapshot {args.snapshot} is {resolution[0]}x{resolution[1]} but "
            f"geometry.reference_resolution is {reference[0]}x{reference[1]}, a "
            "different aspect ratio, so the node would stretch the ground plane; "
            "take the snapshot from this camera's stream with `sitlab-calibrate "
            "snapshot` or correct geometry.reference_resolution"
        )
    return resolution


def _check(args: argparse.Namespace) -> int:
    uri, fps, config = _source_of(args)
    frames, seconds = quality.read_frames(uri, seconds=args.seconds, fps=fps)
    expected = config.source.fps if config else fps
    result = quality.evaluate(frames, seconds, expected_fps=expected)
    print(f"{result.frames} frames over {seconds:.1f} s")
    for item in result.items:
        print(
            f"{item.level.value:4}  {item.name:10} {item.value:8.2f} "
            f"{item.unit:20} {item.advice}"
        )
    print(f"verdict: {result.worst.value}")

    if result.worst is quality.Level.FAIL and not args.force:
        print("reference frame not stored: fix the failed items first (or --force)")
        return EXIT_FAILED

    reference_path = args.reference_out
    if reference_path is None and args.config is not None:
        reference_path = args.config.with_name(f"{args.config.stem}.reference.png")
    if reference_path is None:
        return EXIT_OK
    quality.save_reference(result.reference, reference_path)
    stats: dict[str, float | str] = {
        "focus": round(next(i.value for i in result.items if i.name == "focus"), 2),
        "mean_luma": round(
            next(i.value for i in result.items if i.name == "exposure"), 2
        ),
        "taken_at": utc_iso(datetime.now(UTC)),
    }
    reference_path.with_suffix(".json").write_text(json.dumps(stats, indent=2) + "\n")
    print(f"saved reference frame {reference_path}")
    if args.config is not None:
        relative = _relative_to(reference_path, args.config.resolve().parent)
        document = ConfigDocument.load(args.config)
        section = TamperingConfig(
            reference_frame=relative,
            focus=float(stats["focus"]),
            mean_luma=float(stats["mean_luma"]),
            taken_at=str(stats["taken_at"]),
        )
        set_section(document, "tampering", section)
        _print_saved(args.config, document.save())
    return EXIT_FAILED if result.worst is quality.Level.FAIL else EXIT_OK


def _relative_to(path: Path, folder: Path) -> Path:
    try:
        return path.resolve().relative_to(folder)
    except ValueError:
        return path.resolve()


def _verify(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.source:
        config = config.model_copy(
            update={"source": config.source.model_copy(update={"uri": args.source})}
        )
    report = run_verify(config, seconds=args.seconds)
    summary = report.summary
    if summary is not None:
        print(
            f"{summary.frames} frames, {summary.stream_s:.1f} s of stream in "
            f"{summary.wall_s:.1f} s"
        )
    print(format_table(report))
    return EXIT_OK


def set_section(document: ConfigDocument, key: str, section: BaseModel) -> None:
    """Replace config section `key` with a model's values, lists in flow style."""
    values = section.model_dump(mode="json", exclude_none=True)
    mapping = CommentedMap()
    for name, value in values.items():
        mapping[name] = flow_list(value) if isinstance(value, list) else value
    document.data[key] = mapping


if __name__ == "__main__":
    sys.exit(main())
