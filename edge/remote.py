"""Remote configuration requests: their format, the merge patch and the change plan.

The gateway publishes a request on `sitlab/v1/{site}/{node}/config/set`
(format in docs/deployment.md). The node validates the resulting config with
`parse_config`. Each changed section then falls into one of three groups.
Live sections are swapped at the next frame. Restart sections restart the
pipeline inside the same process. Refused sections could cut the node off
the gateway or rename it, so they change only in the file on the node.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from edge.config import ID_PATTERN, ConfigError, NodeConfig, parse_config
from edge.messages import describe_json_error

# Sections `Pipeline.apply_live` swaps without a restart.
LIVE_SECTIONS = frozenset({"lines", "zones", "masks", "config_version"})
# Sections a remote request may not change: a wrong broker address or
# outbox path would cut the node off the gateway that could repair it.
REFUSED_SECTIONS = frozenset({"site", "node", "mqtt", "outbox"})
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class RemoteConfigError(ValueError):
    """A config request that cannot be applied; the message is sent as the reason."""


class ConfigRequest(BaseModel):
    """A config request from the gateway: a whole config or a JSON merge patch."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    request_id: str = Field(
        pattern=REQUEST_ID_PATTERN,
        description="Echoed in the node's config_state reply.",
    )
    config: dict[str, Any] | None = Field(
        default=None,
        description="A whole node config that replaces the current one.",
    )
    patch: dict[str, Any] | None = Field(
        default=None,
        description="A JSON merge patch (RFC 7396) applied to the current config.",
    )
    site: str | None = Field(
        default=None, pattern=ID_PATTERN, description="Must match the node's site."
    )
    node: str | None = Field(
        default=None, pattern=ID_PATTERN, description="Must match the node's id."
    )

    @model_validator(mode="after")
    def _one_body(self) -> ConfigRequest:
        if (self.config is None) == (self.patch is None):
            raise ValueError(
                "give exactly one of 'config' (a whole config) and 'patch' "
                "(a JSON merge patch)"
            )
        return self


def parse_request(payload: bytes) -> ConfigRequest:
    """Decode and validate a config request.

    Raises:
        RemoteConfigError: the payload is not JSON or not a valid request.
    """
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as error:
        # ValueError covers bad UTF-8, bad syntax and integers beyond
        # Python's 4300-digit conversion limit.
        detail = describe_json_error(error)
        raise RemoteConfigError(f"config request is not JSON: {detail}") from None
    try:
        return ConfigRequest.model_validate(data)
    except ValidationError as error:
        raise RemoteConfigError(_describe(error, "config request")) from None


def _describe(error: ValidationError, what: str) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{what}: {where}: {message}")
    return "; ".join(parts)


