"""The dispatcher page end to end: real broker, real gateway, headless Chromium."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from gateway import line_speeds
from gateway.auth import create_token, set_user
from tests.support.broker import Broker
from tests.support.browser import WebGateway, launch_browser
from tests.support.gateway_fixtures import (
    counts_message,
    heartbeat_message,
    incident_message,
    status_message,
    wire,
)
from tests.support.gateway_server import gateway_config, publisher, wait_until

pytestmark = pytest.mark.mqtt

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_browser() as instance:
        yield instance


@pytest.fixture
def web(broker: Broker, tmp_path: Path) -> Iterator[WebGateway]:
    instance = WebGateway(
        gateway_config(broker.url, f"sqlite:///{tmp_path / 'gateway.db'}")
    ).start()
    db = instance.gateway.db
    set_user(db, "alice", PASSWORD, "dispatcher")
    set_user(db, "root", PASSWORD, "admin")
    yield instance
    instance.stop()


@pytest.fixture
def node(broker: Broker) -> Iterator[Any]:
    client = publisher(broker.url, client_id=f"node-{uuid.uuid4().hex[:6]}")
    client.publish(*wire(status_message("online")), qos=1)
    client.publish(*wire(heartbeat_message()), qos=1)
    yield client
    client.loop_stop()
    client.disconnect()


def open_page(browser: Any, web: WebGateway) -> Any:
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, locale="en-GB"
    )
    page = context.new_page()
    page.goto(f"{web.base_url}/")
    page.wait_for_selector("#login:not([hidden])")
    return page


def login_password(browser: Any, web: WebGateway, username: str) -> Any:
    page = open_page(browser, web)
    page.fill("#login-password input[name=username]", username)
    page.fill("#login-password input[name=password]", PASSWORD)
    page.press("#login-password input[name=password]", "Enter")
    page.wait_for_selector("#live[data-state=live]", timeout=10_000)
    page.wait_for_selector("#queue[aria-busy=false]")
    return page


def login_token(browser: Any, web: WebGateway, role: str) -> Any:
    page = open_page(browser, web)
    token = create_token(web.gateway.db, role, f"wall-{role}")
    page.fill("#login-token input[name=token]", token)
    page.click("#login-token button")
    page.wait_for_selector("#live[data-state=live]", timeout=10_000)
    page.wait_for_selector("#queue[aria-busy=false]")
    return page


def raise_incident(
    client: Any, seq: int, incident_type: str = "intrusion", node: str = "n1"
) -> str:
    incident_id = str(uuid.uuid4())
    message = incident_message(
        incident_id, "start", seq=seq, node=node, incident_type=incident_type
    )
    client.publish(*wire(message), qos=1)
    return incident_id


def row(incident_id: str, state: str | None = None) -> str:
    selector = f"#queue tr[data-id='{incident_id}']"
    return selector + (f"[data-state={state}]" if state else "")


def incident_count(web: WebGateway) -> int:
    return int(web.gateway.db.query("SELECT COUNT(*) FROM incidents")[0][0])


def test_login_wrong_password(browser: Any, web: WebGateway) -> None:
    page = open_page(browser, web)
    page.fill("#login-password input[name=username]", "alice")
    page.fill("#login-password input[name=password]", "wrong password")
    page.click("#login-password button")
    page.wait_for_selector("#login-error:has-text('invalid user name or password')")
    assert page.is_hidden("#app")
    page.context.close()


def test_incident_appears_within_2s(browser: Any, web: WebGateway, node: Any) -> None:
    page = login_password(browser, web, "alice")
    sent = time.monotonic()
    incident_id = raise_incident(node, seq=1)
    page.wait_for_selector(row(incident_id, "open"), timeout=2_000)
    latency_s = time.monotonic() - sent
    print(f"incident start on MQTT to row on the page: {latency_s * 1000:.0f} ms")
    assert latency_s < 2.0
    assert page.is_visible("#alert")
    assert "New high incident: intrusion at s1/n1 (yard)" in page.inner_text(
        "#alert-text"
    )
    assert page.get_attribute("#alert", "data-alerts") == "1"
    page.keyboard.press("Escape")
    assert page.is_hidden("#alert")
    page.context.close()


def test_ack_seen_in_second_session(browser: Any, web: WebGateway, node: Any) -> None:
    dispatcher = login_password(browser, web, "alice")
    viewer = login_token(browser, web, "viewer")
    incident_id = raise_incident(node, seq=1)
    dispatcher.wait_for_selector(row(incident_id, "open"), timeout=2_000)
    viewer.wait_for_selector(row(incident_id, "open"), timeout=2_000)

    dispatcher.keyboard.press("j")
    dispatcher.wait_for_selector("#ack-button:not([disabled])")
    dispatcher.keyboard.press("a")
    dispatcher.wait_for_selector("#step-dialog[open]")
    dispatcher.keyboard.type("guard sent to the yard")
    dispatcher.keyboard.press("Enter")
    dispatcher.wait_for_selector("#step-dialog[open]", state="detached")
    dispatcher.wait_for_selector(row(incident_id, "acknowledged"), timeout=2_000)

    viewer.wait_for_selector(row(incident_id, "acknowledged"), timeout=3_000)
    viewer.click(row(incident_id))
    step = viewer.wait_for_selector(".timeline li[data-action=ack]")
    text = step.inner_text()
    assert "acknowledged by alice" in text
    assert "Note: guard sent to the yard" in text
    stored = web.gateway.db.query(
        "SELECT state, acked_by, ack_note FROM incidents WHERE incident_id = ?",
        (incident_id,),
    )
    assert stored == [("acknowledged", "login:alice", "guard sent to the yard")]
    dispatcher.context.close()
    viewer.context.close()


def test_viewer_cannot_acknowledge(browser: Any, web: WebGateway, node: Any) -> None:
    page = login_token(browser, web, "viewer")
    incident_id = raise_incident(node, seq=1)
    page.wait_for_selector(row(incident_id, "open"), timeout=2_000)
    page.keyboard.press("j")
    page.wait_for_selector("#viewer-note")
    assert page.query_selector("#ack-button") is None
    assert page.query_selector("#resolve-button") is None
    page.keyboard.press("a")
    assert page.query_selector("#step-dialog[open]") is None
    assert "Role viewer cannot acknowledge incidents." in page.inner_text("#alert-text")
    refused = page.context.request.post(
        f"{web.base_url}/api/v1/incidents/{incident_id}/ack", data={"note": "try"}
    )
    assert refused.status == 403
    assert "role viewer may not do this" in refused.json()["detail"]
    stored = web.gateway.db.query(
        "SELECT state FROM incidents WHERE incident_id = ?", (incident_id,)
    )
    assert stored == [("open",)]
    page.context.close()


def test_resolve_leaves_default_queue(browser: Any, web: WebGateway, node: Any) -> None:
    page = login_password(browser, web, "alice")
    first = raise_incident(node, seq=1)
    page.wait_for_selector(row(first))
    page.keyboard.press("j")
    page.wait_for_selector("#resolve-button:not([disabled])")
    page.keyboard.press("r")
    page.wait_for_selector("#step-dialog[open]")
    assert page.inner_text("#step-title") == "Resolve incident"
    page.keyboard.press("Escape")
    page.wait_for_selector("#step-dialog[open]", state="detached")
    assert page.query_selector(row(first, "open")) is not None
    page.keyboard.press("r")
    page.keyboard.press("Enter")
    page.wait_for_selector(row(first), state="detached", timeout=3_000)
    page.select_option("#incident-filters select[name=state]", "resolved")
    page.wait_for_selector(row(first, "resolved"))
    page.context.close()


def test_queue_orders_severity_then_newest(
    browser: Any, web: WebGateway, node: Any
) -> None:
    page = login_password(browser, web, "alice")
    ids = []
    for seq, severity in enumerate(["low", "critical", "high", "critical"], 1):
        incident_id = str(uuid.uuid4())
        message = incident_message(incident_id, "start", seq=seq)
        message["severity"] = severity
        node.publish(*wire(message), qos=1)
        ids.append(incident_id)
        page.wait_for_selector(row(incident_id))
        time.sleep(0.01)
    shown = page.eval_on_selector_all(
        "#queue tbody tr", "rows => rows.map(r => r.dataset.id)"
    )
    assert shown == [ids[3], ids[1], ids[2], ids[0]]
    page.context.close()


def test_stream_drop_catch_up(browser: Any, web: WebGateway, node: Any) -> None:
    page = login_password(browser, web, "alice")
    first = raise_incident(node, seq=1)
    page.wait_for_selector(row(first))

    web.stop_http()
    page.wait_for_selector("#live:not([data-state=live])", timeout=5_000)
    missed = [raise_incident(node, seq=seq) for seq in (2, 3)]
    wait_until(lambda: incident_count(web) == 3, 10, "3 incidents stored")
    # Drop the missed events as retention would, so only the re-fetch of
    # /api/v1/incidents on reconnect can bring them to the page.
    with web.gateway.db.transaction() as tx:
        tx.execute(
            "DELETE FROM events WHERE data LIKE ? OR data LIKE ?",
            [f"%{i}%" for i in missed],
        )
    web.start_http()

    for incident_id in missed:
        page.wait_for_selector(row(incident_id, "open"), timeout=10_000)
    page.wait_for_selector("#live[data-state=live]")
    assert "while the stream was down" in page.inner_text("#alert-text")
    first_event = int(web.gateway.db.query("SELECT MIN(id) FROM events")[0][0])
    resumed = [
        request
        for request in web.stream_requests
        if request["last_event_id"] is not None or request["after"] is not None
    ]
    assert resumed, (
        f"no stream request resumed after an event id: {web.stream_requests}"
    )
    assert int(resumed[0]["last_event_id"] or resumed[0]["after"] or 0) >= first_event
    page.context.close()


def test_mute_remembered(browser: Any, web: WebGateway, node: Any) -> None:
    page = login_password(browser, web, "alice")
    assert page.get_attribute("#mute", "aria-pressed") == "false"
    first = raise_incident(node, seq=1)
    page.wait_for_selector(row(first))
    assert page.get_attribute("#alert", "data-beeps") == "1"

    page.keyboard.press("m")
    page.reload()
    page.wait_for_selector("#live[data-state=live]")
    page.wait_for_selector("#queue[aria-busy=false]")
    assert page.get_attribute("#mute", "aria-pressed") == "true"
    assert page.inner_text("#mute") == "✕ Sound muted"
    second = raise_incident(node, seq=2)
    page.wait_for_selector(row(second))
    assert page.is_visible("#alert")
    assert page.get_attribute("#alert", "data-beeps") == "0"
    page.context.close()


def plan_png(path: Path) -> Path:
    image = np.full((300, 400, 3), 235, np.uint8)
    cv2.rectangle(image, (20, 20), (380, 280), (60, 60, 60), 3)
    cv2.putText(
        image, "yard", (150, 160), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (60, 60, 60), 2
    )
    cv2.imwrite(str(path), image)
    return path


def test_admin_places_node(
    browser: Any, web: WebGateway, node: Any, tmp_path: Path
) -> None:
    page = login_password(browser, web, "root")
    page.keyboard.press("2")
    page.wait_for_selector("#node-table tr[data-node=n1][data-state=online]")
    page.set_input_files(
        "#plan-admin input[name=plan]", str(plan_png(tmp_path / "plan.png"))
    )
    page.fill("#plan-admin input[name=time_zone]", "Europe/Prague")
    page.click("#plan-admin button[type=submit]")
    page.wait_for_selector("#plan-message:has-text('Saved.')")
    page.wait_for_selector("#plan-image:not([hidden])")
    assert "Times in Europe/Prague" in page.inner_text("#node-tz")

    page.select_option("#plan-admin select[name=place]", "n1")
    box = page.locator("#plan-image").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.75)
    page.wait_for_selector(".marker[data-node=n1][data-state=online]")
    site = web.gateway.db.query("SELECT x, y FROM node_positions WHERE node = 'n1'")
    assert site[0][0] == pytest.approx(0.25, abs=0.01)
    assert site[0][1] == pytest.approx(0.75, abs=0.01)

    raise_incident(node, seq=1, incident_type="tampering")
    page.wait_for_selector(".marker[data-node=n1][data-state=tampering]", timeout=5_000)
    assert "⚠ n1" in page.inner_text(".marker[data-node=n1]")
    page.context.close()


def test_dispatcher_has_no_plan_setup(browser: Any, web: WebGateway, node: Any) -> None:
    page = login_password(browser, web, "alice")
    page.keyboard.press("2")
    page.wait_for_selector("#node-table tr[data-node=n1]")
    assert page.is_hidden("#plan-admin")
    refused = page.context.request.put(
        f"{web.base_url}/api/v1/sites/s1/nodes/n1/position", data={"x": 0.5, "y": 0.5}
    )
    assert refused.status == 403
    page.context.close()


def test_counts_compare_in_site_zone(browser: Any, web: WebGateway, node: Any) -> None:
    admin = {
        "Authorization": f"Bearer {create_token(web.gateway.db, 'admin', 'setup')}"
    }
    response = httpx.put(
        f"{web.base_url}/api/v1/sites/s1/time-zone",
        json={"time_zone": "Europe/Prague"},
        headers=admin,
    )
    assert response.status_code == 200

    for seq, (start, n_in, n_out) in enumerate(
        [
            (datetime(2024, 5, 31, 8, 45, tzinfo=UTC), 1, 1),
            (datetime(2024, 6, 1, 8, 30, tzinfo=UTC), 3, 1),
            (datetime(2024, 6, 1, 9, 15, tzinfo=UTC), 2, 0),
        ],
        1,
    ):
        message = counts_message(
            seq=seq, start=start, lines=[("gate", "person", n_in, n_out)]
        )
        node.publish(*wire(message), qos=1)
    wait_until(
        lambda: (
            int(web.gateway.db.query("SELECT COUNT(*) FROM count_lines")[0][0]) == 3
        ),
        10,
        "3 count rows",
    )

    page = login_password(browser, web, "alice")
    page.keyboard.press("3")
    page.wait_for_selector("#count-form button[type=submit]:not([disabled])")
    page.fill("#count-form input[name=from]", "2024-06-01T10:00")
    page.fill("#count-form input[name=to]", "2024-06-01T12:00")
    page.fill("#count-form input[name=compare]", "2024-05-31T10:00")
    page.click("#count-form button[type=submit]")
    page.wait_for_selector("#count-chart polyline.compare", state="attached")
    note = page.inner_text("#count-note")
    assert "Crossings in Europe/Prague, bucket 1h: total 6" in note
    assert "against 2 in the comparison period (200.0 %)" in note
    buckets = page.eval_on_selector_all(
        "#count-table tbody tr td:first-child", "cells => cells.map(c => c.textContent)"
    )
    assert buckets == ["2024-06-01T10:00:00+02:00", "2024-06-01T11:00:00+02:00"]

    href = page.get_attribute("#count-csv", "href")
    assert "tz=Europe%2FPrague" in href
    assert "from=2024-06-01T08%3A00%3A00.000Z" in href
    csv = page.context.request.get(f"{web.base_url}{href}").text()
    assert csv.splitlines() == [
        "bucket_start,site,node,line,class,in,out," + ",".join(line_speeds.COLUMNS),
        "2024-06-01T10:00:00+02:00,s1,n1,gate,person,3,1" + "," * 8,
        "2024-06-01T11:00:00+02:00,s1,n1,gate,person,2,0" + "," * 8,
    ]
    page.context.close()
