"""Colour contrast of the dispatcher page's text and state colours (WCAG 2.1)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = Path(__file__).resolve().parents[1] / "gateway" / "static" / "css" / "app.css"
AA_NORMAL_TEXT = 4.5


def css_colours() -> dict[str, str]:
    text = CSS.read_text(encoding="utf-8")
    return dict(re.findall(r"--([a-z0-9-]+):\s*(#[0-9a-fA-F]{6})\s*;", text))


def luminance(hex_colour: str) -> float:
    """Return the WCAG relative luminance of an sRGB colour."""
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [
        c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels
    ]
    red, green, blue = linear
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast(first: str, second: str) -> float:
    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


PAIRS = [
    ("text", "bg"),
    ("text", "panel"),
    ("muted", "bg"),
    ("muted", "panel"),
    ("link", "bg"),
    ("ok", "bg"),
    ("ok", "panel"),
    ("warn", "bg"),
    ("warn", "panel"),
    ("bad", "bg"),
    ("bad", "panel"),
    ("tamper", "bg"),
    ("tamper", "panel"),
    ("offline", "bg"),
    ("offline", "panel"),
    ("badge-text", "critical-bg"),
    ("badge-text", "high-bg"),
    ("badge-text", "medium-bg"),
    ("badge-text", "low-bg"),
    ("badge-text", "info-bg"),
]


@pytest.mark.parametrize(
    ("foreground", "background"), PAIRS, ids=[f"{f}-on-{b}" for f, b in PAIRS]
)
def test_colour_pair_meets_aa(foreground: str, background: str) -> None:
    colours = css_colours()
    ratio = contrast(colours[foreground], colours[background])
    assert ratio >= AA_NORMAL_TEXT, f"{foreground} on {background} is {ratio:.2f}:1"


def test_state_colours_distinct() -> None:
    colours = css_colours()
    states = [colours[name] for name in ("ok", "warn", "bad", "tamper", "offline")]
    assert len(set(states)) == len(states)


def test_contrast_formula_reference() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
