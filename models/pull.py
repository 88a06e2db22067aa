"""Install a registry model from its publisher, a mirror or a local folder.

Every path writes to a temporary file beside the destination, checks the
sha256, and only then renames it into place, so the final name never holds a
partial or unverified file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from models.registry import ModelEntry

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 30.0


class PullError(RuntimeError):
    """A model could not be downloaded, copied or verified."""


class ChecksumError(PullError):
    """The received file's sha256 differs from the registry's."""


def sha256_file(path: Path) -> str:
    """Return the lowercase hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_digest(entry: ModelEntry, sha256: str | None) -> str:
    expected = (sha256 or entry.sha256).lower()
    if not expected:
        raise PullError(
            f"registry has no sha256 for {entry.name!r}; pass --sha256 with the "
            "digest from a trusted copy so the download can be verified"
        )
    return expected


def _install(
    entry: ModelEntry,
    dest: Path,
    expected: str,
    write: Callable[[BinaryIO], None],
) -> Path:
    """Write through `write` into a temp file, verify it and rename it."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / entry.file
    handle, temp_name = tempfile.mkstemp(prefix=f".{entry.file}.", dir=dest)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        actual = sha256_file(temp)
        if actual != expected:
            raise ChecksumError(
                f"{entry.file}: sha256 is {actual}, expected {expected}; the file "
                "is corrupt or not the registered model, so it was not installed"
            )
        temp.replace(target)
    finally:
        temp.unlink(missing_ok=True)
    logger.info("installed %s (%s) into %s", entry.name, expected[:12], target)
    return target


def download(
    entry: ModelEntry,
    dest: Path,
    *,
    mirror: str | None = None,
    sha256: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Download a model from its publisher's URL, or from `mirror`/FILE.

    Args:
        entry: registry entry to install.
        dest: model folder; created if missing.
        mirror: base URL of a mirror holding the file under its registry name.
        sha256: digest to use when the registry has none.
        timeout_s: timeout of the connection and of each read, in seconds.

    Raises:
        PullError: there is no URL, the server fails or times out.
        ChecksumError: the downloaded bytes do not match the digest.
    """
    expected = _expected_digest(entry, sha256)
    if mirror:
        url = urllib.parse.urljoin(mirror.rstrip("/") + "/", entry.file)
    else:
        url = entry.url
    if not url:
        raise PullError(
            f"model {entry.name!r} has no download URL; produce it with "
            f"`{entry.recipe}` or install it with --from DIR"
        )
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise PullError(f"URL {url!r} must use http or https")

    def write(stream: BinaryIO) -> None:
        logger.info("downloading %s from %s", entry.file, url)
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
                shutil.copyfileobj(response, stream, CHUNK_BYTES)
        except urllib.error.HTTPError as error:
            raise PullError(f"download of {url} failed: HTTP {error.code}") from error
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise PullError(f"download of {url} failed: {error}") from error

    return _install(entry, dest, expected, write)


def copy_local(
    entry: ModelEntry, source_dir: Path, dest: Path, *, sha256: str | None = None
) -> Path:
    """Install a model from a local folder, for sites without internet.

    Raises:
        PullError: the folder has no file of the registry's name.
        ChecksumError: the file does not match the digest.
    """
    expected = _expected_digest(entry, sha256)
    source = source_dir / entry.file
    if not source.is_file():
        raise PullError(
            f"{source} not found; copy {entry.file} into {source_dir} first"
        )

    def write(stream: BinaryIO) -> None:
        with source.open("rb") as origin:
            shutil.copyfileobj(origin, stream, CHUNK_BYTES)

    return _install(entry, dest, expected, write)
