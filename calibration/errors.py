"""The exception family of `sitlab-calibrate`."""

from __future__ import annotations


class CalibrationError(Exception):
    """A calibration step that failed; the message names the input and the fix."""
