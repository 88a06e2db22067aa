"""`sitlab-edge`: run a node, check its config, print the config schema."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from edge import __version__
from edge.config import ConfigError, NodeConfig, json_schema, load_config, parse_config
from edge.config_check import check_deployable, describe

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _parse_points(
    text: str, option: str, minimum: int
) -> tuple[str, list[list[float]]]:
    name, sep, numbers = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(
            f"{option} {text!r} has no name; write NAME:X1,Y1,X2,Y2,..."
        )
    try:
        values = [float(value) for value in numbers.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{option} {text!r} contains a value that is not a number"
        ) from None
    if len(values) % 2 or len(values) < 2 * minimum:
        raise argparse.ArgumentTypeError(
            f"{option} {text!r} needs at least {minimum} x,y pairs, got "
            f"{len(values)} numbers"
        )
    points = [[values[i], values[i + 1]] for i in range(0, len(values), 2)]
    return name, points


def _line_arg(text: str) -> tuple[str, list[list[float]]]:
    name, points = _parse_points(text, "--line", 2)
    if len(points) != 2:
        raise argparse.ArgumentTypeError(
            f"--line {text!r} has {len(points)} points; a line has exactly 2"
        )
    return name, points


def _zone_arg(text: str) -> tuple[str, list[list[float]]]:
    return _parse_points(text, "--zone", 3)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `sitlab-edge`."""
    parser = argparse.ArgumentParser(
        prog="sitlab-edge",
        description="Edge node: detect, track and count on a camera or a file.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="run the node until the source ends or Ctrl-C"
    )
    run.add_argument("--config", type=Path, help="node config file (YAML)")
    run.add_argument("--source", help="video file, image folder, stream URL or device")
    run.add_argument("--model", type=Path, help="ONNX detector file")
    run.add_argument(
        "--line",
        type=_line_arg,
        action="append",
        default=[],
        metavar="NAME:X1,Y1,X2,Y2",
        help="counting line in source pixels; repeatable",
    )
    run.add_argument(
        "--zone",
        type=_zone_arg,
        action="append",
        default=[],
        metavar="NAME:X1,Y1,X2,Y2,X3,Y3,...",
        help="zone polygon in source pixels; repeatable",
    )
    run.add_argument("--fps", type=float, help="frame rate of an image folder")
    run.add_argument("--site", default="trial", help="site id without --config")
    run.add_argument("--node", default="node", help="node id without --config")
    run.add_argument(
        "--interval",
        type=float,
        help="seconds of stream time per counts message (default 60)",
    )
    run.add_argument(
        "--sink",
        choices=("mqtt", "stdout", "none"),
        help="where messages go: the broker (default with a URL), stdout, or none",
    )
    run.add_argument("--mqtt", help="broker URL, mqtt://HOST:PORT or mqtts://HOST:PORT")
    run.add_argument("--outbox", type=Path, help="outbox file (overrides the config)")

    check = commands.add_parser(
        "check-config",
        help="validate a node config file: schema, geometry, rules and model",
    )
    check.add_argument("file", type=Path)
    check.add_argument(
        "--no-model",
        action="store_true",
        help="skip loading the model file (on a machine that does not hold it)",
    )

    commands.add_parser("schema", help="print the JSON Schema of the node config")
    commands.add_parser(
        "serve",
        help="run a managed node: remote config, model roll-out, systemd watchdog",
        add_help=False,
    )
    return parser


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """Build the node config from --config and the quick-trial flags."""
    if args.config is not None:
        config = load_config(args.config)
        values = config.model_dump(mode="python", exclude_unset=False)
        if args.source is not None:
            values["source"]["uri"] = args.source
        if args.fps is not None:
            values["source"]["fps"] = args.fps
        if args.mqtt is not None:
            values["mqtt"]["url"] = args.mqtt
        if args.outbox is not None:
            values["outbox"]["path"] = args.outbox.resolve()
        if args.interval is not None:
            values["counts"]["interval_s"] = args.interval
        # Validate again, so a flag gets the same checks as the file.
        return parse_config(values, f"{args.config} with command-line flags")

    if not args.source or not args.model:
        raise ConfigError("without --config, both --source and --model are required")
    data: dict[str, Any] = {
        "site": args.site,
        "node": args.node,
        "source": {"uri": args.source, "fps": args.fps},
        "model": {"path": str(args.model)},
        "geometry": {"reference_resolution": "source"},
        "lines": [{"name": name, "points": points} for name, points in args.line],
        "zones": [{"name": name, "polygon": points} for name, points in args.zone],
        "mqtt": {"url": args.mqtt},
    }
    if args.interval is not None:
        data["counts"] = {"interval_s": args.interval}
    if args.outbox is not None:
        data["outbox"] = {"path": str(args.outbox)}
    return parse_config(data, "command line", base_dir=Path.cwd())


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _run(args: argparse.Namespace) -> int:
    from edge.pipeline import Pipeline, PipelineError  # noqa: PLC0415
    from edge.sinks import open_sink  # noqa: PLC0415

    config = config_from_args(args)
    sink_kind = args.sink or ("mqtt" if config.mqtt.url else "stdout")
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("signal %d received; stopping after the current frame", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        sink = open_sink(sink_kind, config)
    except (ConfigError, ValueError) as error:
        logger.error("cannot open the %s sink: %s", sink_kind, error)  # noqa: TRY400
        return EXIT_FAILED
    try:
        pipeline = Pipeline(config, sink)
        summary = pipeline.run(stop)
    except PipelineError as error:
        where = f"node config {args.config}: " if args.config else ""
        logger.error("%s%s", where, error)  # noqa: TRY400
        return EXIT_FAILED
    finally:
        sink.close()
    logger.info("%s", summary.describe())
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sitlab-edge` console command."""
    arguments = sys.argv[1:] if argv is None else argv
    if arguments and arguments[0] == "serve":
        # The managed node (remote config, model roll-out, watchdog) has its
        # own parser in edge.runtime.
        from edge.runtime import main as serve  # noqa: PLC0415

        return serve(arguments[1:])
    args = build_parser().parse_args(arguments)
    _configure_logging(args.verbose)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "check-config":
            return _check_config(args)
        if args.command == "schema":
            print(json.dumps(json_schema(), indent=2))
            return EXIT_OK
    except ConfigError as error:
        print(f"invalid configuration:\n{error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_USAGE


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    problems = check_deployable(config, load_model=not args.no_model)
    if problems:
        print(
            f"invalid configuration:\n{describe(args.file, problems)}", file=sys.stderr
        )
        return EXIT_USAGE
    print(
        f"{args.file}: valid; site {config.site}, node {config.node}, "
        f"{len(config.lines)} lines, {len(config.zones)} zones, "
        f"{len(config.rules)} rules"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
