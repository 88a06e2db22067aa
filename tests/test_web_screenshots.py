"""Screenshots of the dispatcher page from a real node run on vtest.avi.

The node (`python -m edge.cli run`) detects and counts on the real clip and
publishes to a real Mosquitto, and the gateway ingests and serves the page.
The node command line does not run incident rules yet. So this test builds
the crowding incident from real detections on a real frame, anonymises it
with the node's evidence renderer, and publishes it over MQTT as a node.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest

from edge.detector import Detector
from edge.incidents.evidence import EvidenceSettings, render_evidence
from edge.messages import envelope, utc_iso
from gateway import line_speeds
from gateway.auth import set_user
from tests.support.broker import Broker
from tests.support.browser import WebGateway, launch_browser
from tests.support.gateway_fixtures import wire
from tests.support.gateway_server import gateway_config, publisher, wait_until

pytestmark = [pytest.mark.media, pytest.mark.mqtt, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
# The screenshots go to a temporary folder, so a test run never changes the
# committed files; SITLAB_DOCS_IMAGES=docs/images regenerates the docs.
IMAGES = Path(
    os.environ.get("SITLAB_DOCS_IMAGES") or tempfile.mkdtemp(prefix="sitlab-screens-")
)
PASSWORD = "correct horse battery"
SITE, NODE, TIME_ZONE = "lab", "campus-01", "Europe/Prague"
PERSON = 0  # COCO class index of "person"


@pytest.fixture
def web(broker: Broker, tmp_path: Path) -> Iterator[WebGateway]:
    instance = WebGateway(
        gateway_config(broker.url, f"sqlite:///{tmp_path / 'gateway.db'}")
    ).start()
    set_user(instance.gateway.db, "dana", PASSWORD, "admin")
    yield instance
    instance.stop()


def start_node(
    broker: Broker, vtest: Path, model: Path, tmp_path: Path
) -> subprocess.Popen[bytes]:
    """Start the node with the quick-trial flags' settings, as a config file.

    The file adds one thing the flags cannot set: a 2 s heartbeat instead of
    30 s. The whole clip may take less than 30 s on a fast machine, and the
    node map needs a heartbeat to show frame rate and outbox depth.
    """
    config = tmp_path / "node.yaml"
    config.write_text(
        f"""site: {SITE}
