"""The base of every node config section: strict about keys and numbers."""

from __future__ import annotations

from typing import get_args

from pydantic import BaseModel, ConfigDict, model_validator


class StrictSection(BaseModel):
    """A config section that rejects unknown keys, NaN, infinity and `true` as 1.

    YAML reads `true` as a boolean, and pydantic would take it as the number
    1, so a numeric setting given as `true` or `false` is an error here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _reject_booleans_as_numbers(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            value = data.get(name)
            if isinstance(value, bool) and _is_number(field.annotation):
                raise ValueError(
                    f"{name} is {str(value).lower()}, invalid for a number; "
                    "give a number"
                )
            if _holds_bool(value) and not _mentions_bool(field.annotation):
                raise ValueError(
                    f"{name} contains true or false, invalid for a number; give numbers"
                )
        return data


def _is_number(annotation: object) -> bool:
    """Return whether a field's type is int or float, optionally with None."""
    options = get_args(annotation) or (annotation,)
    return bool not in options and any(option in (int, float) for option in options)


def _mentions_bool(annotation: object) -> bool:
    """Return whether bool appears anywhere in a field's type."""
    if annotation is bool:
        return True
    return any(_mentions_bool(argument) for argument in get_args(annotation))


def _holds_bool(value: object) -> bool:
    """Return whether a list value contains a boolean at any depth."""
    if isinstance(value, (list, tuple)):
        return any(isinstance(item, bool) or _holds_bool(item) for item in value)
    return False
