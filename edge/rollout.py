"""Model roll-out on the node: download, verify, test-run, then hand over for the swap.

The gateway publishes an announcement on `sitlab/v1/{site}/{node}/model/set`
(format in docs/deployment.md). `ModelInstaller.install` walks the states
downloading -> verified, then test-runs the model on the node's recent
frames against the model it runs now with `models.evaluate.check_model_usable`.
It returns the config change that points the node at the new file. The
runtime restarts the pipeline with it and rolls back if that fails. Any
refusal raises `RolloutError`, whose message becomes the `failed` reason.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.config import ConfigError, NodeConfig, parse_config
from edge.messages import describe_json_error
from edge.remote import REQUEST_ID_PATTERN, ConfigChange, merge_patch, plan_change
from edge.types import Image

logger = logging.getLogger(__name__)

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
LOOPBACK_NAMES = frozenset({"localhost"})
CHUNK_BYTES = 1 << 20

Report = Callable[[str, str], None]


class RolloutError(RuntimeError):
    """A model that is not installed; the message is the `failed` reason."""


class ModelAnnouncement(BaseModel):
    """A model announcement: the model the gateway requests the node to run."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    request_id: str = Field(
        pattern=REQUEST_ID_PATTERN, description="Echoed in every model_state reply."
    )
    name: str = Field(
        pattern=MODEL_NAME_PATTERN, description="Model name, also the file's stem."
    )
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="http(s) URL on the gateway host, e.g. .../api/v1/models/NAME.",
    )
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="Expected sha256 of the file."
    )
    max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1,
        description="Largest download accepted; protects the node's disk.",
    )