def merge_patch(target: Any, patch: Any) -> Any:  # noqa: ANN401
    """Apply an RFC 7396 JSON merge patch; `null` deletes a key, lists replace."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass(frozen=True, slots=True)
class ChangePlan:
    """Top-level config sections that differ, grouped by how they apply."""

    live: tuple[str, ...]
    restart: tuple[str, ...]
    refused: tuple[str, ...]

    @property
    def empty(self) -> bool:
        """True when nothing changes."""
        return not (self.live or self.restart or self.refused)

    @property
    def needs_restart(self) -> bool:
        """True when the pipeline must restart for the change."""
        return bool(self.restart)


def plan_change(old: NodeConfig, new: NodeConfig) -> ChangePlan:
    """Compare two configs section by section."""
    changed = [
        name
        for name in NodeConfig.model_fields
        if getattr(old, name) != getattr(new, name)
    ]
    return ChangePlan(
        live=tuple(name for name in changed if name in LIVE_SECTIONS),
        restart=tuple(
            name
            for name in changed
            if name not in LIVE_SECTIONS and name not in REFUSED_SECTIONS
        ),
        refused=tuple(name for name in changed if name in REFUSED_SECTIONS),
    )


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """A validated request: the new raw document, its config and its plan."""

    request_id: str
    document: dict[str, Any]
    config: NodeConfig
    plan: ChangePlan


def prepare_change(
    request: ConfigRequest,
    current_document: dict[str, Any],
    current: NodeConfig,
    base_dir: Path,
) -> ConfigChange:
    """Build and check the config a request describes, without applying it.

    Args:
        request: the parsed request.
        current_document: the node's config as plain data, paths as written.
        current: the node's running config.
        base_dir: directory that relative paths are resolved against.

    Raises:
        RemoteConfigError: the request is for another node, the new config
            is invalid (the reason lists every problem), it changes a refused
            section, or it changes nothing.
    """
    for field, mine in (("site", current.site), ("node", current.node)):
        asked = getattr(request, field)
        if asked is not None and asked != mine:
            raise RemoteConfigError(
                f"request {request.request_id} is for {field} {asked!r}, "
                f"but this node's {field} is {mine!r}"
            )
    if request.patch is not None:
        document = merge_patch(current_document, request.patch)
    else:
        document = copy.deepcopy(request.config or {})
    try:
        config = parse_config(document, f"request {request.request_id}", base_dir)
    except ConfigError as error:
        raise RemoteConfigError(str(error)) from None
    plan = plan_change(current, config)
    if plan.refused:
        raise RemoteConfigError(
            f"request {request.request_id} changes {', '.join(plan.refused)}, "
            "which a remote request may not change; a wrong broker or outbox "
            "setting would cut the node off. Edit the config file on the node"
        )
    if plan.empty:
        raise RemoteConfigError(
            f"request {request.request_id} changes nothing; the node already "
            f"runs config version {current.config_version!r}"
        )
    return ConfigChange(request.request_id, document, config, plan)


def plain(document: Any) -> Any:  # noqa: ANN401
    """Return YAML data (ruamel's commented maps) as plain dicts and lists."""
    if isinstance(document, dict):
        return {str(key): plain(value) for key, value in document.items()}
    if isinstance(document, list):
        return [plain(value) for value in document]
    # ruamel wraps scalars in subclasses (ScalarFloat, ScalarInt, ...) that a
    # safe dumper cannot write back; unwrap them to the builtin types.
    for builtin in (bool, int, float, str):
        if isinstance(document, builtin):
            return builtin(document)
    return document


def save_document(path: Path, document: dict[str, Any]) -> None:
    """Write a config atomically and keep the previous file as `NAME.bak`.

    The new text goes to a temporary file in the same directory, is flushed
    to disk and renamed over the config, so a power cut leaves either the old
    or the new file, never half of one.

    The new values are written into the old file's YAML tree, so comments
    stay with the keys they belong to. Only removed keys and the items of
    replaced lists lose their comments.

    Raises:
        RemoteConfigError: the directory is not writable.
    """
    text = io.StringIO()
    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    yaml.dump(_with_old_comments(path, document), text)
    temporary = path.with_name(f".{path.name}.new")
    try:
        if path.exists():
            shutil.copy2(path, path.with_name(path.name + ".bak"))
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(text.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise RemoteConfigError(
            f"cannot save the config to {path}: {error.strerror}; make its "
            "directory writable by the node's user (ReadWritePaths in the unit)"
        ) from None


def _with_old_comments(path: Path, document: dict[str, Any]) -> Any:  # noqa: ANN401
    """Return `document` written into the YAML tree of the file at `path`.

    Falls back to the plain document when the old file cannot be read as a
    YAML mapping.
    """
    try:
        tree = YAML(typ="rt").load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, YAMLError):
        return document
    if not isinstance(tree, CommentedMap):
        return document
    _update_in_place(tree, document)
    return tree


def _update_in_place(tree: CommentedMap, new: dict[str, Any]) -> None:
    """Make `tree` equal to `new`, keeping the nodes (and comments) of kept keys."""
    for key in [key for key in tree if key not in new]:
        del tree[key]
    for key, value in new.items():
        old = tree.get(key)
        if isinstance(old, CommentedMap) and isinstance(value, dict):
            _update_in_place(old, value)
        elif old != value or key not in tree:
            tree[key] = copy.deepcopy(value)
