"""Gateway test fixtures: a fresh store on SQLite or PostgreSQL, message builders."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from edge.messages import encode, envelope, topic_for, utc_iso
from gateway.store import Database, open_database

POSTGRES_ADMIN_URL = os.environ.get(
    "SITLAB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """Create `sitlab_test_<random>` for this test session and drop it afterwards."""
    name = f"sitlab_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True)
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL at SITLAB_TEST_POSTGRES_URL is not reachable: {error}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _postgres_schema_url(database_url: str) -> str:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    return f"{database_url}?options={quote(f'-c search_path={schema}')}"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty store: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.db'}"
    database_url = request.getfixturevalue("postgres_database")
    return _postgres_schema_url(database_url)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated, empty store."""
    database = open_database(db_url)
    database.migrate()
    yield database
    database.close()


def counts_message(
    *,
    site: str = "s1",
    node: str = "n1",
    seq: int = 1,
    start: datetime | None = None,
    seconds: int = 60,
    lines: list[tuple[str, str, int, int]] | None = None,
    zones: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return a valid counts message; lines are (line, class, in, out)."""
    start = start or datetime(2024, 1, 1, tzinfo=UTC)
    message = envelope("counts", site, node, seq)
    message.update(
        interval_start=utc_iso(start),
        interval_end=utc_iso(start + timedelta(seconds=seconds)),
        lines=[
            {"line": line, "class": name, "in": n_in, "out": n_out}
            for line, name, n_in, n_out in (lines or [("gate", "person", 1, 0)])
        ],
        zones=zones or [],
    )
    return message


def incident_message(
    incident_id: str,
    phase: str,
    *,
    site: str = "s1",
    node: str = "n1",
    seq: int = 1,
    incident_type: str = "intrusion",
    at: datetime | None = None,
) -> dict[str, Any]:
    """Return a valid incident message of one phase."""
    at = at or datetime.now(UTC)
    message = envelope("incident", site, node, seq, sent_at=at)
    message.update(
        incident_id=incident_id,
        phase=phase,
        type=incident_type,
        rule="fence",
        severity="high",
        zone="yard",
        started_at=utc_iso(at),
    )
    if phase == "end":
        message["ended_at"] = utc_iso(at)
    return message


def status_message(
    state: str, site: str = "s1", node: str = "n1", seq: int = 0
) -> dict[str, Any]:
    """Return a valid status message."""
    message = envelope("status", site, node, seq)
    message.update(
        state=state, reason="started" if state == "online" else "connection_lost"
    )
    message["software_version"] = "0.1.0"
    return message


def heartbeat_message(
    site: str = "s1", node: str = "n1", seq: int = 0
) -> dict[str, Any]:
    """Return a valid heartbeat message."""
    message = envelope("heartbeat", site, node, seq)
    message.update(uptime_s=10.0, fps=9.5, inference_ms=41.0, outbox={"depth": 3})
    return message


def wire(message: dict[str, Any]) -> tuple[str, bytes]:
    """Return the topic and payload a node would publish for `message`."""
    return topic_for(message["site"], message["node"], message["kind"]), encode(message)
