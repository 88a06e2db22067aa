"""HTTP API: nodes, counts, incidents, dead letters, SSE stream, login and tokens."""
# No `from __future__ import annotations`: FastAPI reads the dependencies in
# the annotations of the nested endpoint functions at definition time.

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import (
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
)
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    StreamingResponse,
)
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from gateway import (
    aggregate,
    audit,
    auth,
    fleet,
    incidents,
    line_speeds,
    nodes,
    stream,
    web,
)
from gateway.config import GatewayConfig
from gateway.ingest import INT64_MAX, JPEG_MAGIC
from gateway.store import Database
from gateway.timeutil import ms_iso, now_ms, to_ms

logger = logging.getLogger(__name__)

SESSION_COOKIE = "sitlab_session"
_bearer = HTTPBearer(auto_error=False)


# Text that the store keeps: no NUL, which PostgreSQL cannot store, and no
# other control characters except tab and line breaks in notes.
_NOTE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
_NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class StepRequest(BaseModel):
    """Body of an acknowledge or resolve request."""

    note: str | None = Field(
        None,
        max_length=2000,
        pattern=_NOTE_PATTERN,
        description="Free text for the timeline.",
    )


class LoginRequest(BaseModel):
    """Body of POST /api/v1/login."""

    username: str = Field(min_length=1, max_length=128, pattern=_NAME_PATTERN)
    password: str = Field(min_length=1, max_length=1024)


class TokenRequest(BaseModel):
    """Body of POST /api/v1/tokens."""

    role: str = Field(description="viewer, dispatcher or admin.")
    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=_NAME_PATTERN,
        description="What the token is for.",
    )


