"""The registry of known models, read from the packaged `registry.toml`."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

FORMATS = ("yolov8", "yolov5", "yolox", "end2end")
CLASS_NAME_SOURCES = ("metadata:names", "coco80")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class RegistryError(ValueError):
    """The registry file is invalid or a model name is unknown."""


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One known model.

    Attributes:
        name: registry key, as passed to `sitlab-models pull`.
        file: name of the installed file.
        format: output layout, one of `FORMATS`.
        input_size: side of the square input in pixels.
        classes: number of classes.
        class_names: where class names come from, one of `CLASS_NAME_SOURCES`.
        sha256: lowercase hex digest, or "" when not known.
        licence: SPDX identifier of the weights' licence.
        url: publisher's download address, or "" when there is none.
        recipe: command line that produces the file.
    """

    name: str
    file: str
    format: str
    input_size: int
    classes: int
    class_names: str
    sha256: str
    licence: str
    url: str
    recipe: str


def _field(name: str, table: dict[str, Any], key: str, kind: type) -> Any:  # noqa: ANN401
    if key not in table:
        raise RegistryError(f"model {name!r} has no {key!r} field")
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RegistryError(
            f"model {name!r} field {key!r} must be {kind.__name__}, got {value!r}"
        )
    return value


def _entry(name: str, table: dict[str, Any]) -> ModelEntry:
    entry = ModelEntry(
        name=name,
        file=_field(name, table, "file", str),
        format=_field(name, table, "format", str),
        input_size=_field(name, table, "input_size", int),
        classes=_field(name, table, "classes", int),
        class_names=_field(name, table, "class_names", str),
        sha256=_field(name, table, "sha256", str).lower(),
        licence=_field(name, table, "licence", str),
        url=_field(name, table, "url", str),
        recipe=_field(name, table, "recipe", str),
    )
    if entry.format not in FORMATS:
        raise RegistryError(
            f"model {name!r} format {entry.format!r} is not one of {', '.join(FORMATS)}"
        )
    if entry.class_names not in CLASS_NAME_SOURCES:
        raise RegistryError(
            f"model {name!r} class_names {entry.class_names!r} is not one of "
            f"{', '.join(CLASS_NAME_SOURCES)}"
        )
    if entry.sha256 and not _SHA256.match(entry.sha256):
        raise RegistryError(
            f"model {name!r} sha256 {entry.sha256!r} is not 64 hex digits"
        )
    if Path(entry.file).name != entry.file:
        raise RegistryError(f"model {name!r} file {entry.file!r} must be a bare name")
    return entry


def parse_registry(text: str) -> dict[str, ModelEntry]:
    """Parse registry TOML text into entries by name.

    Raises:
        RegistryError: the TOML is invalid or an entry misses or mistypes a
            field.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RegistryError(f"registry is not valid TOML: {error}") from error
    tables = document.get("models")
    if not isinstance(tables, dict) or not tables:
        raise RegistryError("registry has no [models.NAME] tables")
    return {name: _entry(name, table) for name, table in tables.items()}


def load_registry(path: Path | None = None) -> dict[str, ModelEntry]:
    """Load the packaged registry, or the TOML file at `path`."""
    if path is not None:
        return parse_registry(path.read_text(encoding="utf-8"))
    text = resources.files("models").joinpath("registry.toml").read_text("utf-8")
    return parse_registry(text)


def lookup(name: str, registry: dict[str, ModelEntry] | None = None) -> ModelEntry:
    """Return the entry called `name`.

    Raises:
        RegistryError: no entry has that name; the message lists the names.
    """
    entries = load_registry() if registry is None else registry
    if name not in entries:
        raise RegistryError(
            f"unknown model {name!r}; known models: {', '.join(sorted(entries))}"
        )
    return entries[name]
