"""The edge node's object detector: an ONNX YOLO model behind one call.

`Detector.detect` runs letterbox, inference and decoding with NMS. The three
stages are also public (`preprocess`, `infer`, `postprocess`) so a benchmark
can time them apart, and `detect_batch` runs several cameras' frames through
one session.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.detector.classes import parse_metadata_names, resolve_names
from edge.detector.config import (
    build_score_filter,
    check_unit_interval,
    resolve_input_wh,
)
from edge.detector.decode import OutputDecoder
from edge.detector.errors import (
    CorruptModelError,
    DetectorConfigError,
    InferenceError,
    UnsupportedFormatError,
)
from edge.detector.formats import (
    OutputFormat,
    OutputLayout,
    parse_output_format,
    recognise_format,
)
from edge.detector.letterbox import LetterboxBuffer, LetterboxTransform
from edge.detector.nms import nms_per_class
from edge.detector.session import (
    ORT_ERRORS,
    QuantisationKind,
    SessionSettings,
    open_session,
    quantisation_kind,
    verify_model_file,
)
from edge.types import Detections, Image

logger = logging.getLogger(__name__)

Tensor = npt.NDArray[np.floating]

_YOLOX_FORMATS = (OutputFormat.YOLOX_RAW, OutputFormat.YOLOX_DECODED)
_INPUT_DTYPES: dict[str, type[np.floating]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}
# End-to-end outputs carry class ids, not a score column per class, so
# without metadata names the class count is assumed to be COCO's.
_END2END_DEFAULT_CLASSES = 80


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Description of the loaded model, for logs, heartbeats and benchmarks.

    Attributes:
        name: file name of the model.
        sha256: hex digest of the model file.
        input_wh: model input width and height.
        output_format: recognised or overridden output layout.
        quantisation: numeric form of the weights (fp32, dynamic int8, ...).
        class_count: number of classes.
        batch_dynamic: True when one session run accepts several images.
        providers: execution providers ONNX Runtime actually uses.
    """

    name: str
    sha256: str
    input_wh: tuple[int, int]
    output_format: OutputFormat
    quantisation: QuantisationKind
    class_count: int
    batch_dynamic: bool
    providers: tuple[str, ...]


