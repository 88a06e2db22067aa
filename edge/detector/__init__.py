"""ONNX YOLO object detection for the edge node."""

from edge.detector.errors import (
    ChecksumMismatchError,
    CorruptModelError,
    DetectorConfigError,
    DetectorError,
    InferenceError,
    InvalidImageError,
    ModelNotFoundError,
    ProviderNotAvailableError,
    UnsupportedFormatError,
)
from edge.detector.formats import OutputFormat
from edge.detector.letterbox import LetterboxBuffer, LetterboxTransform, plan_letterbox
from edge.detector.onnx_detector import Detector, ModelInfo
from edge.detector.session import QuantisationKind

__all__ = [
    "ChecksumMismatchError",
    "CorruptModelError",
    "Detector",
    "DetectorConfigError",
    "DetectorError",
    "InferenceError",
    "InvalidImageError",
    "LetterboxBuffer",
    "LetterboxTransform",
    "ModelInfo",
    "ModelNotFoundError",
    "OutputFormat",
    "ProviderNotAvailableError",
    "QuantisationKind",
    "UnsupportedFormatError",
    "plan_letterbox",
]
