"""Dispatcher web page: static files, the page route, sessions and site plans.

`mount_web(app, db)` adds everything to the FastAPI app that `gateway.api`
builds. The page is plain HTML, CSS and ES modules under `gateway/static`,
with no build step and no request to any other host.

JavaScript on the page never sees a token. A password login (POST
/api/v1/login) or a token login (POST /api/v1/session) sets the HttpOnly
session cookie. Both fetch() and EventSource send that cookie, which
matters because EventSource cannot send an Authorization header.
"""
# No `from __future__ import annotations`: FastAPI reads the dependencies in
# the annotations of the nested endpoint functions at definition time.

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from gateway import auth, site_plan
from gateway.store import Database

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Same name as gateway.api.SESSION_COOKIE. It is repeated here because
# gateway.api may import this module, and an import cycle would fail.
SESSION_COOKIE = "sitlab_session"
# The page loads only its own files, so inline scripts and other hosts are
# blocked. data: and blob: images are allowed for local previews.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
_bearer = HTTPBearer(auto_error=False)


class TokenLogin(BaseModel):
    """Body of POST /api/v1/session: an API token to turn into a session cookie."""

    token: str = Field(min_length=1, max_length=256)


class PositionRequest(BaseModel):
    """Body of PUT /api/v1/sites/{site}/nodes/{node}/position."""

    x: float = Field(description="Fraction of the plan image width, 0 = left edge.")
    y: float = Field(description="Fraction of the plan image height, 0 = top edge.")


class TimeZoneRequest(BaseModel):
    """Body of PUT /api/v1/sites/{site}/time-zone."""

    time_zone: str = Field(min_length=1, max_length=64, description="IANA name.")


def _token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    token = (
        credentials.credentials if credentials else request.cookies.get(SESSION_COOKIE)
    )
    if not token:
        raise HTTPException(
            401,
            "authentication required; log in or send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token


def _principal_dependency(db: Database) -> Any:  # noqa: ANN401
    def principal(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> auth.Principal:
        found = auth.authenticate(db, _token(request, credentials))
        if found is None:
            raise HTTPException(
                401,
                "invalid, expired or revoked token; log in again",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return found

    return principal


def _require(principal: Any, role: str) -> Any:  # noqa: ANN401
    def check(who: Annotated[auth.Principal, Depends(principal)]) -> auth.Principal:
        if not who.allows(role):
            raise HTTPException(
                403, f"role {who.role} may not do this; it needs {role} or above"
            )
        return who

    return Depends(check)


def _who(principal: auth.Principal) -> dict[str, Any]:
    return {"name": principal.name, "role": principal.role}


def session_router(db: Database) -> APIRouter:
    """Build the routes that open, show and close a page session."""
    router = APIRouter()
    viewer = _require(_principal_dependency(db), "viewer")

    @router.get("/api/v1/session")
    def get_session(who: Annotated[auth.Principal, viewer]) -> dict[str, Any]:
        """Return the name and role behind the session cookie or bearer token."""
        return _who(who)

    @router.post("/api/v1/session")
    def post_session(body: TokenLogin, response: Response) -> dict[str, Any]:
        """Check an API token and set it as the session cookie."""
        found = auth.authenticate(db, body.token)
        if found is None:
            logger.warning("failed token login")
            raise HTTPException(401, "invalid, expired or revoked token")
        response.set_cookie(
            SESSION_COOKIE, body.token, httponly=True, samesite="strict"
        )
        return _who(found)

    @router.delete("/api/v1/session", status_code=204)
    def delete_session(request: Request) -> Response:
        """Clear the session cookie and revoke it when it came from a password login."""
        token = request.cookies.get(SESSION_COOKIE)
        found = auth.authenticate(db, token) if token else None
        # A token created by a password login exists only for this session.
        # An API token may be shared with scripts, so logging out keeps it.
        if found is not None and found.name.startswith("login:"):
            auth.revoke_token(db, found.token_id)
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")
        return response

    return router


def site_router(db: Database) -> APIRouter:
    """Build the site plan, node position and time zone routes."""
    router = APIRouter()
    principal = _principal_dependency(db)
    viewer = _require(principal, "viewer")
    admin = _require(principal, "admin")

    @router.get("/api/v1/sites/{site}", dependencies=[viewer])
    def get_site(site: str) -> dict[str, Any]:
        """Return the site's time zone, plan metadata and node positions."""
        return site_plan.get_site(db, site)

    @router.get("/api/v1/sites/{site}/plan", dependencies=[viewer])
    def get_plan(site: str) -> Response:
        """Return the site's plan image."""
        try:
            image = site_plan.load_plan(db, site)
        except site_plan.PlanNotFoundError as error:
            raise HTTPException(404, str(error)) from None
        return Response(
            image.data,
            media_type=image.content_type,
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    @router.put("/api/v1/sites/{site}/plan")
    async def put_plan(
        site: str, request: Request, who: Annotated[auth.Principal, admin]
    ) -> dict[str, Any]:
        """Upload or replace the plan image, sent as the raw PNG, JPEG or WebP body."""
        data = await request.body()
        content_type = request.headers.get("content-type", "")
        try:
            return site_plan.save_plan(db, site, content_type, data, who.name)
        except site_plan.SitePlanError as error:
            raise HTTPException(400, str(error)) from None

    @router.put("/api/v1/sites/{site}/time-zone")
    def put_time_zone(
        site: str, body: TimeZoneRequest, who: Annotated[auth.Principal, admin]
    ) -> dict[str, Any]:
        """Set the IANA time zone for the site's times and local-day buckets."""
        try:
            return site_plan.set_time_zone(db, site, body.time_zone, who.name)
        except site_plan.SitePlanError as error:
            raise HTTPException(400, str(error)) from None

    @router.put("/api/v1/sites/{site}/nodes/{node}/position")
    def put_position(
        site: str,
        node: str,
        body: PositionRequest,
        who: Annotated[auth.Principal, admin],
    ) -> dict[str, Any]:
        """Place a node on the plan at fractions of the image width and height."""
        try:
            return site_plan.set_position(
                db, site, node, body.x, body.y, actor=who.name
            )
        except site_plan.SitePlanError as error:
            raise HTTPException(400, str(error)) from None

    @router.delete(
        "/api/v1/sites/{site}/nodes/{node}/position",
        dependencies=[admin],
        status_code=204,
    )
    def delete_position(site: str, node: str) -> Response:
        """Take a node off the plan."""
        if not site_plan.remove_position(db, site, node):
            raise HTTPException(404, f"node {site}/{node} has no position on the plan")
        return Response(status_code=204)

    return router


def _page() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def mount_web(app: FastAPI, db: Database) -> None:
    """Add the dispatcher page at `/`, its files at `/static` and its API routes.

    A second call on the same app does nothing, so the app factory and a
    test harness may both call it.
    """
    if getattr(app.state, "dispatcher_page", False):
        return
    app.state.dispatcher_page = True
    site_plan.ensure_schema(db)
    app.include_router(session_router(db))
    app.include_router(site_router(db))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/", _page, methods=["GET"], include_in_schema=False)
    logger.info("dispatcher page mounted at / from %s", STATIC_DIR)