def parse_announcement(payload: bytes) -> ModelAnnouncement:
    """Decode and validate a model announcement.

    Raises:
        RolloutError: the payload is not JSON or not a valid announcement.
    """
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as error:
        # ValueError covers bad UTF-8, bad syntax and integers beyond
        # Python's 4300-digit conversion limit.
        detail = describe_json_error(error)
        raise RolloutError(f"model announcement is not JSON: {detail}") from None
    try:
        return ModelAnnouncement.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '(top level)'}: {item['msg']}"
            for item in error.errors()
        )
        raise RolloutError(f"model announcement: {problems}") from None


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, allowed_hosts: Sequence[str]) -> str:
    """Return the URL's host when the node may download from it.

    Raises:
        RolloutError: the scheme is not http(s) or the host is neither
            loopback nor one of `allowed_hosts`.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RolloutError(
            f"model url {url!r} has scheme {parts.scheme!r}; use http or https"
        )
    host = parts.hostname or ""
    if not (_is_loopback(host) or host in allowed_hosts):
        allowed = ", ".join(sorted({*allowed_hosts, "loopback"}))
        raise RolloutError(
            f"model url host {host!r} is not allowed; models come from the gateway "
            f"({allowed}); add a host with --model-host to allow it"
        )
    return host


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect could lead off the gateway host; refuse it instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        del args, kwargs


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class ModelInstaller:
    """Downloads announced models into `models_dir` and checks them.

    Args:
        models_dir: where model files are kept; created when missing.
        allowed_hosts: hosts besides loopback that may serve models.
        timeout_s: socket timeout of the download.
    """

    def __init__(
        self,
        models_dir: Path,
        *,
        allowed_hosts: Sequence[str] = (),
        timeout_s: float = 30.0,
    ) -> None:
        self.models_dir = models_dir
        self.allowed_hosts = tuple(allowed_hosts)
        self.timeout_s = timeout_s

    def install(  # noqa: PLR0913 every argument is one input of the decision
        self,
        announcement: ModelAnnouncement,
        *,
        document: dict[str, Any],
        current: NodeConfig,
        base_dir: Path,
        frames: Sequence[Image],
        report: Report,
    ) -> ConfigChange:
        """Download, verify and test a model; return the change that swaps it in.

        Raises:
            RolloutError: a step rejected the model; the message names the step.
        """
        check_url(announcement.url, self.allowed_hosts)
        report("downloading", f"from {announcement.url}")
        path = self.download(announcement)
        report("verified", f"sha256 {announcement.sha256[:12]}... matches")
        self.test_run(path, current, frames)
        return self._change(announcement, path, document, current, base_dir)

    def download(self, announcement: ModelAnnouncement) -> Path:
        """Fetch the model, or reuse a kept file with the same sha256.

        Raises:
            RolloutError: HTTP or disk failure, too large, or a sha256 mismatch.
        """
        target = (
            self.models_dir / f"{announcement.name}-{announcement.sha256[:12]}.onnx"
        )
        if target.exists() and file_sha256(target) == announcement.sha256:
            logger.info("model %s already present at %s", announcement.name, target)
            return target
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RolloutError(
                f"cannot create {self.models_dir}: {error.strerror}"
            ) from None
        partial = target.with_suffix(".part")
        try:
            digest = self._fetch(announcement, partial)
            if digest != announcement.sha256:
                raise RolloutError(
                    f"sha256 mismatch for {announcement.url}: expected "
                    f"{announcement.sha256}, got {digest}; the file was deleted"
                )
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def _fetch(self, announcement: ModelAnnouncement, partial: Path) -> str:
        opener = urllib.request.build_opener(_NoRedirect)
        digest = hashlib.sha256()
        size = 0
        try:
            with (
                opener.open(announcement.url, timeout=self.timeout_s) as response,
                partial.open("wb") as handle,
            ):
                while chunk := response.read(CHUNK_BYTES):
                    size += len(chunk)
                    if size > announcement.max_bytes:
                        raise RolloutError(
                            f"model {announcement.name} is larger than max_bytes="
                            f"{announcement.max_bytes}; download stopped"
                        )
                    digest.update(chunk)
                    handle.write(chunk)
        except urllib.error.HTTPError as error:
            raise RolloutError(
                f"download of {announcement.url} failed: HTTP {error.code} "
                f"{error.reason}"
            ) from None
        except (urllib.error.URLError, OSError) as error:
            raise RolloutError(
                f"download of {announcement.url} failed: {error}"
            ) from None
        return digest.hexdigest()

    def test_run(
        self, path: Path, current: NodeConfig, frames: Sequence[Image]
    ) -> None:
        """Run the new and the current model on recent frames and compare.

        Raises:
            RolloutError: no frames yet, the model cannot load, or
                `check_model_usable` refuses it.
        """
        from models.evaluate import check_model_usable, load_detector  # noqa: PLC0415

        if not frames:
            raise RolloutError(
                "no recent frames to test the model on; the camera has not "
                "delivered frames yet, retry once the node is running"
            )
        threads = current.model.intra_op_threads
        try:
            candidate = load_detector(path, threads=threads)
            reference = load_detector(current.model.path, threads=threads)
        except Exception as error:  # noqa: BLE001 any load failure refuses the model
            raise RolloutError(f"model {path.name} does not load: {error}") from None
        verdict = check_model_usable(candidate, frames, reference)
        if not verdict.usable:
            raise RolloutError(f"test run refused the model: {verdict.reason}")
        logger.info("model %s passed its test run: %s", path.name, verdict.reason)

    @staticmethod
    def _change(
        announcement: ModelAnnouncement,
        path: Path,
        document: dict[str, Any],
        current: NodeConfig,
        base_dir: Path,
    ) -> ConfigChange:
        patch = {"model": {"path": str(path), "sha256": announcement.sha256}}
        new_document = merge_patch(document, patch)
        try:
            config = parse_config(new_document, "model roll-out", base_dir)
        except ConfigError as error:
            raise RolloutError(str(error)) from None
        plan = plan_change(current, config)
        return ConfigChange(announcement.request_id, new_document, config, plan)
