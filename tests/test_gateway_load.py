"""SQLite under load: a million count rows, concurrent writers and API readers."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn

from gateway import line_speeds
from gateway.api import create_app
from gateway.auth import create_token
from gateway.config import parse_config
from gateway.counts import LINE_INSERT
from gateway.ingest import classify
from gateway.pipeline import apply_batch
from gateway.store import open_database
from gateway.timeutil import now_ms, to_ms
from tests.support.broker import free_port, wait_for_port
from tests.support.gateway_fixtures import counts_message, wire

PREFILL_ROWS = 1_000_000
WORKERS = 4
ROWS_PER_WORKER = 2_500
BATCH = 50
READERS = 2
READ_SECONDS = 60.0
START = datetime(2024, 1, 1, tzinfo=UTC)


def prefill(url: str) -> None:
    db = open_database(url)
    db.migrate()
    no_speeds = (None,) * len(line_speeds.COLUMNS)
    rows = (
        (
            "prefill",
            "s1",
            f"n{i % 8}",
            "gate",
            "person",
            ms,
            ms + 30_000,
            i % 3,
            i % 2,
            *no_speeds,
        )
        for i, ms in ((i, to_ms(START) + i * 30_000) for i in range(PREFILL_ROWS))
    )
    with db.transaction() as tx:
        tx.executemany(LINE_INSERT, list(rows))
    db.close()


def ingest_worker(url: str, worker: int, errors: list[str]) -> None:
    db = open_database(url)
    try:
        for batch in range(ROWS_PER_WORKER // BATCH):
            items = []
            for index in range(BATCH):
                seq = batch * BATCH + index + 1
                start = START + timedelta(days=400, seconds=seq * 60)
                message = counts_message(node=f"w{worker}", seq=seq, start=start)
                items.append(
                    classify(
                        *wire(message), max_bytes=10**6, keep_bytes=64, now_ms=now_ms()
                    )
                )
            apply_batch(db, items)
            time.sleep(READ_SECONDS / (ROWS_PER_WORKER / BATCH) * 0.8)
    except Exception as error:  # noqa: BLE001 - the test reports every failure
        errors.append(f"worker {worker}: {error!r}")
    finally:
        db.close()


def api_reader(
    base_url: str, token: str, deadline: float, results: list[tuple[int, str]]
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    day = 0
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        while time.monotonic() < deadline:
            first = START + timedelta(days=day % 300)
            params = {
                "bucket": ("1h", "15m", "1d")[day % 3],
                "tz": "Europe/Prague",
                "from": first.isoformat(),
                "to": (first + timedelta(days=7)).isoformat(),
                "kind": "lines",
            }
            try:
                response = client.get("/api/v1/counts", params=params)
                results.append((response.status_code, response.text[:200]))
            except httpx.HTTPError as error:
                results.append((0, repr(error)))
            day += 1


@pytest.mark.slow
def test_sqlite_concurrent_ingest_and_queries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    url = f"sqlite:///{tmp_path / 'load.db'}"
    started = time.monotonic()
    prefill(url)
    print(f"prefilled {PREFILL_ROWS} rows in {time.monotonic() - started:.1f} s")
    db = open_database(url)
    token = create_token(db, "viewer", "load")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(db, parse_config({})),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    server_thread = threading.Thread(target=server.run, daemon=True)
    server_thread.start()
    wait_for_port(port)

    errors: list[str] = []
    results: list[tuple[int, str]] = []
    deadline = time.monotonic() + READ_SECONDS
    threads = [
        threading.Thread(target=ingest_worker, args=(url, worker, errors))
        for worker in range(WORKERS)
    ] + [
        threading.Thread(
            target=api_reader,
            args=(f"http://127.0.0.1:{port}", token, deadline, results),
        )
        for _ in range(READERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    server.should_exit = True
    server_thread.join(10)

    added = int(
        db.query("SELECT COUNT(*) FROM count_lines WHERE message_id <> 'prefill'")[0][0]
    )
    total = int(db.query("SELECT COUNT(*) FROM count_lines")[0][0])
    db.close()
    failed = [result for result in results if result[0] != 200]
    print(
        f"{len(results)} API calls in {READ_SECONDS:.0f} s, {len(failed)} failed; "
        f"{added} rows added"
    )
    assert errors == []
    assert added == WORKERS * ROWS_PER_WORKER
    assert total == PREFILL_ROWS + WORKERS * ROWS_PER_WORKER
    assert len(results) > 0
    assert failed == []
    assert "database is locked" not in caplog.text
    assert all("locked" not in text for _, text in results)
