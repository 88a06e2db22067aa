"""The managed node: runs the pipeline under systemd and takes orders from the gateway.

`sitlab-edge serve --config FILE` runs one node the way the systemd unit
does. Besides the frame loop it

- notifies systemd (READY=1 once the model is loaded, WATCHDOG=1 while
  frames flow, so a hung camera read gets the service restarted);
- applies config requests from `.../config/set`: geometry live, anything
  else by restarting the pipeline inside the process. A restarted pipeline
  that fails within the probation time is rolled back to the previous config;
- installs models announced on `.../model/set` (see `edge.rollout`);
- keeps a few recent full frames for the roll-out's test run;
- persists every applied config atomically, so a reboot keeps it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge import __version__
from edge.config import ConfigError, NodeConfig, load_config, load_yaml
from edge.messages import describe_json_error, topic_for
from edge.pipeline import Pipeline, PipelineError
from edge.remote import (
    ConfigChange,
    RemoteConfigError,
    parse_request,
    plain,
    prepare_change,
    save_document,
)
from edge.rollout import ModelInstaller, RolloutError, parse_announcement
from edge.sinks import MqttSink
from edge.types import Frame, Image
from edge.watchdog import Notifier, WatchdogError

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class ControlledSink(MqttSink):
    """The MQTT sink, also subscribed to the node's config and model topics."""

    def __init__(self, config: NodeConfig, runtime: NodeRuntime) -> None:
        """Open the outbox and prepare the publisher with the two subscriptions."""
        self.config_topic = _set_topic(config, "config_state")
        self.model_topic = _set_topic(config, "model_state")
        super().__init__(
            config,
            subscriptions=[(self.config_topic, 1), (self.model_topic, 1)],
            on_message=runtime.handle_message,
        )

    def send_state(self, kind: str, body: dict[str, Any]) -> None:
        """Publish a config_state or model_state reply (QoS 1, not stored)."""
        if not self.publisher.publish_reply(kind, body):
            logger.warning(
                "%s %s for request %s not sent: the MQTT client's queue is full",
                kind,
                body.get("state"),
                body.get("request_id"),
            )


def _set_topic(config: NodeConfig, state_kind: str) -> str:
    # `.../config/state` -> `.../config/set`, `.../model/state` -> `.../model/set`.
    return topic_for(config.site, config.node, state_kind).removesuffix("state") + "set"


@dataclass(slots=True)
class _Probation:
    """A restart whose new config is on trial until `deadline`."""

    kind: str
    request_id: str
    previous_document: dict[str, Any]
    previous_config: NodeConfig
    deadline: float
    model: str | None = None


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """Settings of the managed node.

    Attributes:
        probation_s: a pipeline that fails within this many seconds after a
            remote change is rolled back to the previous config. Longer
            catches slow failures (a camera that drops after a minute) at
            the cost of a later `applied` reply.
        frames_kept: recent frames kept for a model's test run.
        keep_every: keep one frame in this many; higher spreads the kept
            frames over a longer stretch of the scene.
        model_hosts: extra hosts a model may be downloaded from, besides the
            broker's host and loopback.
    """

    probation_s: float = 10.0
    frames_kept: int = 5
    keep_every: int = 10
    model_hosts: tuple[str, ...] = ()


