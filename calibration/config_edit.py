"""Safe edits of a node config file: round-trip, validate, back up, replace.

The file is read with ruamel.yaml's round-trip loader, so comments, key
order and quoting survive an edit. Before anything is written the edited
document is validated with `edge.config.parse_config`; an invalid result is
never written and the original stays byte-identical. A valid result goes to
a temporary file in the same folder, is flushed to disk, and replaces the
original with one `os.replace`, so a power cut leaves either the old or the
new file, never half of one. The previous version is kept as
`NAME.YYYYmmddTHHMMSSZ.bak` next to it.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from calibration.errors import CalibrationError
from edge.config import ConfigError, NodeConfig, not_utf8_message, parse_config

logger = logging.getLogger(__name__)

# Backups beyond this many per config file are deleted, oldest first.
MAX_BACKUPS = 10


class ConfigEditError(CalibrationError):
    """An edit that would make the node config invalid, or a file that failed."""


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    # Matches the examples in firmware-config: list items indented under
    # their key ("lines:\n  - name: ...").
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.preserve_quotes = True
    yaml.width = 100
    return yaml


def flow_points(points: Sequence[Sequence[float]]) -> CommentedSeq:
    """Return points as a one-line YAML list `[[x, y], [x, y], ...]`."""
    outer = CommentedSeq()
    for point in points:
        inner = CommentedSeq([_tidy(value) for value in point])
        inner.fa.set_flow_style()
        outer.append(inner)
    outer.fa.set_flow_style()
    return outer


def flow_list(values: Sequence[Any]) -> CommentedSeq:
    """Return a one-line YAML list of numbers or nested number lists."""
    sequence = CommentedSeq()
    for value in values:
        if isinstance(value, list | tuple):
            sequence.append(flow_list(value))
        else:
            sequence.append(_tidy(value))
    sequence.fa.set_flow_style()
    return sequence


def _tidy(value: Any) -> Any:  # noqa: ANN401
    """Write whole floats as ints, so pixel points read `[384, 0]`."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


@dataclass(slots=True)
class ConfigDocument:
    """Node config file loaded for editing.

    Attributes:
        path: the config file.
        data: the round-trip document; edit it in place, then `save`.
    """

    path: Path
    data: CommentedMap

    @classmethod
    def load(cls, path: Path) -> ConfigDocument:
        """Read a config file for editing.

        Raises:
            ConfigEditError: when the file is missing, unreadable, not YAML or
                not a mapping.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigEditError(
                f"cannot read config file {path}: {error.strerror}"
            ) from None
        except UnicodeDecodeError as error:
            raise ConfigEditError(not_utf8_message(path, error)) from None
        try:
            data = _yaml().load(text)
        except YAMLError as error:
            raise ConfigEditError(f"{path}: invalid YAML: {error}") from None
        if not isinstance(data, CommentedMap):
            raise ConfigEditError(
                f"{path}: expected a mapping of settings at the top level"
            )
        return cls(path=path, data=data)

    def section(self, key: str) -> CommentedMap:
        """Return the mapping under `key`, creating it when missing."""
        value = self.data.get(key)
        if not isinstance(value, CommentedMap):
            value = CommentedMap()
            self.data[key] = value
        return value

    def items(self, key: str) -> CommentedSeq:
        """Return the list under `key` ("lines", "zones", "masks"), creating it."""
        value = self.data.get(key)
        if not isinstance(value, CommentedSeq):
            value = CommentedSeq()
            self.data[key] = value
        return value

    def validate(self) -> NodeConfig:
        """Validate the edited document as the node would load it.

        Raises:
            ConfigEditError: listing every problem with its field, when the
                edited config is invalid.
        """
        text = self.dump()
        reparsed = _yaml().load(text)
        try:
            return parse_config(
                reparsed, f"{self.path} (edited)", base_dir=self.path.resolve().parent
            )
        except ConfigError as error:
            raise ConfigEditError(
                f"the edit was not saved because the result is invalid:\n{error}"
            ) from None

    def dump(self) -> str:
        """Return the document as YAML text."""
        stream = io.StringIO()
        _yaml().dump(self.data, stream)
        return stream.getvalue()

    def save(self) -> Path | None:
        """Validate, back up the current file and replace it atomically.

        Returns:
            The backup file, or None when there was no file to back up.

        Raises:
            ConfigEditError: when validation fails (nothing is written) or
                the folder is not writable.
        """
        self.validate()
        text = self.dump()
        backup = _backup(self.path) if self.path.exists() else None
        _write_atomic(self.path, text)
        logger.info("saved %s (backup %s)", self.path, backup)
        return backup


def _backup(path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = path.with_name(f"{path.name}.{stamp}.bak")
    counter = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}.{stamp}-{counter}.bak")
        counter += 1
    try:
        shutil.copy2(path, backup)
    except OSError as error:
        raise ConfigEditError(
            f"cannot back up {path} to {backup}: {error.strerror}; check that the "
            "folder is writable"
        ) from None
    _prune_backups(path)
    return backup


def _prune_backups(path: Path) -> None:
    backups = sorted(path.parent.glob(f"{path.name}.*.bak"))
    for old in backups[:-MAX_BACKUPS]:
        try:
            old.unlink()
        except OSError as error:
            logger.warning("cannot delete old backup %s: %s", old, error.strerror)


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, rename it over."""
    folder = path.resolve().parent
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    try:
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=folder
        )
    except OSError as error:
        raise ConfigEditError(
            f"cannot create a temporary file in {folder}: {error.strerror}"
        ) from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigEditError(f"cannot write {path}: {error.strerror}") from None
    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder entry is on disk.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError as error:
        logger.debug("fsync of folder %s failed: %s", folder, error.strerror)
    finally:
        os.close(descriptor)
