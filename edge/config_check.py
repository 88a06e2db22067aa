"""Deployment checks of a node config beyond its schema.

`check-config` should fail for every config that `run` would refuse, so a
technician learns of a bad line or a missing model before going on site.
The checks build the same objects the pipeline builds: the scene at the
reference resolution, the analytics, the incident rules and the detector.
"""

from __future__ import annotations

from pathlib import Path

from edge.analytics import Analytics, GeometryError
from edge.config import NodeConfig
from edge.detector import Detector, DetectorError
from edge.detector.classes import resolve_names
from edge.incident_setup import IncidentSetupError, build_engine
from edge.scene import Scene

# Resolution used to check normalised geometry or geometry in source pixels,
# whose real resolution is known only once the stream is open.
CHECK_RESOLUTION_WH = (1920, 1080)


def check_deployable(config: NodeConfig, *, load_model: bool = True) -> list[str]:
    """Return the problems that would stop `sitlab-edge run`; empty when none.

    Args:
        config: a config that passed schema validation.
        load_model: also load the model file and check its sha256; turn off on
            a machine that does not hold the model.
    """
    problems: list[str] = []
    class_names = resolve_names(None, 80)
    if load_model:
        names, problem = _check_model(config)
        if problem:
            problems.append(problem)
        if names:
            class_names = names
    problems.extend(_check_geometry(config, class_names))
    return problems


def _check_model(config: NodeConfig) -> tuple[list[str] | None, str | None]:
    model = config.model
    try:
        detector = Detector(
            model.path,
            sha256=model.sha256,
            providers=tuple(model.providers),
            intra_op_threads=1,
            classes=config.detection.classes,
            output_format=model.output_format,
        )
    except DetectorError as error:
        return None, f"model: {error}"
    return list(detector.class_names), None


def _check_geometry(config: NodeConfig, class_names: list[str]) -> list[str]:
    reference = config.geometry.reference_resolution
    resolution = reference if isinstance(reference, tuple) else CHECK_RESOLUTION_WH
    if not isinstance(reference, tuple) and config.ground is not None:
        # The stream's size is unknown here, and a ground plane only scales to
        # its own aspect ratio, so check it at the snapshot's size.
        resolution = config.ground.resolution
    # Each step's errors carry the config section they come from.
    try:
        scene = Scene.from_config(config, resolution)
    except GeometryError as error:
        return [f"geometry: {error}"]
    try:
        Analytics(
            scene.lines,
            scene.zones,
            reference=scene.reference,
            class_names=class_names,
            detector_classes=config.detection.classes,
        )
    except GeometryError as error:
        return [f"counting: {error}"]
    try:
        build_engine(config, scene, resolution, class_names)
    except (GeometryError, IncidentSetupError) as error:
        return [f"rules: {error}"]
    return []


def describe(path: Path, problems: list[str]) -> str:
    """Render problems one per line, prefixed with the config file."""
    return "\n".join(f"{path}: {problem}" for problem in problems)
