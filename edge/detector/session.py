"""Opening an ONNX Runtime session: file checks, providers, threads.

ONNX Runtime raises its own pybind11 exception types, which derive from
Exception and not from RuntimeError. They are translated here into
`DetectorError`s, so callers catch one family.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from edge.detector.errors import (
    ChecksumMismatchError,
    CorruptModelError,
    DetectorConfigError,
    ModelNotFoundError,
    ProviderNotAvailableError,
)

logger = logging.getLogger(__name__)

ORT_ERRORS: tuple[type[Exception], ...] = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.NoSuchFile,
    ort_state.NoModel,
    ort_state.InvalidProtobuf,
    ort_state.InvalidGraph,
    ort_state.RuntimeException,
    ort_state.EPFail,
    ort_state.NotImplemented,
    RuntimeError,
)

GRAPH_OPTIMIZATION_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK_BYTES = 1 << 20


class QuantisationKind(enum.StrEnum):
    """Numeric form of a model's weights and activations."""

    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC_INT8 = "dynamic_int8"
    STATIC_QDQ = "static_qdq"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """How ONNX Runtime runs the model.

    Attributes:
        providers: execution providers in priority order; each must be in
            `onnxruntime.get_available_providers()`.
        intra_op_threads: threads inside one operator; more cuts latency until
            the cores run out, 0 lets ONNX Runtime use every core.
        inter_op_threads: threads running independent operators in parallel;
            YOLO graphs are mostly sequential, so 1 is usually best.
        spin_wait: let idle pool threads spin instead of sleeping. Spinning
            lowers latency slightly but burns CPU that other cameras and the
            tracker need, so it is off by default.
        graph_optimization: one of `GRAPH_OPTIMIZATION_LEVELS`.
    """

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 2
    inter_op_threads: int = 1
    spin_wait: bool = False
    graph_optimization: str = "all"

    def __post_init__(self) -> None:
        if not self.providers:
            raise DetectorConfigError(
                "providers is empty; list at least one, e.g. ('CPUExecutionProvider',)"
            )
        for name, value in (
            ("intra_op_threads", self.intra_op_threads),
            ("inter_op_threads", self.inter_op_threads),
        ):
            if value < 0:
                raise DetectorConfigError(
                    f"{name} must be 0 (ONNX Runtime default) or more, got {value}"
                )
        if self.graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
            raise DetectorConfigError(
                f"graph_optimization {self.graph_optimization!r} is invalid; use one "
                f"of {list(GRAPH_OPTIMIZATION_LEVELS)}"
            )


def normalise_sha256(value: str) -> str:
    """Return a sha256 digest as 64 lowercase hex digits.

    Accepts an optional "sha256:" prefix and any letter case.

    Raises:
        DetectorConfigError: when the value is not 64 hex digits.
    """
    digest = value.strip().lower().removeprefix("sha256:")
    if not _SHA256_HEX.fullmatch(digest):
        raise DetectorConfigError(
            f"sha256 {value!r} is invalid; give the 64 hex digits printed by "
            "`sha256sum MODEL`"
        )
    return digest


def file_sha256(path: Path) -> str:
    """Return the sha256 hex digest of the file at `path`."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_model_file(path: Path, expected_sha256: str | None) -> str:
    """Check that the model file exists and, if given, matches its digest.

    Returns:
        The file's actual sha256 hex digest.

    Raises:
        ModelNotFoundError: when `path` is not an existing file.
        ChecksumMismatchError: when the digest differs from `expected_sha256`.
    """
    if not path.is_file():
        raise ModelNotFoundError(
            f"model file {str(path)!r} not found; check the path, or fetch the model "
            "with `sitlab-models` first"
        )
    expected = normalise_sha256(expected_sha256) if expected_sha256 else None
    actual = file_sha256(path)
    if expected is not None and actual != expected:
        raise ChecksumMismatchError(
            f"model file {str(path)!r} has sha256 {actual}, expected {expected}; "
            "the file is corrupt or a different model, so download it again or "
            "update the expected sha256"
        )
    return actual


def check_providers(requested: tuple[str, ...]) -> None:
    """Check that every requested execution provider is installed.

    Raises:
        ProviderNotAvailableError: naming the missing and the available ones.
    """
    available = ort.get_available_providers()
    missing = [name for name in requested if name not in available]
    if missing:
        raise ProviderNotAvailableError(
            f"execution provider(s) {missing} not available in this onnxruntime "
            f"build; available: {available}. Install the matching onnxruntime "
            "package or choose an available provider"
        )


def open_session(path: Path, settings: SessionSettings) -> ort.InferenceSession:
    """Create an inference session for the model at `path`.

    Raises:
        ProviderNotAvailableError: when a provider is not installed.
        CorruptModelError: when ONNX Runtime cannot load the model.
    """
    check_providers(settings.providers)
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = GRAPH_OPTIMIZATION_LEVELS[
        settings.graph_optimization
    ]
    spinning = "1" if settings.spin_wait else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)

    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=list(settings.providers)
        )
    except ORT_ERRORS as error:
        raise CorruptModelError(
            f"onnxruntime failed to load model {str(path)!r}: {error}. Check that "
            "the file is a complete ONNX model; download or export it again"
        ) from error

    active = session.get_providers()
    if active[: len(settings.providers)] != list(settings.providers):
        logger.warning(
            "onnxruntime runs %s with providers %s, requested %s",
            path.name,
            active,
            list(settings.providers),
        )
    return session


def quantisation_kind(path: Path, input_type: str) -> QuantisationKind:
    """Classify the model's numeric form from its operators.

    Dynamic int8 graphs (ONNX Runtime's dynamic quantiser) contain
    ConvInteger, MatMulInteger or DynamicQuantizeLinear; static graphs
    contain QuantizeLinear/DequantizeLinear pairs or QLinear operators.

    Args:
        path: the ONNX file.
        input_type: ONNX Runtime's type string of the image input.

    Returns:
        The kind; UNKNOWN when the `onnx` package is not installed.
    """
    try:
        import onnx  # noqa: PLC0415 - optional dependency, models extra
    except ImportError:
        logger.info("onnx is not installed, so the quantisation kind is unknown")
        return QuantisationKind.UNKNOWN

    model = onnx.load(str(path), load_external_data=False)
    op_types = {node.op_type for node in model.graph.node}
    if op_types & {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}:
        return QuantisationKind.DYNAMIC_INT8
    static_ops = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"}
    if op_types & static_ops:
        return QuantisationKind.STATIC_QDQ
    if input_type == "tensor(float16)":
        return QuantisationKind.FP16
    return QuantisationKind.FP32