class Detector:
    """ONNX YOLO detector for BGR frames.

    Not thread-safe: the input tensor is pre-allocated and reused. Give each
    thread its own detector, or share one through `detect_batch`.

    Args:
        path: the .onnx model file.
        sha256: expected hex digest of the file; loading fails on mismatch.
        providers: ONNX Runtime execution providers in priority order.
        intra_op_threads: threads inside one operator (0 = all cores).
        inter_op_threads: threads across independent operators.
        spin_wait: let idle threads spin; lower latency, more CPU burnt.
        graph_optimization: "disabled", "basic", "extended" or "all".
        confidence: minimum score of a detection; lower finds more objects
            and more false positives.
        class_confidence: minimum score per class name, overriding
            `confidence` (e.g. {"person": 0.4}).
        iou: NMS overlap above which the weaker box of a class is dropped;
            lower merges more, higher keeps crowds of overlapping people.
        classes: class names to keep; None keeps all.
        max_detections: maximum detections per frame, best scores first.
        output_format: skip layout recognition; one of
            `formats.OVERRIDE_CHOICES` ("yolox" still detects raw or decoded boxes).
        input_size: input size for models with a dynamic input, an int or
            (width, height); must agree with a fixed input.

    Raises:
        ModelNotFoundError: the file does not exist.
        ChecksumMismatchError: the file's sha256 differs from `sha256`.
        ProviderNotAvailableError: a provider is not installed.
        CorruptModelError: ONNX Runtime cannot load or run the model.
        UnsupportedFormatError: the input or output layout is not supported.
        DetectorConfigError: a setting is invalid.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sha256: str | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int = 2,
        inter_op_threads: int = 1,
        spin_wait: bool = False,
        graph_optimization: str = "all",
        confidence: float = 0.25,
        class_confidence: Mapping[str, float] | None = None,
        iou: float = 0.45,
        classes: Sequence[str] | None = None,
        max_detections: int = 300,
        output_format: str | OutputFormat | None = None,
        input_size: int | tuple[int, int] | None = None,
    ) -> None:
        self.iou = check_unit_interval("iou", iou)
        if max_detections < 1:
            raise DetectorConfigError(
                f"max_detections must be at least 1, got {max_detections}"
            )
        self.max_detections = max_detections
        override = parse_output_format(output_format)
        settings = SessionSettings(
            providers=tuple(providers),
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            spin_wait=spin_wait,
            graph_optimization=graph_optimization,
        )

        model_path = Path(path)
        digest = verify_model_file(model_path, sha256)
        self._session = open_session(model_path, settings)
        image_input = self._session.get_inputs()[0]
        self._input_name: str = image_input.name
        metadata: dict[str, str] = dict(
            self._session.get_modelmeta().custom_metadata_map
        )
        self.input_size_wh = resolve_input_wh(image_input.shape, input_size, metadata)
        self._batch_dynamic = not isinstance(image_input.shape[0], int)
        dtype = _input_dtype(image_input.type)

        sample = self._warm_up(dtype, model_path)
        layout = self._recognise(sample, metadata, override)
        self.class_names: list[str] = resolve_names(
            metadata.get("names"), layout.class_count or self._end2end_count(metadata)
        )
        score_filter = build_score_filter(
            self.class_names,
            confidence=confidence,
            class_confidence=class_confidence,
            classes=classes,
        )
        self._decoder = OutputDecoder(layout, self.input_size_wh, score_filter)
        self._layout = layout
        self._buffer = self._make_buffer(layout.format, 1, dtype)
        self._batch_buffer: LetterboxBuffer | None = None
        self._dtype = dtype

        self.model_info = ModelInfo(
            name=model_path.name,
            sha256=digest,
            input_wh=self.input_size_wh,
            output_format=layout.format,
            quantisation=quantisation_kind(model_path, image_input.type),
            class_count=len(self.class_names),
            batch_dynamic=self._batch_dynamic,
            providers=tuple(self._session.get_providers()),
        )
        logger.info(
            "loaded model %s: %s, input %dx%d, %s, %d classes, providers %s",
            self.model_info.name,
            layout.format,
            *self.input_size_wh,
            self.model_info.quantisation,
            len(self.class_names),
            list(self.model_info.providers),
        )

    def detect(self, image: Image) -> Detections:
        """Detect objects in one BGR frame.

        Returns:
            Detections in frame pixels, best score first.
        """
        tensor, transform = self.preprocess(image)
        return self.postprocess(self.infer(tensor), transform)

    def detect_batch(self, images: Sequence[Image]) -> list[Detections]:
        """Detect objects in several frames, in one session run when possible.

        Models with a fixed batch of 1 run the frames one after another.

        Returns:
            One `Detections` per image, in input order.
        """
        if not images:
            return []
        buffer = self._batch_buffer
        if buffer is None or buffer.tensor.shape[0] < len(images):
            buffer = self._make_buffer(
                self._decoder.layout.format, len(images), self._dtype
            )
            self._batch_buffer = buffer
        transforms = [buffer.fill(image, slot) for slot, image in enumerate(images)]
        outputs = self.infer_batch(buffer.tensor[: len(images)])
        return [
            self.postprocess([output[slot : slot + 1] for output in outputs], transform)
            for slot, transform in enumerate(transforms)
        ]

    def preprocess(self, image: Image) -> tuple[Tensor, LetterboxTransform]:
        """Letterbox a BGR frame into the model's input tensor.

        The returned tensor is the detector's reused buffer: run it before the
        next `preprocess` call.

        Returns:
            (tensor of shape (1, 3, H, W), transform back to the frame).
        """
        transform = self._buffer.fill(image)
        return self._buffer.tensor, transform

    def infer(self, tensor: Tensor) -> list[npt.NDArray[np.floating]]:
        """Run the model on an NCHW tensor and return its outputs.

        Raises:
            InferenceError: when ONNX Runtime fails on the tensor.
        """
        try:
            outputs = self._session.run(None, {self._input_name: tensor})
        except ORT_ERRORS as error:
            raise InferenceError(
                f"onnxruntime failed on input of shape {list(tensor.shape)} "
                f"{tensor.dtype}: {error}"
            ) from error
        return [np.asarray(output) for output in outputs]

    def infer_batch(self, tensor: Tensor) -> list[npt.NDArray[np.floating]]:
        """Run the model on a batch (B, 3, H, W), splitting it when needed.

        Returns:
            The outputs with batch axis B, as one run would return them.
        """
        if self._batch_dynamic or tensor.shape[0] == 1:
            return self.infer(tensor)
        runs = [self.infer(tensor[slot : slot + 1]) for slot in range(tensor.shape[0])]
        return [np.concatenate(parts, axis=0) for parts in zip(*runs, strict=True)]

    def postprocess(
        self,
        outputs: Sequence[npt.NDArray[np.floating]],
        transform: LetterboxTransform,
        frame_wh: tuple[int, int] | None = None,
    ) -> Detections:
        """Decode the outputs of one image into detections in frame pixels.

        Args:
            outputs: the model outputs for a batch of one.
            transform: the letterbox transform from `preprocess`.
            frame_wh: frame width and height; defaults to the transform's and
                must agree with it.

        Returns:
            Detections, best score first, at most `max_detections`.
        """
        if frame_wh is not None and tuple(frame_wh) != transform.frame_wh:
            raise DetectorConfigError(
                f"frame_wh {frame_wh} differs from the transform's frame size "
                f"{transform.frame_wh}; pass the transform of this frame"
            )
        candidates = self._decoder.decode(outputs[0][0])
        boxes = candidates.xyxy
        valid = np.isfinite(boxes).all(axis=1) & np.isfinite(candidates.confidence)
        valid &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        rows = np.flatnonzero(valid)

        if self._decoder.layout.format is OutputFormat.END2END:
            order = np.argsort(-candidates.confidence[rows], kind="stable")
            rows = rows[order[: self.max_detections]]
        else:
            kept = nms_per_class(
                boxes[rows],
                candidates.confidence[rows],
                candidates.class_id[rows],
                iou_threshold=self.iou,
                max_keep=self.max_detections,
            )
            rows = rows[kept]

        xyxy = transform.to_frame(boxes[rows])
        visible = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        return Detections(
            xyxy=xyxy[visible],
            confidence=candidates.confidence[rows][visible],
            class_id=candidates.class_id[rows][visible],
        )

    def detect_sensitive(
        self, image: Image, classes: Sequence[str], confidence: float = 0.1
    ) -> Detections:
        """Detect `classes` with a low score threshold, for anonymisation.

        Evidence images must hide every person the model can find, including
        those below the node's counting threshold, so this pass keeps weak
        detections that counting would drop. It runs one extra inference.

        Raises:
            DetectorConfigError: a class name is unknown or the score is not
                in (0, 1).
        """
        score_filter = build_score_filter(
            self.class_names,
            confidence=confidence,
            class_confidence=None,
            classes=[name for name in classes if name in self.class_names],
        )
        decoder = OutputDecoder(self._layout, self.input_size_wh, score_filter)
        tensor, transform = self.preprocess(image)
        outputs = self.infer(tensor)
        candidates = decoder.decode(outputs[0][0])
        rows = np.flatnonzero(np.isfinite(candidates.xyxy).all(axis=1))
        xyxy = transform.to_frame(candidates.xyxy[rows])
        return Detections(
            xyxy=xyxy,
            confidence=candidates.confidence[rows],
            class_id=candidates.class_id[rows],
        )

    def _warm_up(
        self, dtype: type[np.floating], path: Path
    ) -> npt.NDArray[np.floating]:
        width, height = self.input_size_wh
        batch = np.zeros((1, 3, height, width), dtype=dtype)
        try:
            outputs = self._session.run(None, {self._input_name: batch})
        except ORT_ERRORS as error:
            raise CorruptModelError(
                f"model {str(path)!r} loaded but failed on a blank {width}x{height} "
                f"input: {error}. Check input_size and the export"
            ) from error
        if len(outputs) > 1:
            logger.info(
                "model %s has %d outputs; decoding the first, shape %s",
                path.name,
                len(outputs),
                list(outputs[0].shape),
            )
        return np.asarray(outputs[0])

    def _recognise(
        self,
        sample: npt.NDArray[np.floating],
        metadata: Mapping[str, str],
        override: str | None,
    ) -> OutputLayout:
        names = parse_metadata_names(metadata["names"]) if "names" in metadata else None
        return recognise_format(
            sample.shape,
            input_wh=self.input_size_wh,
            metadata=metadata,
            names_count=len(names) if names else None,
            override=override,
            sample=sample,
        )

    @staticmethod
    def _end2end_count(metadata: Mapping[str, str]) -> int:
        names = parse_metadata_names(metadata["names"]) if "names" in metadata else None
        return len(names) if names else _END2END_DEFAULT_CLASSES

    def _make_buffer(
        self, fmt: OutputFormat, batch_size: int, dtype: type[np.floating]
    ) -> LetterboxBuffer:
        # YOLOX expects BGR 0..255 padded right and bottom, while the
        # Ultralytics and YOLOv5 families expect RGB 0..1 padded evenly.
        # NOTE: the YOLOX input form follows ports of YOLOX's preproc and has
        # not been run against a real YOLOX model.
        yolox = fmt in _YOLOX_FORMATS
        return LetterboxBuffer(
            self.input_size_wh,
            batch_size=batch_size,
            channel_order="bgr" if yolox else "rgb",
            pixel_scale=1.0 if yolox else 1.0 / 255.0,
            centered=not yolox,
            dtype=dtype,
        )


def _input_dtype(onnx_type: str) -> type[np.floating]:
    try:
        return _INPUT_DTYPES[onnx_type]
    except KeyError:
        raise UnsupportedFormatError(
            f"model input type {onnx_type} is not supported; export the model with "
            f"a {list(_INPUT_DTYPES)} image input"
        ) from None
