"""Errors of the detector boundary.

Loading or running a model raises `DetectorError` subclasses. Errors raised
by ONNX Runtime are translated into this family where the detector calls it,
so callers catch one family.
"""

from __future__ import annotations


class DetectorError(Exception):
    """Base class of every error raised by `edge.detector`."""


class ModelNotFoundError(DetectorError, FileNotFoundError):
    """The model path does not exist or is not a file."""


class ChecksumMismatchError(DetectorError):
    """The model file's sha256 differs from the expected digest."""


class CorruptModelError(DetectorError):
    """ONNX Runtime could not parse or initialise the model file."""


class UnsupportedFormatError(DetectorError):
    """The model's input or output layout is not one the detector decodes."""


class ProviderNotAvailableError(DetectorError):
    """A requested ONNX Runtime execution provider is not installed."""


class DetectorConfigError(DetectorError, ValueError):
    """A detector setting is invalid (threshold, class name, thread count)."""


class InferenceError(DetectorError):
    """ONNX Runtime failed while running the model on an input."""


class InvalidImageError(DetectorError, ValueError):
    """An input image is not a non-empty uint8 BGR, BGRA or grayscale array."""
