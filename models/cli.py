"""`sitlab-models`: install, inspect, export, quantise, evaluate and time models."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from models import bench, evaluate, export, info, pull, quantize, registry
from models.dequantize import DequantizeError, dequantize_file
from models.frames import FrameSourceError, read_frames

logger = logging.getLogger(__name__)

DEFAULT_DEST = Path("var/models")
ERRORS: tuple[type[Exception], ...] = (
    registry.RegistryError,
    pull.PullError,
    info.ModelInfoError,
    export.ExportError,
    quantize.QuantizeError,
    DequantizeError,
    evaluate.EvaluationError,
    bench.BenchError,
    FrameSourceError,
)


def _cmd_list(args: argparse.Namespace) -> int:
    for entry in registry.load_registry(args.registry).values():
        digest = entry.sha256[:12] or "unknown"
        source = entry.url or "recipe only"
        print(
            f"{entry.name:20} {entry.format:8} {entry.input_size:4} "
            f"{entry.classes:3} classes  {entry.licence:10} sha256 {digest}  {source}"
        )
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    entry = registry.lookup(args.name, registry.load_registry(args.registry))
    if args.source_dir is not None:
        path = pull.copy_local(entry, args.source_dir, args.dest, sha256=args.sha256)
    else:
        path = pull.download(
            entry,
            args.dest,
            mirror=args.mirror,
            sha256=args.sha256,
            timeout_s=args.timeout,
        )
    print(path)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    found = info.describe(args.file)
    print(f"file:          {found.path}")
    print(f"format:        {found.output_format}")
    print(f"input:         {found.input_name} {'x'.join(map(str, found.input_shape))}")
    print(f"output:        {'x'.join(map(str, found.output_shape))}")
    print(f"classes:       {found.classes}")
    print(f"quantization:  {found.quantization}")
    print(f"opset:         {found.opset}")
    print(f"size:          {found.size_bytes} bytes")
    print(f"sha256:        {found.sha256}")
    names = ", ".join(found.names[:10]) + (", ..." if len(found.names) > 10 else "")
    print(f"names:         {names or '(none in metadata)'}")
    for key, value in sorted(found.metadata.items()):
        if key != "names":
            print(f"metadata {key}: {value[:100]}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    print(
        export.export_onnx(
            args.weights, args.output, imgsz=args.imgsz, opset=args.opset
        )
    )
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    report = quantize.quantize_model(
        args.model,
        args.output,
        args.frames,
        frames=args.count,
        calibration=quantize.Calibration(args.calibration),
        per_channel=not args.per_tensor,
        exclude=args.exclude,
    )
    print(
        f"{report.output}: static int8 from {report.calibration_frames} frames, "
        f"{len(report.excluded_nodes)} nodes kept in float"
    )
    return 0


def _cmd_dequantize(args: argparse.Namespace) -> int:
    print(dequantize_file(args.model, args.output))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    frames = read_frames(args.frames, args.count, args.offset)
    images = [frame.image for frame in frames]
    candidate = evaluate.load_detector(
        args.candidate, confidence=args.candidate_confidence, classes=args.classes
    )
    if args.ground_truth is not None:
        numbers = [int(frame.source.stem) for frame in frames]
        truth = evaluate.load_mot_ground_truth(args.ground_truth, numbers)
        result = evaluate.evaluate(candidate, truth, images)
        verdict = evaluate.Verdict(
            result.map50 >= args.min_map50,
            f"mAP@0.5 {result.map50:.3f} against ground truth",
            result,
        )
    else:
        reference = evaluate.load_detector(
            args.reference, confidence=args.reference_confidence, classes=args.classes
        )
        verdict = evaluate.check_model_usable(
            candidate, images, reference, min_map50=args.min_map50
        )
    if verdict.evaluation is not None:
        print("| class | AP@0.5 | recall | reference boxes | candidate boxes |")
        print("|---|---|---|---|---|")
        for score in verdict.evaluation.classes:
            print(
                f"| {score.class_id} | {score.ap50:.3f} | {score.recall:.3f} "
                f"| {score.reference_boxes} | {score.candidate_boxes} |"
            )
        print(f"mAP@0.5 (COCO 101-point): {verdict.evaluation.map50:.3f}")
    print(f"verdict: {'usable' if verdict.usable else 'rejected'}: {verdict.reason}")
    return 0 if verdict.usable else 1


def _cmd_bench(args: argparse.Namespace) -> int:
    spin = {"on": (True,), "off": (False,), "both": (True, False)}[args.spin]
    results = bench.run_matrix(
        args.models,
        providers=args.provider,
        threads=args.threads,
        spin=spin,
        warmup=args.warmup,
        runs=args.runs,
    )
    print(bench.markdown_table(results))
    return 0


def _add_model_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cmd = commands.add_parser("list", help="list the registry's models")
    cmd.set_defaults(handler=_cmd_list)

    cmd = commands.add_parser(
        "pull", help="install a registry model, verified by sha256"
    )
    cmd.add_argument("name", help="registry name, see `list`")
    cmd.add_argument(
        "--dest",
        type=Path,
        default=DEFAULT_DEST,
        help="model folder (default %(default)s)",
    )
    where = cmd.add_mutually_exclusive_group()
    where.add_argument(
        "--from", dest="source_dir", type=Path, help="install from this local folder"
    )
    where.add_argument(
        "--mirror", help="base URL that serves the file under its registry name"
    )
    cmd.add_argument("--sha256", help="expected digest when the registry has none")
    cmd.add_argument(
        "--timeout",
        type=float,
        default=pull.DEFAULT_TIMEOUT_S,
        help="network timeout in seconds",
    )
    cmd.set_defaults(handler=_cmd_pull)

    cmd = commands.add_parser("info", help="describe an ONNX model file")
    cmd.add_argument("file", type=Path)
    cmd.set_defaults(handler=_cmd_info)

    cmd = commands.add_parser("export", help="export Ultralytics .pt weights to ONNX")
    cmd.add_argument("weights", type=Path)
    cmd.add_argument(
        "--imgsz", type=int, default=640, help="square input side in pixels"
    )
    cmd.add_argument("--opset", type=int, default=17, help="ONNX operator set version")
    cmd.add_argument("--output", type=Path, required=True, help="ONNX file to write")
    cmd.set_defaults(handler=_cmd_export)


def _add_quantize_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cmd = commands.add_parser("quantize", help="static QDQ int8 quantisation")
    cmd.add_argument("model", type=Path, help="float ONNX model")
    cmd.add_argument("--output", type=Path, required=True)
    cmd.add_argument(
        "--frames",
        type=Path,
        nargs="+",
        required=True,
        help="image folders, images or videos",
    )
    cmd.add_argument(
        "--count",
        type=int,
        default=64,
        help="calibration frames spread over the sources",
    )
    cmd.add_argument(
        "--calibration",
        choices=[c.value for c in quantize.Calibration],
        default="minmax",
    )
    cmd.add_argument(
        "--per-tensor",
        action="store_true",
        help="one weight scale per tensor, not per channel",
    )
    cmd.add_argument(
        "--exclude", nargs="*", default=[], help="more node names to keep in float"
    )
    cmd.set_defaults(handler=_cmd_quantize)

    cmd = commands.add_parser(
        "dequantize", help="rebuild a float model from a dynamic int8 one"
    )
    cmd.add_argument("model", type=Path)
    cmd.add_argument("--output", type=Path, required=True)
    cmd.set_defaults(handler=_cmd_dequantize)

    cmd = commands.add_parser(
        "evaluate", help="mAP@0.5 of a model against a reference or ground truth"
    )
    cmd.add_argument("candidate", type=Path)
    truth = cmd.add_mutually_exclusive_group(required=True)
    truth.add_argument(
        "--reference", type=Path, help="model whose detections count as truth"
    )
    truth.add_argument(
        "--ground-truth",
        type=Path,
        help="MOTChallenge gt.txt for image frames named by number",
    )
    cmd.add_argument("--frames", type=Path, nargs="+", required=True)
    cmd.add_argument(
        "--count", type=int, default=100, help="frames spread over the sources"
    )
    cmd.add_argument(
        "--offset",
        type=float,
        default=0.5,
        help=(
            "shift of the picks in steps (0..1); with the same --count as "
            "quantize, 0.5 picks frames calibration did not use"
        ),
    )
    cmd.add_argument(
        "--candidate-confidence",
        type=float,
        default=0.05,
        help="score threshold of the candidate; low keeps the whole PR curve",
    )
    cmd.add_argument(
        "--reference-confidence",
        type=float,
        default=0.25,
        help="score threshold above which reference boxes count as truth",
    )
    cmd.add_argument(
        "--min-map50",
        type=float,
        default=0.5,
        help="lowest mAP@0.5 for a usable verdict",
    )
    cmd.add_argument(
        "--classes",
        nargs="+",
        help=(
            "class names to evaluate, as in the node's detection.classes "
            "(default: every class of the model)"
        ),
    )
    cmd.set_defaults(handler=_cmd_evaluate)

    cmd = commands.add_parser("bench", help="latency table in markdown")
    cmd.add_argument("models", type=Path, nargs="+")
    cmd.add_argument("--provider", nargs="+", default=["CPUExecutionProvider"])
    cmd.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    cmd.add_argument(
        "--spin",
        choices=["on", "off", "both"],
        default="both",
        help="spin-waiting of idle threads",
    )
    cmd.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    cmd.add_argument("--runs", type=int, default=30, help="timed runs")
    cmd.set_defaults(handler=_cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of `sitlab-models`."""
    parser = argparse.ArgumentParser(prog="sitlab-models", description=__doc__)
    parser.add_argument(
        "--registry", type=Path, help="registry TOML instead of the packaged one"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_model_commands(commands)
    _add_quantize_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `sitlab-models`; return the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args))
    except ERRORS as error:
        print(f"sitlab-models {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
