"""Headless Chromium through Playwright, and a gateway that serves the dispatcher page.

Playwright drives the system Chromium (Debian package `chromium`); its own
browser download (`playwright install`) is never used.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from gateway.api import create_app
from gateway.config import GatewayConfig
from gateway.service import Gateway
from gateway.web import mount_web
from tests.support.broker import wait_for_port

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Lets the page's WebAudio beep start without a real user gesture.
    "--autoplay-policy=no-user-gesture-required",
]


def chromium_path() -> str:
    """Return the system Chromium's path, or skip the test with the install command."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed; run apt-get install chromium")
    try:
        import playwright  # noqa: F401, PLC0415
    except ImportError:
        pytest.skip("playwright is not installed; run pip install playwright")
    return path


@contextmanager
def launch_browser() -> Iterator[Any]:
    """Start headless Chromium and yield the Playwright Browser."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


class WebGateway:
    """A gateway with its HTTP API and the dispatcher page served on a thread.

    The HTTP server can be stopped and started again on the same port while
    the MQTT ingest keeps running, which cuts every open SSE stream the way
    a gateway restart or a proxy timeout does.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.gateway = Gateway(config)
        self.app: FastAPI = create_app(self.gateway.db, config)
        mount_web(self.app, self.gateway.db)
        self.stream_requests: list[dict[str, str | None]] = []
        self.app.middleware("http")(self._record_stream_request)
        self.server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def _record_stream_request(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # Records how each SSE (re)connection asked to resume, because a
        # browser's automatic EventSource retries are invisible to Playwright.
        if request.url.path == "/api/v1/stream":
            self.stream_requests.append(
                {
                    "last_event_id": request.headers.get("last-event-id"),
                    "after": request.query_params.get("after"),
                }
            )
        return await call_next(request)

    @property
    def base_url(self) -> str:
        """Base URL of the page and the API."""
        return f"http://{self.config.api.listen}"

    def start(self) -> WebGateway:
        """Start ingest and HTTP; wait until MQTT is subscribed and HTTP listens."""
        self.gateway.start()
        self.start_http()
        if not self.gateway.mqtt.connected.wait(10):
            raise TimeoutError("test gateway did not connect to the broker in 10 s")
        return self

    def start_http(self) -> None:
        """Serve HTTP on the configured port."""
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host=self.config.api.host,
                port=self.config.api.port,
                log_level="warning",
                timeout_graceful_shutdown=1,
            )
        )
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self._thread.start()
        wait_for_port(self.config.api.port)

    def stop_http(self) -> None:
        """Stop HTTP and close open connections, SSE streams included."""
        if self.server is None or self._thread is None:
            return
        self.server.should_exit = True
        self._thread.join(10)
        self.server = None

    def stop(self) -> None:
        """Stop HTTP and the gateway."""
        self.stop_http()
        self.gateway.stop()
        self.gateway.db.close()
