"""HTTP API through FastAPI's test client on both backends: auth, counts, incidents."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from edge.messages import topic_for
from gateway.api import create_app
from gateway.auth import AuthError, create_token, set_user
from gateway.config import parse_config
from gateway.ingest import classify
from gateway.pipeline import apply_batch
from gateway.store import Database
from gateway.timeutil import now_ms
from tests.support import gateway_fixtures
from tests.support.gateway_fixtures import counts_message, incident_message, wire

# Fixtures shared by the gateway tests, on SQLite and PostgreSQL.
db = gateway_fixtures.db
db_url = gateway_fixtures.db_url
postgres_database = gateway_fixtures.postgres_database


def ingest(db: Database, *messages: dict) -> None:
    apply_batch(
        db,
        [
            classify(*wire(m), max_bytes=10**6, keep_bytes=256, now_ms=now_ms())
            for m in messages
        ],
    )


@pytest.fixture
def client(db: Database) -> TestClient:
    return TestClient(create_app(db, parse_config({})))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(db: Database) -> dict[str, str]:
    return {
        role: create_token(db, role, f"test-{role}")
        for role in ("viewer", "dispatcher", "admin")
    }


PROTECTED = [
    ("GET", "/api/v1/nodes"),
    ("GET", "/api/v1/counts"),
    ("GET", "/api/v1/counts.csv"),
    ("GET", "/api/v1/incidents"),
    ("GET", "/api/v1/incidents/x"),
    ("POST", "/api/v1/incidents/x/ack"),
    ("POST", "/api/v1/incidents/x/resolve"),
    ("GET", "/api/v1/dead-letters"),
    ("GET", "/api/v1/stream"),
    ("GET", "/api/v1/gaps"),
    ("GET", "/api/v1/tokens"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[p for _, p in PROTECTED])
def test_anonymous_gets_401(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_healthz_is_anonymous(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_openapi_published(client: TestClient, tokens: dict[str, str]) -> None:
    paths = client.get("/openapi.json", headers=bearer(tokens["viewer"])).json()[
        "paths"
    ]
    assert "/api/v1/counts" in paths
    assert "/api/v1/incidents/{incident_id}/ack" in paths


def test_invalid_token_401(client: TestClient) -> None:
    response = client.get("/api/v1/nodes", headers=bearer("sgw_wrong"))
    assert response.status_code == 401
    assert "invalid, expired or revoked" in response.json()["detail"]


def test_viewer_cannot_ack(
    client: TestClient, db: Database, tokens: dict[str, str]
) -> None:
    incident_id = str(uuid.uuid4())
    ingest(db, incident_message(incident_id, "start"))
    response = client.post(
        f"/api/v1/incidents/{incident_id}/ack", headers=bearer(tokens["viewer"])
    )
    assert response.status_code == 403
    assert "needs dispatcher" in response.json()["detail"]


def test_dispatcher_acks_and_resolves(
    client: TestClient, db: Database, tokens: dict[str, str]
) -> None:
    incident_id = str(uuid.uuid4())
    ingest(db, incident_message(incident_id, "start"))
    headers = bearer(tokens["dispatcher"])
    acked = client.post(
        f"/api/v1/incidents/{incident_id}/ack", json={"note": "seen"}, headers=headers
    )
    assert acked.status_code == 200
    assert acked.json()["acknowledged"]["by"] == "test-dispatcher"
    again = client.post(f"/api/v1/incidents/{incident_id}/ack", headers=headers)
    assert again.status_code == 409
    resolved = client.post(f"/api/v1/incidents/{incident_id}/resolve", headers=headers)
    assert resolved.json()["state"] == "resolved"
    missing = client.post("/api/v1/incidents/none/resolve", headers=headers)
    assert missing.status_code == 404


def test_database_stores_no_token(db: Database, tokens: dict[str, str]) -> None:
    stored = db.query("SELECT token_sha256 FROM tokens")
    text = " ".join(str(row[0]) for row in stored)
    for token in tokens.values():
        assert token not in text
        assert token[4:] not in text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/login", b'{"username": "a\\ud800", "password": "x"}'),
        ("/api/v1/incidents/x/ack", b'{"note": "a\\ud800b"}'),
        ("/api/v1/incidents/x/ack", b'{"note": "a\\u0000b"}'),
        ("/api/v1/tokens", b'{"role": "viewer", "name": "a\\u0000b"}'),
    ],
    ids=["surrogate-login", "surrogate-note", "nul-note", "nul-token-name"],
)
def test_bad_text_in_body_is_422(
    client: TestClient, tokens: dict[str, str], path: str, body: bytes
) -> None:
    headers = bearer(tokens["admin"]) | {"Content-Type": "application/json"}
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 422
    assert "input" not in response.text


@pytest.mark.parametrize("name", ["", "x" * 129], ids=["empty", "too-long"])
def test_token_name_length_checked(db: Database, name: str) -> None:
    with pytest.raises(AuthError, match="token name of .* is invalid"):
        create_token(db, "viewer", name)


def test_admin_manages_tokens(client: TestClient, tokens: dict[str, str]) -> None:
    assert (
        client.get("/api/v1/tokens", headers=bearer(tokens["dispatcher"])).status_code
        == 403
    )
    created = client.post(
        "/api/v1/tokens",
        json={"role": "viewer", "name": "wall"},
        headers=bearer(tokens["admin"]),
    )
    assert created.status_code == 201
    new_token = created.json()["token"]
    assert client.get("/api/v1/nodes", headers=bearer(new_token)).status_code == 200
    listed = client.get("/api/v1/tokens", headers=bearer(tokens["admin"])).json()
    token_id = next(item["id"] for item in listed if item["name"] == "wall")
    client.delete(f"/api/v1/tokens/{token_id}", headers=bearer(tokens["admin"]))
    assert client.get("/api/v1/nodes", headers=bearer(new_token)).status_code == 401


def test_counts_totals_and_csv(
    client: TestClient, db: Database, tokens: dict[str, str]
) -> None:
    base = datetime(2024, 3, 1, 8, tzinfo=UTC)
    ingest(
        db,
        counts_message(seq=1, start=base, lines=[("gate", "person", 3, 1)]),
        counts_message(
            seq=2, start=base + timedelta(minutes=1), lines=[("gate", "person", 2, 2)]
        ),
        counts_message(seq=3, start=base, node="n2", lines=[("door", "person", 7, 0)]),
    )

    headers = bearer(tokens["viewer"])
    params = {"bucket": "1h", "node": "n1", "from": "2024-03-01T00:00:00Z"}
    body = client.get("/api/v1/counts", params=params, headers=headers).json()
    assert body["lines"] == [
        {
            "bucket_start": "2024-03-01T08:00:00+00:00",
            "site": "s1",
            "node": "n1",
            "line": "gate",
            "class": "person",
            "in": 5,
            "out": 3,
        }
    ]

    csv_text = client.get(
        "/api/v1/counts.csv", params={"bucket": "1d"}, headers=headers
    ).text
    assert csv_text.splitlines() == [
        "bucket_start,site,node,line,class,in,out," + SPEED_HEADER,
        "2024-03-01T00:00:00+00:00,s1,n1,gate,person,5,3" + "," * 8,
        "2024-03-01T00:00:00+00:00,s1,n2,door,person,7,0" + "," * 8,
    ]
    same = client.get(
        "/api/v1/counts", params={"bucket": "1d", "format": "csv"}, headers=headers
    )
    assert same.text == csv_text

    only_in = client.get(
        "/api/v1/counts", params={"direction": "in", "node": "n2"}, headers=headers
    )
    assert "out" not in only_in.json()["lines"][0]


SPEED_HEADER = (
    "speed_in_n,speed_in_mean_kmh,speed_in_p85_kmh,speed_in_max_kmh,"
    "speed_out_n,speed_out_mean_kmh,speed_out_p85_kmh,speed_out_max_kmh"
)


def test_counts_speeds_json_and_csv(
    client: TestClient, db: Database, tokens: dict[str, str]
) -> None:
    base = datetime(2024, 3, 1, 8, tzinfo=UTC)
    first = counts_message(seq=1, start=base, lines=[("gate", "car", 2, 1)])
    first["lines"][0]["speed_in"] = {
        "n": 2,
        "mean_kmh": 40.0,
        "p85_kmh": 44.0,
        "max_kmh": 45.5,
    }
    first["lines"][0]["speed_out"] = {
        "n": 1,
        "mean_kmh": 28.0,
        "p85_kmh": 28.0,
        "max_kmh": 28.0,
    }
    second = counts_message(
        seq=2, start=base + timedelta(minutes=1), lines=[("gate", "car", 1, 0)]
    )
    second["lines"][0]["speed_in"] = {
        "n": 1,
        "mean_kmh": 52.0,
        "p85_kmh": 52.0,
        "max_kmh": 52.0,
    }
    ingest(db, first, second)
    headers = bearer(tokens["viewer"])

    body = client.get("/api/v1/counts", params={"bucket": "1h"}, headers=headers).json()
    assert body["lines"] == [
        {
            "bucket_start": "2024-03-01T08:00:00+00:00",
            "site": "s1",
            "node": "n1",
            "line": "gate",
            "class": "car",
            "in": 3,
            "out": 1,
            "speed_in": {"n": 3, "mean_kmh": 44.0, "max_kmh": 52.0},
            "speed_out": {"n": 1, "mean_kmh": 28.0, "p85_kmh": 28.0, "max_kmh": 28.0},
        }
    ]

    csv_text = client.get(
        "/api/v1/counts.csv", params={"bucket": "1m"}, headers=headers
    ).text
    assert csv_text.splitlines() == [
        "bucket_start,site,node,line,class,in,out," + SPEED_HEADER,
        "2024-03-01T08:00:00+00:00,s1,n1,gate,car,2,1,2,40.0,44.0,45.5,1,28.0,28.0,28.0",
        "2024-03-01T08:01:00+00:00,s1,n1,gate,car,1,0,1,52.0,52.0,52.0,,,,",
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"bucket": "5m"}, "bucket '5m' is invalid"),
        ({"tz": "Nowhere/Land"}, "unknown time zone"),
        ({"from": "yesterday"}, "is not an ISO 8601 time"),
        ({"from": "2024-01-01T00:00:00"}, "has no UTC offset"),
        ({"format": "xml"}, "format 'xml' is invalid"),
    ],
    ids=["bucket", "tz", "from_text", "naive_from", "format"],
)
def test_counts_bad_params(
    client: TestClient, tokens: dict[str, str], params: dict, message: str
) -> None:
    response = client.get(
        "/api/v1/counts", params=params, headers=bearer(tokens["viewer"])
    )
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_dead_letters_listed(
    client: TestClient, db: Database, tokens: dict[str, str]
) -> None:
    item = classify(
        topic_for("s1", "n1", "counts"),
        b"{oops",
        max_bytes=100,
        keep_bytes=10,
        now_ms=now_ms(),
    )
    apply_batch(db, [item])
    body = client.get("/api/v1/dead-letters", headers=bearer(tokens["viewer"])).json()
    assert body["counters"]["dead_letter.invalid_json"] == 1
    assert body["items"][0]["reason"] == "invalid_json"
    assert body["items"][0]["payload"] == "{oops"


def test_incident_list_and_timeline(
    client: TestClient, db: Database, tokens: dict[str, str]
) -> None:
    incident_id = str(uuid.uuid4())
    ingest(
        db,
        incident_message(incident_id, "start", seq=1),
        incident_message(incident_id, "end", seq=2),
    )
    headers = bearer(tokens["viewer"])
    listed = client.get(
        "/api/v1/incidents",
        params={"state": "open", "active": "false"},
        headers=headers,
    )
    assert [item["incident_id"] for item in listed.json()] == [incident_id]
    detail = client.get(f"/api/v1/incidents/{incident_id}", headers=headers).json()
    assert [step["action"] for step in detail["timeline"]] == ["start", "end"]
    bad = client.get("/api/v1/incidents", params={"state": "closed"}, headers=headers)
    assert bad.status_code == 400


def test_login_returns_token_and_cookie(client: TestClient, db: Database) -> None:
    set_user(db, "dana", "correct horse", "dispatcher")
    wrong = client.post("/api/v1/login", json={"username": "dana", "password": "nope"})
    assert wrong.status_code == 401
    response = client.post(
        "/api/v1/login", json={"username": "dana", "password": "correct horse"}
    )
    assert response.status_code == 200
    assert response.json()["role"] == "dispatcher"
    assert client.get("/api/v1/nodes").status_code == 200  # the session cookie
    stored = db.query("SELECT password_hash FROM users")[0][0]
    assert stored.startswith("scrypt$")
    assert "correct horse" not in stored


def test_nodes_show_gaps(
    client: TestClient, db: Database, tokens: dict[str, str]
) -> None:
    ingest(db, counts_message(seq=1), counts_message(seq=4))
    node = client.get("/api/v1/nodes", headers=bearer(tokens["viewer"])).json()[0]
    assert node["missing_messages"] == 2
    assert node["seq_gaps"][0]["first_seq"] == 2


@pytest.mark.parametrize(
    ("data", "status"),
    [(b"\xff\xd8\xff\xe0fake-jpeg", 200), (b"<script>alert(1)</script>", 404)],
    ids=["jpeg", "script"],
)
def test_evidence_served(
    client: TestClient, db: Database, tokens: dict[str, str], data: bytes, status: int
) -> None:
    incident_id = str(uuid.uuid4())
    message = incident_message(incident_id, "start")
    jpeg = data
    message["evidence"] = {
        "content_type": "image/jpeg",
        "data_base64": base64.b64encode(jpeg).decode(),
        "anonymised": True,
    }
    ingest(db, message)
    headers = bearer(tokens["viewer"])
    response = client.get(f"/api/v1/incidents/{incident_id}/evidence", headers=headers)
    assert response.status_code == status
    if status != 200:
        return
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == jpeg
    missing = client.get("/api/v1/incidents/other/evidence", headers=headers)
    assert missing.status_code == 404
