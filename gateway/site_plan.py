"""Site plans: one uploaded plan image per site, node positions on it, the time zone.

The dispatcher page draws nodes on the plan image, so the gateway works with
no map tiles and no internet. Positions are fractions of the image's width
and height (0..1), so they stay put when the image is shown at another size
or replaced by a rescan of the same drawing.

The image is kept as base64 text because both SQLite and PostgreSQL store
TEXT the same way, which keeps the SQL identical for the two backends.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.store import Database
from gateway.timeutil import ms_iso, now_ms

logger = logging.getLogger(__name__)

# Every page load fetches the image, so it is capped at 5 MB. A simple
# line-drawn floor plan of 4000 x 3000 px is usually well below that as PNG
# (an estimate, not measured here).
MAX_IMAGE_BYTES = 5_000_000
# SVG is left out on purpose: an SVG opened as a page runs its scripts.
IMAGE_SIGNATURES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/webp": (b"RIFF",),
}

# NOTE: these tables are created with IF NOT EXISTS instead of a numbered
# migration, because gateway/migrations belongs to the store. Move them into
# the next migration of both backends.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS site_settings ("
    "site TEXT PRIMARY KEY, time_zone TEXT, plan_content_type TEXT, "
    "plan_base64 TEXT, plan_bytes BIGINT, updated_ms BIGINT NOT NULL, "
    "updated_by TEXT)",
    "CREATE TABLE IF NOT EXISTS node_positions ("
    "site TEXT NOT NULL, node TEXT NOT NULL, x DOUBLE PRECISION NOT NULL, "
    "y DOUBLE PRECISION NOT NULL, updated_ms BIGINT NOT NULL, updated_by TEXT, "
    "PRIMARY KEY (site, node))",
)


class SitePlanError(ValueError):
    """An invalid plan image, position or time zone."""


class PlanNotFoundError(LookupError):
    """The site has no uploaded plan image."""


@dataclass(frozen=True, slots=True)
class PlanImage:
    """A stored plan image."""

    content_type: str
    data: bytes


def ensure_schema(db: Database) -> None:
    """Create the site plan tables if they do not exist yet."""
    with db.transaction() as tx:
        for statement in _SCHEMA:
            tx.execute(statement)


def check_image(content_type: str, data: bytes) -> str:
    """Return the normalised content type of a plan image upload.

    Raises:
        SitePlanError: when the type is not PNG, JPEG or WebP, the bytes do
            not start with that format's signature, or the image is too big.
    """
    kind = content_type.split(";", maxsplit=1)[0].strip().lower()
    if kind not in IMAGE_SIGNATURES:
        allowed = ", ".join(IMAGE_SIGNATURES)
        raise SitePlanError(
            f"plan content type {content_type!r} is not supported; use one of {allowed}"
        )
    if not data:
        raise SitePlanError("plan image is empty; upload a PNG, JPEG or WebP file")
    if len(data) > MAX_IMAGE_BYTES:
        raise SitePlanError(
            f"plan image is {len(data)} bytes, above the limit of {MAX_IMAGE_BYTES}; "
            "downscale it and upload again"
        )
    if not data.startswith(IMAGE_SIGNATURES[kind]):
        raise SitePlanError(
            f"plan image bytes do not look like {kind}; check the file and its type"
        )
    if kind == "image/webp" and data[8:12] != b"WEBP":
        raise SitePlanError("plan image bytes do not look like image/webp")
    return kind


def check_time_zone(name: str) -> str:
    """Return `name` if it is an IANA time zone; raise SitePlanError otherwise."""
    if name.upper() == "UTC":
        return "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SitePlanError(
            f"time zone {name!r} is unknown; use an IANA name such as "
            "Europe/Prague or UTC"
        ) from None
    return name


def _ensure_site(db: Database, site: str, actor: str) -> None:
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO site_settings (site, updated_ms, updated_by) VALUES (?, ?, ?) "
            "ON CONFLICT (site) DO NOTHING",
            (site, now_ms(), actor),
        )


def save_plan(
    db: Database, site: str, content_type: str, data: bytes, actor: str
) -> dict[str, Any]:
    """Store or replace the site's plan image; node positions are kept.

    Raises:
        SitePlanError: when the image is invalid (see `check_image`).
    """
    kind = check_image(content_type, data)
    _ensure_site(db, site, actor)
    with db.transaction() as tx:
        tx.execute(
            "UPDATE site_settings SET plan_content_type = ?, plan_base64 = ?, "
            "plan_bytes = ?, updated_ms = ?, updated_by = ? WHERE site = ?",
            (
                kind,
                base64.b64encode(data).decode("ascii"),
                len(data),
                now_ms(),
                actor,
                site,
            ),
        )
    logger.info(
        "site %s plan replaced by %s (%d bytes, %s)", site, actor, len(data), kind
    )
    return get_site(db, site)


def load_plan(db: Database, site: str) -> PlanImage:
    """Return the site's plan image.

    Raises:
        PlanNotFoundError: when no plan was uploaded for the site.
    """
    rows = db.query(
        "SELECT plan_content_type, plan_base64 FROM site_settings WHERE site = ?",
        (site,),
    )
    if not rows or rows[0][1] is None:
        raise PlanNotFoundError(
            f"site {site!r} has no plan image; an admin can upload one on the Nodes tab"
        )
    return PlanImage(content_type=str(rows[0][0]), data=base64.b64decode(rows[0][1]))


def set_time_zone(
    db: Database, site: str, time_zone: str, actor: str
) -> dict[str, Any]:
    """Set the IANA time zone in which the page shows the site's times and buckets.

    Raises:
        SitePlanError: when the time zone is unknown.
    """
    name = check_time_zone(time_zone)
    _ensure_site(db, site, actor)
    with db.transaction() as tx:
        tx.execute(
            "UPDATE site_settings SET time_zone = ?, updated_ms = ?, updated_by = ? "
            "WHERE site = ?",
            (name, now_ms(), actor, site),
        )
    logger.info("site %s time zone set to %s by %s", site, name, actor)
    return get_site(db, site)


def set_position(
    db: Database, site: str, node: str, x: float, y: float, *, actor: str
) -> dict[str, Any]:
    """Place a node on the site plan at fractions `x`, `y` of the image size.

    Raises:
        SitePlanError: when a coordinate is outside 0..1.
    """
    for name, value in (("x", x), ("y", y)):
        if not 0.0 <= value <= 1.0:
            raise SitePlanError(
                f"{name} {value} is outside the plan; use a fraction of the image "
                "size from 0 to 1"
            )
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO node_positions (site, node, x, y, updated_ms, updated_by) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site, node) DO UPDATE SET "
            "x = excluded.x, y = excluded.y, updated_ms = excluded.updated_ms, "
            "updated_by = excluded.updated_by",
            (site, node, x, y, now_ms(), actor),
        )
    logger.info("node %s/%s placed at %.3f, %.3f by %s", site, node, x, y, actor)
    return get_site(db, site)


def remove_position(db: Database, site: str, node: str) -> bool:
    """Take a node off the site plan; return False when it had no position."""
    with db.transaction() as tx:
        rows = tx.execute(
            "DELETE FROM node_positions WHERE site = ? AND node = ? RETURNING node",
            (site, node),
        )
    return bool(rows)


def get_site(db: Database, site: str) -> dict[str, Any]:
    """Return a site's time zone, plan metadata and node positions.

    A site that was never configured returns time zone None, no plan and no
    positions, so the page can offer the admin to set them up.
    """
    rows = db.query(
        "SELECT time_zone, plan_content_type, plan_bytes, updated_ms, updated_by "
        "FROM site_settings WHERE site = ?",
        (site,),
    )
    time_zone, content_type, size, updated_ms, updated_by = (
        rows[0] if rows else (None, None, None, None, None)
    )
    positions = db.query(
        "SELECT node, x, y FROM node_positions WHERE site = ? ORDER BY node", (site,)
    )
    return {
        "site": site,
        "time_zone": time_zone,
        "plan": {"content_type": content_type, "bytes": size} if content_type else None,
        "updated_at": ms_iso(updated_ms),
        "updated_by": updated_by,
        "positions": [
            {"node": str(node), "x": float(x), "y": float(y)}
            for node, x, y in positions
        ],
    }
