"""Latency of models per execution provider, thread count and spin-waiting."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.info import describe

logger = logging.getLogger(__name__)


class BenchError(ValueError):
    """A benchmark setting is invalid or a provider is not available."""


@dataclass(frozen=True, slots=True)
class BenchResult:
    """Latency of one model under one setting.

    Attributes:
        model: file name of the model.
        input_size: side of the square input in pixels.
        precision: quantisation kind, as `sitlab-models info` names it.
        provider: ONNX Runtime execution provider.
        threads: intra-op thread count.
        spin: whether idle threads spin-wait between operators.
        median_ms: median latency of one inference.
        p90_ms: 90th percentile latency.
        runs: number of timed runs.
    """

    model: str
    input_size: int
    precision: str
    provider: str
    threads: int
    spin: bool
    median_ms: float
    p90_ms: float
    runs: int


def _session(
    path: Path, provider: str, threads: int, spin: bool
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spin-waiting keeps worker threads busy between operators: lower latency
    # on an idle machine, but it burns CPU that other processes need.
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if spin else "0"
    )
    return ort.InferenceSession(str(path), options, providers=[provider])


def measure(
    path: Path,
    *,
    provider: str = "CPUExecutionProvider",
    threads: int = 2,
    spin: bool = True,
    warmup: int = 5,
    runs: int = 30,
) -> BenchResult:
    """Time one model on a random input of its own shape.

    Raises:
        BenchError: a count is not positive or the provider is missing.
    """
    if threads < 1 or runs < 1 or warmup < 0:
        raise BenchError(
            f"threads ({threads}) and runs ({runs}) must be at least 1 and "
            f"warmup ({warmup}) at least 0"
        )
    available = ort.get_available_providers()
    if provider not in available:
        raise BenchError(
            f"execution provider {provider!r} is not available; available: "
            f"{', '.join(available)}"
        )
    info = describe(path)
    size = info.input_shape[2] or 640
    session = _session(path, provider, threads, spin)
    feed = {
        info.input_name: np.random.default_rng(0).random(
            (1, 3, size, size), dtype=np.float32
        )
    }
    for _ in range(warmup):
        session.run(None, feed)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        timings.append((time.perf_counter() - start) * 1000.0)
    result = BenchResult(
        model=path.name,
        input_size=size,
        precision=info.quantization,
        provider=provider,
        threads=threads,
        spin=spin,
        median_ms=float(np.median(timings)),
        p90_ms=float(np.percentile(timings, 90)),
        runs=runs,
    )
    logger.info(
        "%s: %.1f ms median on %d threads", path.name, result.median_ms, threads
    )
    return result


def run_matrix(
    paths: Sequence[Path],
    *,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: Sequence[int] = (1, 2),
    spin: Sequence[bool] = (True, False),
    warmup: int = 5,
    runs: int = 30,
) -> list[BenchResult]:
    """Time every model under every combination of the settings."""
    return [
        measure(
            path, provider=provider, threads=count, spin=flag, warmup=warmup, runs=runs
        )
        for path in paths
        for provider in providers
        for count in threads
        for flag in spin
    ]


def markdown_table(results: Sequence[BenchResult]) -> str:
    """Format results as a markdown table, one row per measurement."""
    header = (
        "model", "input", "precision", "provider", "threads", "spin",
        "median ms", "p90 ms", "runs",
    )  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for r in results:
        cells = (
            r.model,
            str(r.input_size),
            r.precision,
            r.provider.removesuffix("ExecutionProvider"),
            str(r.threads),
            "on" if r.spin else "off",
            f"{r.median_ms:.1f}",
            f"{r.p90_ms:.1f}",
            str(r.runs),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