def _parse_time(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(
            400,
            f"{name} {value!r} is not an ISO 8601 time; use e.g. 2024-04-07T00:00:00Z",
        ) from None
    if moment.tzinfo is None:
        raise HTTPException(400, f"{name} {value!r} has no UTC offset; add Z or +HH:MM")
    return to_ms(moment)


def _event_id(name: str, value: str | None) -> int | None:
    """Parse a stream position; ids are 64-bit database keys."""
    if value is None:
        return None
    try:
        event_id = int(value)
    except ValueError:
        event_id = -1
    if not 0 <= event_id <= INT64_MAX:
        raise HTTPException(
            400,
            f"{name} {value[:40]!r} is not an event id; use an integer from 0 to "
            f"{INT64_MAX}",
        )
    return event_id


async def _invalid_request(request: Request, error: Exception) -> JSONResponse:
    """Return a 422 naming where and why a request is invalid, without its input.

    FastAPI's own response echoes the input, which fails to encode a lone
    UTF-16 surrogate (a 500) and returns megabytes of an oversized field.
    """
    problems = error.errors() if isinstance(error, RequestValidationError) else []
    detail = [
        {"loc": list(problem["loc"]), "msg": problem["msg"], "type": problem["type"]}
        for problem in problems
    ]
    return JSONResponse(status_code=422, content={"detail": detail})


def create_app(  # noqa: C901, PLR0915
    db: Database,
    config: GatewayConfig,
    status: Callable[[], dict[str, Any]] | None = None,
) -> FastAPI:
    """Build the FastAPI application on an open, migrated database.

    Args:
        db: the store.
        config: the gateway configuration.
        status: returns ingest figures (broker connection, writer queue) for
            /healthz; None when the API runs without an ingest side.
    """
    # The schema and its browser view describe every route, so they need a
    # viewer token like the routes themselves; ReDoc is not served.
    app = FastAPI(
        title="SITLab gateway",
        version="1",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.add_exception_handler(RequestValidationError, _invalid_request)

    def principal(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> auth.Principal:
        token = (
            credentials.credentials
            if credentials
            else request.cookies.get(SESSION_COOKIE)
        )
        if not token:
            raise HTTPException(
                401,
                "authentication required; send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        found = auth.authenticate(db, token)
        if found is None:
            raise HTTPException(
                401,
                "invalid, expired or revoked token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return found

    def require(role: str) -> Any:  # noqa: ANN401
        def check(
            caller: Annotated[auth.Principal, Depends(principal)],
        ) -> auth.Principal:
            if not caller.allows(role):
                raise HTTPException(
                    403, f"role {caller.role} may not do this; it needs {role} or above"
                )
            return caller

        return Depends(check)

    viewer = require("viewer")
    dispatcher = require("dispatcher")
    admin = require("admin")

    @app.get("/openapi.json", dependencies=[viewer], include_in_schema=False)
    def get_openapi() -> dict[str, Any]:
        """Return the OpenAPI schema (viewer or above)."""
        return app.openapi()

    @app.get("/docs", dependencies=[viewer], include_in_schema=False)
    def get_docs() -> HTMLResponse:
        """Return the Swagger UI page (viewer or above, e.g. the session cookie)."""
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    @app.get("/healthz", responses={503: {"description": "Broker not connected."}})
    def healthz(response: Response) -> dict[str, Any]:
        """Check the database and the broker connection; needs no token.

        Status "degraded" with HTTP 503 while the broker is not connected, so
        a load balancer or a service check sees that nothing is ingested.
        """
        db.query("SELECT 1")
        figures = status() if status else {}
        if figures.get("mqtt_connected", True):
            return {"status": "ok", **figures}
        response.status_code = 503
        return {"status": "degraded", **figures}

    @app.get("/api/v1/nodes", dependencies=[viewer])
    def get_nodes(site: str | None = None) -> list[dict[str, Any]]:
        """List nodes with state, health figures and open sequence gaps."""
        return nodes.list_nodes(db, site)

    @app.get("/api/v1/gaps", dependencies=[viewer])
    def get_gaps(
        site: str | None = None, node: str | None = None, include_closed: bool = False
    ) -> list[dict[str, Any]]:
        """List sequence gaps (missing counts or incident messages) per node."""
        return nodes.list_gaps(db, site, node, include_closed)

    def count_query(
        *,
        bucket: str = "1h",
        tz: str = "UTC",
        site: str | None = None,
        node: str | None = None,
        line: str | None = None,
        zone: str | None = None,
        class_name: Annotated[str | None, Query(alias="class")] = None,
        direction: str = "both",
        from_: Annotated[str | None, Query(alias="from")] = None,
        to: str | None = None,
        kind: str = "all",
    ) -> aggregate.CountQuery:
        query = aggregate.CountQuery(
            bucket=bucket,
            tz=tz,
            site=site,
            node=node,
            line=line,
            zone=zone,
            class_name=class_name,
            direction=direction,
            from_ms=_parse_time("from", from_),
            to_ms=_parse_time("to", to),
            kind=kind,
        )
        try:
            query.check()
        except aggregate.QueryError as error:
            raise HTTPException(400, str(error)) from None
        return query

    @app.get("/api/v1/counts", dependencies=[viewer], response_model=None)
    def get_counts(
        query: Annotated[aggregate.CountQuery, Depends(count_query)],
        format: str = "json",  # noqa: A002
    ) -> dict[str, Any] | PlainTextResponse:
        """Return line and zone counts per bucket; `format=csv` returns CSV."""
        if format == "csv":
            return counts_csv(query)
        if format != "json":
            raise HTTPException(400, f"format {format!r} is invalid; use json or csv")
        return aggregate.run_query(db, query)

    @app.get("/api/v1/counts.csv", dependencies=[viewer])
    def counts_csv(
        query: Annotated[aggregate.CountQuery, Depends(count_query)],
    ) -> PlainTextResponse:
        """Return counts as CSV: line rows, or zone rows with kind=zones."""
        if query.kind == "zones":
            text = aggregate.to_csv(
                aggregate.zone_buckets(db, query), aggregate.ZONE_COLUMNS
            )
        else:
            rows = aggregate.line_buckets(db, query)
            text = aggregate.to_csv(
                [line_speeds.csv_fields(row) for row in rows], aggregate.LINE_COLUMNS
            )
        return PlainTextResponse(text, media_type="text/csv")

    @app.get("/api/v1/incidents", dependencies=[viewer])
    def get_incidents(
        *,
        site: str | None = None,
        node: str | None = None,
        type: str | None = None,  # noqa: A002
        state: str | None = None,
        active: bool | None = None,
        from_: Annotated[str | None, Query(alias="from")] = None,
        to: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    ) -> list[dict[str, Any]]:
        """List incidents, newest first, filtered by node, type, state and start."""
        if state is not None and state not in incidents.STATES:
            raise HTTPException(
                400,
                f"state {state!r} is invalid; use one of {', '.join(incidents.STATES)}",
            )
        where = incidents.IncidentFilter(
            site=site,
            node=node,
            type=type,
            state=state,
            active=active,
            from_ms=_parse_time("from", from_),
            to_ms=_parse_time("to", to),
            limit=limit,
            offset=offset,
        )
        return incidents.list_incidents(db, where)

    @app.get("/api/v1/incidents/{incident_id}", dependencies=[viewer])
    def get_incident(incident_id: str) -> dict[str, Any]:
        """Return one incident with its timeline."""
        try:
            return incidents.get(db, incident_id)
        except incidents.IncidentNotFoundError as error:
            raise HTTPException(404, str(error)) from None

    @app.get(
        "/api/v1/incidents/{incident_id}/evidence",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    def get_evidence(
        incident_id: str, caller: Annotated[auth.Principal, viewer]
    ) -> Response:
        """Return the newest anonymised evidence JPEG of an incident.

        Every successful view is written to the audit log with the caller.
        """
        found = incidents.evidence(db, incident_id)
        if found is None:
            raise HTTPException(
                404,
                (
                    f"incident {incident_id!r} has no stored evidence (none sent, or "
                    f"expired)"
                ),
            )
        audit.record(
            db,
            audit.AuditEntry(
                now_ms(),
                caller.name,
                caller.role,
                "evidence.view",
                incident_id=incident_id,
            ),
        )
        if not found[0].startswith(JPEG_MAGIC):
            # Rows stored before ingest checked the JPEG header may hold other
            # bytes, which a browser must not receive under an image type.
            raise HTTPException(
                422, f"stored evidence of incident {incident_id!r} is not a JPEG"
            )
        return Response(
            content=found[0],
            media_type=found[1],
            headers={
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'",
            },
        )

    def step(
        incident_id: str, caller: auth.Principal, body: StepRequest, target: str
    ) -> dict[str, Any]:
        action = incidents.acknowledge if target == "ack" else incidents.resolve
        try:
            result = action(db, incident_id, caller.name, body.note)
        except incidents.IncidentNotFoundError as error:
            raise HTTPException(404, str(error)) from None
        except incidents.WorkflowError as error:
            raise HTTPException(409, str(error)) from None
        audit.record(
            db,
            audit.AuditEntry(
                now_ms(),
                caller.name,
                caller.role,
                "incident.ack" if target == "ack" else "incident.resolve",
                incident_id=incident_id,
            ),
        )
        return result

    @app.post("/api/v1/incidents/{incident_id}/ack")
    def ack_incident(
        incident_id: str,
        caller: Annotated[auth.Principal, dispatcher],
        body: StepRequest | None = None,
    ) -> dict[str, Any]:
        """Acknowledge an open incident (dispatcher or admin)."""
        return step(incident_id, caller, body or StepRequest(note=None), "ack")

    @app.post("/api/v1/incidents/{incident_id}/resolve")
    def resolve_incident(
        incident_id: str,
        caller: Annotated[auth.Principal, dispatcher],
        body: StepRequest | None = None,
    ) -> dict[str, Any]:
        """Resolve an incident (dispatcher or admin)."""
        return step(incident_id, caller, body or StepRequest(note=None), "resolve")

    @app.get("/api/v1/dead-letters", dependencies=[viewer])
    def get_dead_letters(
        reason: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    ) -> dict[str, Any]:
        """List rejected messages, newest first, and the counters per reason."""
        where, params = ("WHERE reason = ?", [reason]) if reason else ("", [])
        rows = db.query(
            "SELECT id, received_ms, topic, reason, detail, payload_size, payload "
            f"FROM dead_letters {where} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        counters = db.query("SELECT name, value FROM counters ORDER BY name")
        return {
            "counters": {str(name): int(value) for name, value in counters},
            "items": [
                {
                    "id": row[0],
                    "received_at": ms_iso(row[1]),
                    "topic": row[2],
                    "reason": row[3],
                    "detail": row[4],
                    "payload_size": row[5],
                    "payload": bytes(row[6]).decode("utf-8", "replace"),
                }
                for row in rows
            ],
        }

    @app.get("/api/v1/stream", dependencies=[viewer])
    def get_stream(
        request: Request,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
        after: Annotated[
            str | None, Query(description=f"Event id from 0 to {INT64_MAX}.")
        ] = None,
    ) -> StreamingResponse:
        """Stream incident and node events as SSE; resumes after Last-Event-ID."""
        start = _event_id("after", after)
        if last_event_id is not None:
            start = _event_id("Last-Event-ID", last_event_id)
        if start is None:
            start = stream.latest_event_id(db)
        frames = stream.event_stream(
            db, start, config.api.stream_poll_s, request.is_disconnected
        )
        return StreamingResponse(
            frames,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/api/v1/login")
    def post_login(body: LoginRequest, response: Response) -> dict[str, Any]:
        """Exchange a user name and password for a session token (also a cookie)."""
        ttl_s = config.api.session_ttl_h * 3600
        # NOTE: failed logins are logged but not rate-limited; scrypt makes
        # each guess cost about 50 ms of CPU. Put a limit in front of this
        # route before the API is reachable from outside the control room.
        found = auth.login(db, body.username, body.password, ttl_s)
        if found is None:
            logger.warning("failed login for user %r", body.username)
            raise HTTPException(401, "invalid user name or password")
        token, role = found
        response.set_cookie(
            SESSION_COOKIE, token, max_age=int(ttl_s), httponly=True, samesite="strict"
        )
        return {"token": token, "role": role, "expires_in_s": int(ttl_s)}

    @app.get("/api/v1/tokens", dependencies=[admin])
    def get_tokens() -> list[dict[str, Any]]:
        """List tokens (metadata only; tokens are stored as hashes)."""
        return [
            {
                "id": row["id"],
                "name": row["name"],
                "role": row["role"],
                "created_at": ms_iso(row["created_ms"]),
                "expires_at": ms_iso(row["expires_ms"]),
                "revoked_at": ms_iso(row["revoked_ms"]),
            }
            for row in auth.list_tokens(db)
        ]

    @app.post("/api/v1/tokens", dependencies=[admin], status_code=201)
    def post_token(body: TokenRequest) -> dict[str, Any]:
        """Create a token; the response is the only time it is shown."""
        try:
            token = auth.create_token(db, body.role, body.name)
        except auth.AuthError as error:
            raise HTTPException(400, str(error)) from None
        return {"token": token, "role": body.role, "name": body.name}

    @app.delete("/api/v1/tokens/{token_id}", dependencies=[admin], status_code=204)
    def delete_token(
        token_id: Annotated[int, Path(ge=1, le=INT64_MAX)],
    ) -> Response:
        """Revoke a token."""
        if not auth.revoke_token(db, token_id):
            raise HTTPException(404, f"no active token with id {token_id}")
        return Response(status_code=204)

    web.mount_web(app, db)
    app.include_router(fleet.router(db, config, require, status))
    return app