node: {NODE}
source: {{uri: "{vtest}"}}
model: {{path: "{model}"}}
geometry: {{reference_resolution: source}}
lines: [{{name: road, points: [[384, 0], [384, 576]]}}]
zones: [{{name: plaza, polygon: [[0, 250], [768, 250], [768, 576], [0, 576]]}}]
counts: {{interval_s: 10}}
mqtt: {{url: "{broker.url}", heartbeat_interval_s: 2}}
outbox: {{path: "{tmp_path / "outbox.sqlite3"}"}}
"""
    )
    command = [sys.executable, "-m", "edge.cli", "run", "--config", str(config)]
    log = (tmp_path / "node.log").open("wb")
    return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603


def draw_plan(path: Path) -> Path:
    """Draw a schematic campus plan: the plaza zone, the road line, a building."""
    plan = np.full((480, 768, 3), (238, 234, 228), np.uint8)
    cv2.rectangle(plan, (0, 200), (767, 479), (205, 225, 205), -1)
    cv2.putText(
        plan, "plaza", (40, 450), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (60, 90, 60), 2
    )
    cv2.line(plan, (384, 0), (384, 479), (40, 40, 200), 3)
    cv2.putText(
        plan,
        "road count line",
        (394, 30),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.7,
        (40, 40, 200),
        2,
    )
    cv2.rectangle(plan, (20, 20), (300, 170), (120, 120, 120), -1)
    cv2.putText(
        plan, "building", (90, 105), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (250, 250, 250), 2
    )
    cv2.imwrite(str(path), plan)
    return path


def crowding_message(vtest: Path, model: Path, seq: int) -> dict[str, Any]:
    capture = cv2.VideoCapture(str(vtest))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 300)
    ok, frame = capture.read()
    capture.release()
    assert ok, "could not read frame 300 of vtest.avi"
    detections = Detector(model).detect(frame)
    people = detections.xyxy[detections.class_id == PERSON]
    boxes = [tuple(float(v) for v in box) for box in people]
    evidence = render_evidence(frame, boxes, [], EvidenceSettings())
    now = datetime.now(UTC)
    message = envelope("incident", SITE, NODE, seq, sent_at=now)
    message.update(
        incident_id=str(uuid.uuid4()),
        phase="start",
        type="crowding",
        rule="plaza-crowd",
        severity="high",
        zone="plaza",
        started_at=utc_iso(now),
        detail={"count": len(boxes), "threshold": 5},
        evidence=evidence,
    )
    return message


def local_input(moment_ms: int) -> str:
    moment = datetime.fromtimestamp(moment_ms / 1000, UTC).astimezone(
        ZoneInfo(TIME_ZONE)
    )
    return moment.strftime("%Y-%m-%dT%H:%M")


def login(browser: Any, web: WebGateway) -> Any:
    context = browser.new_context(
        viewport={"width": 1400, "height": 860}, locale="en-GB"
    )
    page = context.new_page()
    page.goto(f"{web.base_url}/")
    page.fill("#login-password input[name=username]", "dana")
    page.fill("#login-password input[name=password]", PASSWORD)
    page.press("#login-password input[name=password]", "Enter")
    page.wait_for_selector("#live[data-state=live]", timeout=10_000)
    page.wait_for_selector("#queue[aria-busy=false]")
    return page


def set_up_site(page: Any, plan: Path) -> None:
    page.keyboard.press("2")
    page.wait_for_selector(f"#node-table tr[data-node={NODE}]")
    page.set_input_files("#plan-admin input[name=plan]", str(plan))
    page.fill("#plan-admin input[name=time_zone]", TIME_ZONE)
    page.click("#plan-admin button[type=submit]")
    page.wait_for_selector("#plan-image:not([hidden])")
    page.select_option("#plan-admin select[name=place]", NODE)
    box = page.locator("#plan-image").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.52, box["y"] + box["height"] * 0.62)
    page.wait_for_selector(f".marker[data-node={NODE}]")


def scalar(web: WebGateway, sql: str) -> int:
    return int(web.gateway.db.query(sql)[0][0] or 0)


def test_screenshots_from_vtest_run(
    broker: Broker,
    web: WebGateway,
    vtest_avi: Path,
    models_dir: Path,
    tmp_path: Path,
) -> None:
    model = models_dir / "yolov8n_320_fp32.onnx"
    IMAGES.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    node = start_node(broker, vtest_avi, model, tmp_path)
    try:
        wait_until(
            lambda: (
                scalar(web, "SELECT COUNT(*) FROM nodes WHERE fps IS NOT NULL") == 1
            ),
            120,
            "the node's first heartbeat",
        )
        with launch_browser() as browser:
            page = login(browser, web)
            set_up_site(page, draw_plan(tmp_path / "plan.png"))
            page.wait_for_selector(f".marker[data-node={NODE}][data-state=online]")
            page.screenshot(path=str(IMAGES / "dispatcher-nodes.png"))
            assert node.wait(timeout=600) == 0, (tmp_path / "node.log").read_text()
            print(f"node run on vtest.avi: {time.monotonic() - started:.1f} s")

            wait_until(
                lambda: scalar(web, "SELECT COUNT(*) FROM count_lines") > 0,
                30,
                "counts",
            )
            last_seq = scalar(web, f"SELECT last_seq FROM nodes WHERE node = '{NODE}'")
            sender = publisher(broker.url, client_id="screenshot-incident")
            message = crowding_message(vtest_avi, model, last_seq + 1)
            sender.publish(*wire(message), qos=1)
            show_incident(page, message["incident_id"])
            sender.loop_stop()
            sender.disconnect()
            show_counts(page, web)
            page.context.close()
    finally:
        if node.poll() is None:
            node.terminate()
            node.wait(10)


def show_incident(page: Any, incident_id: str) -> None:
    page.keyboard.press("1")
    selector = f"#queue tr[data-id='{incident_id}']"
    page.wait_for_selector(selector, timeout=5_000)
    page.click(selector)
    page.wait_for_selector("#ack-button:not([disabled])")
    page.keyboard.press("a")
    page.keyboard.type("Guard on the way to the plaza")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"{selector}[data-state=acknowledged]")
    page.wait_for_selector(".timeline li[data-action=ack]")
    image = page.wait_for_selector("img.evidence")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image)
    page.keyboard.press("Escape")
    page.screenshot(path=str(IMAGES / "dispatcher-incidents.png"), full_page=True)
    offline = page.query_selector("#queue tbody td:has-text('node_offline')")
    assert offline is not None, "the node's stop should have raised node_offline"


def show_counts(page: Any, web: WebGateway) -> None:
    first_ms = scalar(web, "SELECT MIN(start_ms) FROM count_lines")
    last_ms = scalar(web, "SELECT MAX(end_ms) FROM count_lines")
    crossings = scalar(web, "SELECT SUM(n_in + n_out) FROM count_lines")
    page.keyboard.press("3")
    page.wait_for_selector("#count-form button[type=submit]:not([disabled])")
    page.fill("#count-form input[name=from]", local_input(first_ms - 60_000))
    page.fill("#count-form input[name=to]", local_input(last_ms + 120_000))
    page.select_option("#count-form select[name=bucket]", "1m")
    page.click("#count-form button[type=submit]")
    page.wait_for_selector("#count-chart polyline", state="attached")
    note = page.inner_text("#count-note")
    assert f"total {crossings}" in note
    assert TIME_ZONE in note
    href = page.get_attribute("#count-csv", "href")
    csv = page.context.request.get(f"{web.base_url}{href}").text()
    header = "bucket_start,site,node,line,class,in,out," + ",".join(line_speeds.COLUMNS)
    assert csv.splitlines()[0] == header
    assert len(csv.splitlines()) > 1
    page.screenshot(path=str(IMAGES / "dispatcher-counts.png"), full_page=True)