class NodeRuntime:
    """Supervises one node's pipeline; see the module docstring."""

    def __init__(
        self,
        config_path: Path,
        *,
        settings: RuntimeSettings | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        """Load the config file.

        Raises:
            ConfigError: the file is missing or invalid, or has no mqtt.url.
        """
        self.config_path = config_path.resolve()
        self.settings = settings or RuntimeSettings()
        self.config = load_config(self.config_path)
        if self.config.mqtt.url is None:
            raise ConfigError(
                f"{config_path}: mqtt.url is missing; a managed node needs the "
                "broker to take orders from the gateway"
            )
        self.document: dict[str, Any] = plain(load_yaml(self.config_path))
        self.notifier = notifier or Notifier(None)
        self.pipeline_starts = 0
        self.frames = 0
        self.recent_frames: deque[Image] = deque(maxlen=self.settings.frames_kept)
        self.pipeline: Pipeline | None = None
        self.sink: ControlledSink | None = None
        self._lock = threading.Lock()
        self._run_stop = threading.Event()
        self._stopping = False
        self._next: tuple[ConfigChange, str, str | None] | None = None
        self._probation: _Probation | None = None
        self._busy_with: str | None = None
        self._ready_sent = False
        self.installer = ModelInstaller(
            self.config.outbox.path.parent / "models",
            allowed_hosts=self._model_hosts(),
        )

    def _model_hosts(self) -> tuple[str, ...]:
        from edge.mqtt_endpoint import BrokerAddress  # noqa: PLC0415

        broker = BrokerAddress.parse(self.config.mqtt.url or "")
        return (broker.host, *self.settings.model_hosts)

    # -- lifecycle ---------------------------------------------------------

    def stop(self) -> None:
        """Ask the run to end after the current frame; safe from any thread."""
        self._stopping = True
        self._run_stop.set()

    def run(self) -> int:
        """Run pipelines until `stop`, the end of a file source or a failure.

        Returns:
            EXIT_OK after a stop or the end of the source, EXIT_FAILED when the
            pipeline fails outside a probation (systemd then restarts us).
        """
        self.sink = ControlledSink(self.config, self)
        try:
            while not self._stopping:
                outcome = self._run_once(self.sink)
                if outcome is not None:
                    return outcome
            return EXIT_OK
        finally:
            self.notifier.stopping()
            self.sink.close()

    def _run_once(self, sink: ControlledSink) -> int | None:
        self._run_stop.clear()
        if self._stopping:
            return EXIT_OK
        if self._ready_sent:
            # A restart inside the process loads a model; keep systemd patient.
            self.notifier.pet(force=True)
        try:
            pipeline = Pipeline(self.config, sink, on_frame=self._on_frame)
            self.pipeline = pipeline
            self.pipeline_starts += 1
            self._announce_start()
            pipeline.run(self._run_stop)
        except PipelineError as error:
            return self._after_failure(str(error))
        finally:
            self.pipeline = None
        if self._take_next():
            return None
        self._confirm_probation()
        return EXIT_OK

    def _announce_start(self) -> None:
        status = (
            f"running config {self.config.config_version}, "
            f"model {self.config.model.path.name}"
        )
        if self._ready_sent:
            self.notifier.status(status)
            return
        self.notifier.ready(status)
        self._ready_sent = True

    def _after_failure(self, reason: str) -> int | None:
        probation = self._probation
        if probation is None:
            logger.error("pipeline failed: %s", reason)
            return EXIT_FAILED
        logger.error(
            "%s request %s failed within %.0f s (%s); rolling back",
            probation.kind,
            probation.request_id,
            self.settings.probation_s,
            reason,
        )
        self.config = probation.previous_config
        self.document = probation.previous_document
        self._probation = None
        self._release()
        self._reply(probation, "rolled_back", f"new {probation.kind} failed: {reason}")
        return None

    def _take_next(self) -> bool:
        with self._lock:
            pending, self._next = self._next, None
        if pending is None:
            return False
        change, kind, model = pending
        self._probation = _Probation(
            kind=kind,
            request_id=change.request_id,
            previous_document=self.document,
            previous_config=self.config,
            deadline=time.monotonic() + self.settings.probation_s,
            model=model,
        )
        self.config = change.config
        self.document = change.document
        logger.info(
            "restarting the pipeline for %s request %s (changed: %s)",
            kind,
            change.request_id,
            ", ".join(change.plan.restart) or "model",
        )
        return True

    def _confirm_probation(self) -> None:
        probation = self._probation
        if probation is None:
            return
        self._probation = None
        try:
            save_document(self.config_path, self.document)
        except RemoteConfigError as error:
            logger.error("%s", error)  # noqa: TRY400
            reason = f"running but not saved: {error}"
        else:
            reason = "pipeline restarted and running"
        # Free the node before the reply: a gateway that sends its next
        # request as soon as it reads this state must not find it busy.
        self._release()
        self._reply(probation, "applied", reason)

    # -- frame hook --------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        self.frames += 1
        self.notifier.pet()
        if self.frames % self.settings.keep_every == 1 or self.settings.keep_every == 1:
            # A full-size copy, because the test run detects on frames as captured.
            self.recent_frames.append(frame.image.copy())
        probation = self._probation
        if probation is not None and time.monotonic() >= probation.deadline:
            self._confirm_probation()

    # -- orders from the gateway ------------------------------------------

    def handle_message(self, topic: str, payload: bytes) -> None:
        """Dispatch a message from the config or model topic (paho's thread)."""
        sink = self.sink
        if sink is None:
            return
        if topic == sink.config_topic:
            self._handle_config(payload)
        elif topic == sink.model_topic:
            threading.Thread(
                target=self._handle_model, args=(payload,), name="model-rollout"
            ).start()

    def _claim(self, request_id: str) -> str | None:
        with self._lock:
            if self._busy_with is not None:
                return (
                    f"request {self._busy_with} is still being applied; "
                    "send this one again after its state message"
                )
            self._busy_with = request_id
            return None

    def _release(self) -> None:
        with self._lock:
            self._busy_with = None

    def _handle_config(self, payload: bytes) -> None:
        try:
            request = parse_request(payload)
        except RemoteConfigError as error:
            logger.warning("invalid config request rejected: %s", error)
            self._send("config_state", "unknown", "rejected", str(error))
            return
        busy = self._claim(request.request_id)
        if busy is not None:
            self._send("config_state", request.request_id, "rejected", busy)
            return
        try:
            change = prepare_change(
                request, self.document, self.config, self.config_path.parent
            )
        except RemoteConfigError as error:
            self._release()
            logger.warning("config request %s rejected: %s", request.request_id, error)
            self._send("config_state", request.request_id, "rejected", str(error))
            return
        except (RecursionError, ValueError) as error:
            # A patch nested about a thousand deep overflows the merge, and the
            # request must still get its reply.
            self._release()
            logger.warning("config request %s failed: %r", request.request_id, error)
            reason = f"config request cannot be applied: {describe_json_error(error)}"
            self._send("config_state", request.request_id, "rejected", reason)
            return
        if change.plan.needs_restart:
            self._schedule_restart(change, "config", None)
            return
        self._apply_live(change)

    def _apply_live(self, change: ConfigChange) -> None:
        pipeline = self.pipeline
        try:
            if pipeline is not None:
                pipeline.apply_live(change.config)
            save_document(self.config_path, change.document)
        except (PipelineError, RemoteConfigError) as error:
            self._release()
            self._send("config_state", change.request_id, "rejected", str(error))
            return
        self.config = change.config
        self.document = change.document
        self._release()
        self._send(
            "config_state",
            change.request_id,
            "applied",
            f"applied live: {', '.join(change.plan.live)}",
        )

    def _schedule_restart(
        self, change: ConfigChange, kind: str, model: str | None
    ) -> None:
        with self._lock:
            self._next = (change, kind, model)
        self._run_stop.set()

    def _handle_model(self, payload: bytes) -> None:
        try:
            announcement = parse_announcement(payload)
        except RolloutError as error:
            self._send("model_state", "unknown", "failed", str(error))
            return
        request_id = announcement.request_id
        busy = self._claim(request_id)
        if busy is not None:
            self._send("model_state", request_id, "failed", busy)
            return

        def report(state: str, reason: str) -> None:
            self._send("model_state", request_id, state, reason, announcement.name)

        try:
            change = self.installer.install(
                announcement,
                document=self.document,
                current=self.config,
                base_dir=self.config_path.parent,
                frames=list(self.recent_frames),
                report=report,
            )
        except RolloutError as error:
            self._release()
            logger.warning("model %s rejected: %s", announcement.name, error)
            report("failed", str(error))
            return
        self._schedule_restart(change, "model", announcement.name)

    # -- replies -----------------------------------------------------------

    def _reply(self, probation: _Probation, state: str, reason: str) -> None:
        kind = "model_state" if probation.kind == "model" else "config_state"
        self._send(kind, probation.request_id, state, reason, probation.model)

    def _send(
        self,
        kind: str,
        request_id: str,
        state: str,
        reason: str,
        model: str | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "request_id": request_id[:64],
            "state": state,
            "reason": reason[:2000],
            "config_version": self.config.config_version,
        }
        if model is not None:
            body["model"] = model[:128]
        logger.info("%s %s: %s %s", kind, request_id, state, reason)
        if self.sink is not None:
            self.sink.send_state(kind, body)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of `sitlab-edge serve`."""
    parser = argparse.ArgumentParser(
        prog="sitlab-edge serve",
        description="Run a managed node: systemd notify, remote config, roll-out.",
    )
    parser.add_argument("--config", type=Path, required=True, help="node config file")
    parser.add_argument(
        "--probation",
        type=float,
        default=10.0,
        help="seconds a restarted pipeline must run before a change counts as applied",
    )
    parser.add_argument(
        "--model-host",
        action="append",
        default=[],
        help="extra host models may be downloaded from; repeatable",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus metrics on this port (0: off)",
    )
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of the metrics endpoint"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `sitlab-edge serve`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        notifier = Notifier.from_env()
        runtime = NodeRuntime(
            args.config,
            settings=RuntimeSettings(
                probation_s=args.probation, model_hosts=tuple(args.model_host)
            ),
            notifier=notifier,
        )
    except (ConfigError, WatchdogError) as error:
        # The CLI's output layer: the message goes to the journal as is.
        sys.stderr.write(f"cannot start the node:\n{error}\n")
        return EXIT_USAGE

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("signal %d received; stopping after the current frame", signum)
        runtime.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    metrics = _start_metrics(runtime, args.metrics_host, args.metrics_port)
    logger.info("sitlab-edge %s serving %s", __version__, runtime.config_path)
    try:
        return runtime.run()
    finally:
        if metrics is not None:
            metrics.stop()
        notifier.close()


def _start_metrics(runtime: NodeRuntime, host: str, port: int) -> Any:  # noqa: ANN401
    if not port:
        return None
    from edge.metrics_http import MetricsServer  # noqa: PLC0415

    server = MetricsServer(runtime, host=host, port=port)
    server.start()
    return server


if __name__ == "__main__":
    sys.exit(main())
