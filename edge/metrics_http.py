"""Prometheus text metrics of a managed node, served by a stdlib HTTP thread.

Bound to 127.0.0.1 by default: the figures reveal nothing about people, but
the node should not open a port to the camera network unless asked to. A
Prometheus agent on the node, or an SSH tunnel, scrapes it.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from edge.health import HealthProbe

if TYPE_CHECKING:
    from edge.runtime import NodeRuntime

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(samples: list[tuple[str, str, str, float | None]], labels: str) -> str:
    """Render (name, type, help, value) rows in the Prometheus text format.

    Rows whose value is None (a figure the platform lacks) are left out.
    """
    lines = []
    for name, kind, help_text, value in samples:
        if value is None:
            continue
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{{{labels}}} {float(value):g}")
    return "\n".join(lines) + "\n"


def node_samples(
    runtime: NodeRuntime, health: dict[str, Any]
) -> list[tuple[str, str, str, float | None]]:
    """Collect the node's figures: frames, restarts, link, host health."""
    pipeline = runtime.pipeline
    inference_ms: float | None = None
    if pipeline is not None:
        seconds, calls = pipeline.summary.timer.window().get("inference", (0.0, 0))
        inference_ms = 1000.0 * seconds / calls if calls else None
    link = runtime.sink.stats_fields() if runtime.sink is not None else {}
    outbox = link.get("outbox") or {}
    throttled = health.get("throttled")
    return [
        ("sitlab_node_frames_total", "counter", "Frames processed.", runtime.frames),
        (
            "sitlab_node_pipeline_starts_total",
            "counter",
            "Pipeline starts in this process; above 1 after restarts.",
            runtime.pipeline_starts,
        ),
        (
            "sitlab_node_inference_ms",
            "gauge",
            "Mean inference time since the last heartbeat window.",
            inference_ms,
        ),
        (
            "sitlab_node_outbox_depth",
            "gauge",
            "Messages waiting for the broker.",
            outbox.get("depth"),
        ),
        (
            "sitlab_node_mqtt_reconnects_total",
            "counter",
            "Reconnects to the broker.",
            link.get("mqtt_reconnects"),
        ),
        ("sitlab_node_cpu_percent", "gauge", "CPU use.", health.get("cpu_percent")),
        ("sitlab_node_memory_mb", "gauge", "Resident memory.", health.get("memory_mb")),
        (
            "sitlab_node_disk_free_mb",
            "gauge",
            "Free space of the state directory.",
            health.get("disk_free_mb"),
        ),
        (
            "sitlab_node_cpu_temperature_celsius",
            "gauge",
            "SoC temperature.",
            health.get("cpu_temperature_c"),
        ),
        (
            "sitlab_node_throttled",
            "gauge",
            "1 while the Pi firmware throttles the CPU.",
            None if throttled is None else float(bool(throttled)),
        ),
    ]


class MetricsServer:
    """Serves GET /metrics for one runtime on a daemon thread.

    Args:
        runtime: the node whose figures are served.
        host: listen address; keep 127.0.0.1 unless a scraper needs it.
        port: listen port; 0 picks a free one (see `port` after `start`).
    """

    def __init__(
        self, runtime: NodeRuntime, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.runtime = runtime
        self.host = host
        self.port = port
        self._health = HealthProbe(runtime.config.outbox.path.parent)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def text(self) -> str:
        """Return the current metrics page."""
        with self._lock:
            health = self._health.sample()
        config = self.runtime.config
        labels = f'site="{_escape(config.site)}",node="{_escape(config.node)}"'
        return render(node_samples(self.runtime, health), labels)

    def start(self) -> None:
        """Bind and serve in the background."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = owner.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()
        logger.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
