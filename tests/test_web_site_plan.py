"""Site plan, node position, time zone and session routes of the dispatcher page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gateway import site_plan
from gateway.api import create_app
from gateway.auth import create_token, set_user
from gateway.config import parse_config
from gateway.store import Database
from gateway.web import CONTENT_SECURITY_POLICY, mount_web
from tests.support.gateway_fixtures import db, db_url, postgres_database  # noqa: F401

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 64


@pytest.fixture
def client(db: Database) -> Iterator[TestClient]:  # noqa: F811
    app = create_app(db, parse_config({}))
    mount_web(app, db)
    mount_web(app, db)  # a second call must not add the routes twice
    with TestClient(app) as test_client:
        yield test_client


def bearer(db: Database, role: str) -> dict[str, str]:  # noqa: F811
    return {"Authorization": f"Bearer {create_token(db, role, f'test-{role}')}"}


def test_page_served_with_csp(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert "<title>SITLab dispatcher</title>" in response.text
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


@pytest.mark.parametrize(
    "path",
    ["/static/js/main.js", "/static/css/app.css", "/static/js/incidents.js"],
    ids=["main-js", "css", "incidents-js"],
)
def test_static_files_served(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_routes_mounted_once(client: TestClient) -> None:
    paths = [getattr(route, "path", "") for route in client.app.routes]  # type: ignore[attr-defined]
    assert paths.count("/") == 1
    assert paths.count("/static") == 1


def test_token_login_sets_cookie(client: TestClient, db: Database) -> None:  # noqa: F811
    token = create_token(db, "viewer", "wall screen")
    response = client.post("/api/v1/session", json={"token": token})
    assert response.status_code == 200
    assert response.json() == {"name": "wall screen", "role": "viewer"}
    assert client.get("/api/v1/session").json()["role"] == "viewer"
    assert client.get("/api/v1/incidents").status_code == 200


def test_token_login_rejects_unknown(client: TestClient) -> None:
    response = client.post("/api/v1/session", json={"token": "sgw_nope"})
    assert response.status_code == 401
    assert "invalid, expired or revoked token" in response.json()["detail"]


def test_session_requires_login(client: TestClient) -> None:
    response = client.get("/api/v1/session")
    assert response.status_code == 401
    assert "log in" in response.json()["detail"]


def test_logout_revokes_password_session(client: TestClient, db: Database) -> None:  # noqa: F811
    set_user(db, "alice", "correct horse", "dispatcher")
    login = client.post(
        "/api/v1/login", json={"username": "alice", "password": "correct horse"}
    )
    token = login.json()["token"]
    assert client.delete("/api/v1/session").status_code == 204
    client.cookies.clear()
    after = client.get("/api/v1/session", headers={"Authorization": f"Bearer {token}"})
    assert after.status_code == 401


def test_logout_keeps_api_token(client: TestClient, db: Database) -> None:  # noqa: F811
    token = create_token(db, "viewer", "script")
    client.post("/api/v1/session", json={"token": token})
    assert client.delete("/api/v1/session").status_code == 204
    client.cookies.clear()
    after = client.get("/api/v1/session", headers={"Authorization": f"Bearer {token}"})
    assert after.status_code == 200


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("image/png", PNG), ("image/jpeg", JPEG), ("image/webp", WEBP)],
    ids=["png", "jpeg", "webp"],
)
def test_plan_upload_round_trip(
    client: TestClient,
    db: Database,  # noqa: F811
    content_type: str,
    body: bytes,
) -> None:
    admin = bearer(db, "admin")
    response = client.put(
        "/api/v1/sites/lab/plan",
        content=body,
        headers={**admin, "Content-Type": content_type},
    )
    assert response.status_code == 200
    assert response.json()["plan"] == {"content_type": content_type, "bytes": len(body)}
    image = client.get("/api/v1/sites/lab/plan", headers=bearer(db, "viewer"))
    assert image.content == body
    assert image.headers["content-type"] == content_type


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("image/svg+xml", b"<svg/>", "not supported; use one of image/png"),
        ("image/png", JPEG, "do not look like image/png"),
        ("image/png", b"", "plan image is empty"),
        ("image/webp", b"RIFF\x00\x00\x00\x00AVI ", "do not look like image/webp"),
        (
            "image/png",
            b"\x89PNG\r\n\x1a\n" + b"\x00" * site_plan.MAX_IMAGE_BYTES,
            "above the limit",
        ),
    ],
    ids=["svg", "wrong-signature", "empty", "riff-not-webp", "too-large"],
)
def test_plan_upload_rejects(
    client: TestClient,
    db: Database,  # noqa: F811
    content_type: str,
    body: bytes,
    message: str,
) -> None:
    response = client.put(
        "/api/v1/sites/lab/plan",
        content=body,
        headers={**bearer(db, "admin"), "Content-Type": content_type},
    )
    assert response.status_code == 400
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/api/v1/sites/lab/plan", PNG),
        ("PUT", "/api/v1/sites/lab/time-zone", b'{"time_zone": "UTC"}'),
        ("PUT", "/api/v1/sites/lab/nodes/n1/position", b'{"x": 0.5, "y": 0.5}'),
        ("DELETE", "/api/v1/sites/lab/nodes/n1/position", b""),
    ],
    ids=["plan", "time-zone", "position", "remove-position"],
)
def test_site_setup_needs_admin(
    client: TestClient,
    db: Database,  # noqa: F811
    method: str,
    path: str,
    body: bytes,
) -> None:
    headers = {**bearer(db, "dispatcher"), "Content-Type": "application/json"}
    response = client.request(method, path, content=body, headers=headers)
    assert response.status_code == 403
    assert (
        "role dispatcher may not do this; it needs admin" in response.json()["detail"]
    )


def test_missing_plan_is_404(client: TestClient, db: Database) -> None:  # noqa: F811
    response = client.get("/api/v1/sites/lab/plan", headers=bearer(db, "viewer"))
    assert response.status_code == 404
    assert "site 'lab' has no plan image" in response.json()["detail"]


def test_positions_and_time_zone(client: TestClient, db: Database) -> None:  # noqa: F811
    admin = bearer(db, "admin")
    client.put(
        "/api/v1/sites/lab/nodes/n2/position", json={"x": 0.25, "y": 1.0}, headers=admin
    )
    client.put(
        "/api/v1/sites/lab/nodes/n1/position", json={"x": 0.0, "y": 0.5}, headers=admin
    )
    client.put(
        "/api/v1/sites/lab/nodes/n1/position", json={"x": 0.75, "y": 0.5}, headers=admin
    )
    zone = client.put(
        "/api/v1/sites/lab/time-zone",
        json={"time_zone": "Europe/Prague"},
        headers=admin,
    )
    assert zone.status_code == 200
    site = client.get("/api/v1/sites/lab", headers=bearer(db, "viewer")).json()
    assert site["time_zone"] == "Europe/Prague"
    assert site["plan"] is None
    assert site["updated_by"] == "test-admin"
    assert site["positions"] == [
        {"node": "n1", "x": 0.75, "y": 0.5},
        {"node": "n2", "x": 0.25, "y": 1.0},
    ]
    removed = client.delete("/api/v1/sites/lab/nodes/n2/position", headers=admin)
    assert removed.status_code == 204
    again = client.delete("/api/v1/sites/lab/nodes/n2/position", headers=admin)
    assert again.status_code == 404
    assert "node lab/n2 has no position" in again.json()["detail"]


def test_unconfigured_site_is_empty(client: TestClient, db: Database) -> None:  # noqa: F811
    site = client.get("/api/v1/sites/nowhere", headers=bearer(db, "viewer")).json()
    assert site == {
        "site": "nowhere",
        "time_zone": None,
        "plan": None,
        "updated_at": None,
        "updated_by": None,
        "positions": [],
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"x": 1.5, "y": 0.5}, "x 1.5 is outside the plan"),
        ({"x": 0.5, "y": -0.1}, "y -0.1 is outside the plan"),
    ],
    ids=["x-right-of-plan", "y-above-plan"],
)
def test_position_outside_plan(
    client: TestClient,
    db: Database,  # noqa: F811
    body: dict[str, float],
    message: str,
) -> None:
    response = client.put(
        "/api/v1/sites/lab/nodes/n1/position", json=body, headers=bearer(db, "admin")
    )
    assert response.status_code == 400
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("UTC", "UTC"), ("utc", "UTC"), ("Australia/Sydney", "Australia/Sydney")],
    ids=["utc", "utc-lower", "sydney"],
)
def test_time_zone_accepted(name: str, expected: str) -> None:
    assert site_plan.check_time_zone(name) == expected


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "../etc/passwd", "CET+1"], ids=["unknown", "path", "posix"]
)
def test_time_zone_rejected(name: str) -> None:
    with pytest.raises(site_plan.SitePlanError, match="is unknown; use an IANA name"):
        site_plan.check_time_zone(name)
