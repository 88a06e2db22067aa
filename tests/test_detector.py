"""ONNX detector: output layouts on synthetic graphs, real YOLOv8n, errors."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save_model

from edge.detector import (
    ChecksumMismatchError,
    CorruptModelError,
    Detector,
    DetectorConfigError,
    ModelNotFoundError,
    OutputFormat,
    ProviderNotAvailableError,
    QuantisationKind,
    UnsupportedFormatError,
)
from edge.detector.classes import COCO80_NAMES
from edge.detector.formats import recognise_format

SIZE = 96  # model input side; strides 8, 16, 32 give 144 + 36 + 9 cells
GRID_ROWS = 189
NAMES = "{0: 'person', 1: 'car', 2: 'dog'}"
CLASSES = 3

# Targets as (cx, cy, w, h, class, score), placed at fixed output rows.
TARGETS = {
    10: (30.0, 40.0, 20.0, 10.0, 1, 0.9),  # kept
    11: (31.0, 40.0, 20.0, 10.0, 1, 0.8),  # same class, IoU 0.9: suppressed
    12: (30.0, 40.0, 20.0, 10.0, 0, 0.6),  # same box, other class: kept
    13: (70.0, 70.0, 16.0, 32.0, 2, 0.1),  # below confidence 0.25: dropped
}
EXPECTED = [
    ((20.0, 35.0, 40.0, 45.0), 0.9, 1),
    ((20.0, 35.0, 40.0, 45.0), 0.6, 0),
]


def build_model(
    path: Path,
    output: np.ndarray,
    *,
    metadata: dict[str, str] | None = None,
    batch: int | str = 1,
    quantisation: str | None = None,
) -> Path:
    """Write an ONNX graph whose output is `output` broadcast over the batch.

    The output is the constant plus 0 x (sum of the image), so it depends on
    the input and keeps its batch size.
    """
    nodes = []
    source = "images"
    if quantisation == "qdq":
        nodes += [
            _constant("scale", np.array(1.0 / 255.0, dtype=np.float32)),
            _constant("zero_point", np.array(0, dtype=np.uint8)),
            helper.make_node(
                "QuantizeLinear", ["images", "scale", "zero_point"], ["q"]
            ),
            helper.make_node("DequantizeLinear", ["q", "scale", "zero_point"], ["dq"]),
        ]
        source = "dq"
    elif quantisation == "dynamic":
        nodes += [
            helper.make_node("DynamicQuantizeLinear", ["images"], ["q", "qs", "qz"]),
            helper.make_node("DequantizeLinear", ["q", "qs", "qz"], ["dq"]),
        ]
        source = "dq"
    nodes += [
        _constant("axes", np.array([1, 2, 3], dtype=np.int64)),
        helper.make_node("ReduceSum", [source, "axes"], ["total"]),
        _constant("shape", np.array([-1, 1, 1], dtype=np.int64)),
        helper.make_node("Reshape", ["total", "shape"], ["total3"]),
        _constant("zero", np.array(0.0, dtype=np.float32)),
        helper.make_node("Mul", ["total3", "zero"], ["nothing"]),
        _constant("fixed", output.astype(np.float32)),
        helper.make_node("Add", ["nothing", "fixed"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "synthetic",
        [
            helper.make_tensor_value_info(
                "images", TensorProto.FLOAT, [batch, 3, SIZE, SIZE]
            )
        ],
        [
            helper.make_tensor_value_info(
                "output0", TensorProto.FLOAT, [batch, *output.shape[1:]]
            )
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(
        model, metadata if metadata is not None else {"names": NAMES}
    )
    save_model(model, str(path))
    return path


def _constant(name: str, value: np.ndarray):
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(value)
    )


def _score_row(cx, cy, w, h, class_id, score, objectness=None):  # noqa: PLR0917
    scores = [0.0] * CLASSES
    scores[class_id] = score
    head = [cx, cy, w, h] if objectness is None else [cx, cy, w, h, objectness]
    return head + scores


def ultralytics_output() -> np.ndarray:
    output = np.zeros((1, 4 + CLASSES, GRID_ROWS), dtype=np.float32)
    for row, target in TARGETS.items():
        output[0, :, row] = _score_row(*target)
    return output


def transposed_output() -> np.ndarray:
    return np.ascontiguousarray(ultralytics_output().transpose(0, 2, 1))


def yolov5_output() -> np.ndarray:
    # Objectness and class score are both sqrt(score), so the product is the
    # target score and a decoder that ignores objectness reports sqrt(score).
    output = np.zeros((1, 3 * GRID_ROWS, 5 + CLASSES), dtype=np.float32)
    for row, (cx, cy, w, h, class_id, score) in TARGETS.items():
        root = math.sqrt(score)
        output[0, row] = _score_row(cx, cy, w, h, class_id, root, objectness=root)
    return output


def yolox_decoded_output() -> np.ndarray:
    output = np.zeros((1, GRID_ROWS, 5 + CLASSES), dtype=np.float32)
    for row, target in TARGETS.items():
        output[0, row] = _score_row(*target[:5], target[5], objectness=1.0)
    output[0, GRID_ROWS - 1, :2] = SIZE - 16.0  # centres span the input
    return output


def yolox_raw_output() -> np.ndarray:
    # Rows 10..13 lie in the stride-8 map of 12 x 12 cells: cell (row % 12,
    # row // 12); YOLOX stores centre offsets and log sizes in stride units.
    output = np.zeros((1, GRID_ROWS, 5 + CLASSES), dtype=np.float32)
    for row, (cx, cy, w, h, class_id, score) in TARGETS.items():
        raw = [cx / 8 - row % 12, cy / 8 - row // 12, math.log(w / 8), math.log(h / 8)]
        output[0, row] = _score_row(*raw, class_id, score, objectness=1.0)
    return output


def end2end_output() -> np.ndarray:
    # NMS ran in the graph, so overlapping rows of one class are both kept.
    output = np.zeros((1, 10, 6), dtype=np.float32)
    output[0, 0] = (20, 35, 40, 45, 0.9, 1)
    output[0, 1] = (21, 35, 41, 45, 0.8, 1)
    output[0, 2] = (50, 50, 60, 70, 0.1, 2)
    return output


END2END_EXPECTED = [
    ((20.0, 35.0, 40.0, 45.0), 0.9, 1),
    ((21.0, 35.0, 41.0, 45.0), 0.8, 1),
]

FORMAT_CASES = [
    pytest.param(
        ultralytics_output, None, OutputFormat.ULTRALYTICS, EXPECTED, id="yolov8"
    ),
    pytest.param(
        transposed_output,
        None,
        OutputFormat.ULTRALYTICS_TRANSPOSED,
        EXPECTED,
        id="yolov8-transposed",
    ),
    pytest.param(yolov5_output, None, OutputFormat.YOLOV5, EXPECTED, id="yolov5"),
    pytest.param(
        yolox_decoded_output,
        None,
        OutputFormat.YOLOX_DECODED,
        EXPECTED,
        id="yolox-decoded",
    ),
    pytest.param(
        yolox_raw_output, None, OutputFormat.YOLOX_RAW, EXPECTED, id="yolox-raw"
    ),
    pytest.param(
        yolox_raw_output,
        "yolox_raw",
        OutputFormat.YOLOX_RAW,
        EXPECTED,
        id="yolox-raw-override",
    ),
    pytest.param(
        end2end_output, None, OutputFormat.END2END, END2END_EXPECTED, id="end2end"
    ),
]


def _rows(detections):
    return [
        (tuple(float(v) for v in box), float(score), int(class_id))
        for box, score, class_id in zip(
            detections.xyxy, detections.confidence, detections.class_id, strict=True
        )
    ]


@pytest.mark.parametrize(("make_output", "override", "fmt", "expected"), FORMAT_CASES)
def test_format_decodes_exact_boxes(tmp_path, make_output, override, fmt, expected):
    path = build_model(tmp_path / "model.onnx", make_output())
    detector = Detector(path, output_format=override)

    detections = detector.detect(np.zeros((SIZE, SIZE, 3), dtype=np.uint8))

    assert detector.model_info.output_format is fmt
    got = _rows(detections)
    assert len(got) == len(expected)
    for (box, score, class_id), (want_box, want_score, want_class) in zip(
        got, expected, strict=True
    ):
        assert box == pytest.approx(want_box, abs=1e-4)
        assert score == pytest.approx(want_score, abs=1e-6)
        assert class_id == want_class


def test_boxes_map_back_to_larger_frame(tmp_path):
    path = build_model(tmp_path / "model.onnx", ultralytics_output())
    detector = Detector(path)

    detections = detector.detect(np.zeros((2 * SIZE, 4 * SIZE, 3), dtype=np.uint8))

    # Scale 1/4 and 24 px of top padding: model y 35..45 is frame 44..84.
    np.testing.assert_allclose(detections.xyxy[0], (80, 44, 160, 84), atol=1e-3)


RECOGNITION_CASES = [
    pytest.param(
        (1, 84, 8400), (640, 640), {}, None, OutputFormat.ULTRALYTICS, id="v8-coco"
    ),
    pytest.param(
        (1, 8400, 84),
        (640, 640),
        {},
        None,
        OutputFormat.ULTRALYTICS_TRANSPOSED,
        id="v8-transposed-coco",
    ),
    pytest.param(
        (1, 25200, 85), (640, 640), {}, None, OutputFormat.YOLOV5, id="v5-coco"
    ),
    pytest.param(
        (1, 8400, 85),
        (640, 640),
        {},
        None,
        OutputFormat.YOLOX_DECODED,
        id="85-columns-prefers-coco-yolox",
    ),
    pytest.param(
        (1, 8400, 85),
        (640, 640),
        {"author": "Ultralytics"},
        None,
        OutputFormat.ULTRALYTICS_TRANSPOSED,
        id="85-columns-ultralytics-author",
    ),
    pytest.param(
        (1, 300, 6), (640, 640), {}, None, OutputFormat.END2END, id="end2end-300"
    ),
    pytest.param(
        (1, 8400, 6),
        (640, 640),
        {"end2end": "True"},
        None,
        OutputFormat.END2END,
        id="end2end-metadata",
    ),
    pytest.param(
        (1, 84, 8400),
        (640, 640),
        {},
        "ultralytics",
        OutputFormat.ULTRALYTICS,
        id="override",
    ),
    pytest.param(
        (1, 84, 5000),
        (640, 640),
        {},
        80,
        OutputFormat.ULTRALYTICS,
        id="other-strides-by-names",
    ),
]


@pytest.mark.parametrize(
    ("shape", "input_wh", "metadata", "extra", "fmt"), RECOGNITION_CASES
)
def test_recognise_format(shape, input_wh, metadata, extra, fmt):
    override = extra if isinstance(extra, str) else None
    names_count = extra if isinstance(extra, int) else None
    layout = recognise_format(
        shape,
        input_wh=input_wh,
        metadata=metadata,
        names_count=names_count,
        override=override,
    )
    assert layout.format is fmt


UNRECOGNISED_CASES = [
    pytest.param(
        (1, 10, 10),
        None,
        r"\[1, 10, 10\].*matches no supported layout.*output_format",
        id="unknown-shape",
    ),
    pytest.param(
        (1, 84), None, r"\[1, 84\] is not \(1, rows, columns\)", id="two-dims"
    ),
    pytest.param(
        (1, 8400, 7),
        "end2end",
        r"does not fit output_format 'end2end'",
        id="override-mismatch",
    ),
    pytest.param(
        (1, 100, 9),
        "yolox_raw",
        r"raw YOLOX output has 100 rows.*input_size",
        id="yolox-raw-rows",
    ),
]


@pytest.mark.parametrize(("shape", "override", "message"), UNRECOGNISED_CASES)
def test_recognise_rejects(shape, override, message):
    with pytest.raises(UnsupportedFormatError, match=message):
        recognise_format(
            shape, input_wh=(640, 640), metadata={}, names_count=None, override=override
        )


def test_recognise_ambiguous_shape():
    # 12 columns: 8 classes of a transposed Ultralytics head or 7 of YOLOX.
    with pytest.raises(UnsupportedFormatError, match=r"ambiguous.*output_format"):
        recognise_format(
            (1, 8400, 12), input_wh=(640, 640), metadata={}, names_count=None
        )


def test_class_filter_and_per_class_threshold(tmp_path):
    path = build_model(tmp_path / "model.onnx", ultralytics_output())
    frame = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)

    only_person = Detector(path, classes=["person"]).detect(frame)
    strict_car = Detector(path, class_confidence={"car": 0.95}).detect(frame)
    lenient_dog = Detector(path, class_confidence={"dog": 0.05}).detect(frame)

    assert only_person.class_id.tolist() == [0]
    assert strict_car.class_id.tolist() == [0]
    assert sorted(lenient_dog.class_id.tolist()) == [0, 1, 2]


def test_max_detections_keeps_best(tmp_path):
    path = build_model(tmp_path / "model.onnx", ultralytics_output())
    detections = Detector(path, max_detections=1).detect(
        np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    )
    assert detections.confidence.tolist() == pytest.approx([0.9])


def test_iou_one_disables_suppression(tmp_path):
    path = build_model(tmp_path / "model.onnx", ultralytics_output())
    detections = Detector(path, iou=1.0).detect(
        np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    )
    assert len(detections) == 3


def test_nonfinite_and_padding_boxes_dropped(tmp_path):
    output = ultralytics_output()
    output[0, :, 20] = _score_row(np.nan, 10.0, 5.0, 5.0, 2, 0.95)
    output[0, :, 21] = _score_row(48.0, 48.0, -4.0, 8.0, 2, 0.95)
    path = build_model(tmp_path / "model.onnx", output)
    # A 96x32 frame leaves 32 px of padding above and below; this box is in it.
    output[0, :, 22] = _score_row(48.0, 8.0, 10.0, 10.0, 2, 0.95)
    padded = build_model(tmp_path / "padded.onnx", output)

    square = Detector(path).detect(np.zeros((SIZE, SIZE, 3), dtype=np.uint8))
    wide = Detector(padded).detect(np.zeros((32, SIZE, 3), dtype=np.uint8))

    assert 2 not in square.class_id.tolist()
    assert 2 not in wide.class_id.tolist()


NAMES_CASES = [
    pytest.param({"names": NAMES}, 3, ["person", "car", "dog"], id="metadata-dict"),
    pytest.param({"names": "['a', 'b', 'c']"}, 3, ["a", "b", "c"], id="metadata-list"),
    pytest.param({}, 3, ["class_0", "class_1", "class_2"], id="missing-generic"),
    pytest.param({}, 80, list(COCO80_NAMES), id="missing-coco80"),
    pytest.param(
        {"names": "__import__('os').getcwd()"},
        3,
        ["class_0", "class_1", "class_2"],
        id="code-not-evaluated",
    ),
    pytest.param(
        {"names": "{0: 'a', 2: 'c'}"},
        3,
        ["class_0", "class_1", "class_2"],
        id="gap-in-ids",
    ),
    pytest.param(
        {"names": "{0: 'a'}"}, 3, ["class_0", "class_1", "class_2"], id="count-mismatch"
    ),
]


@pytest.mark.parametrize(("metadata", "classes", "expected"), NAMES_CASES)
def test_class_names(tmp_path, metadata, classes, expected):
    output = np.zeros((1, 4 + classes, GRID_ROWS), dtype=np.float32)
    path = build_model(tmp_path / "model.onnx", output, metadata=metadata)
    assert Detector(path).class_names == expected


QUANTISATION_CASES = [
    pytest.param(None, QuantisationKind.FP32, id="fp32"),
    pytest.param("dynamic", QuantisationKind.DYNAMIC_INT8, id="dynamic-int8"),
    pytest.param("qdq", QuantisationKind.STATIC_QDQ, id="static-qdq"),
]


@pytest.mark.parametrize(("quantisation", "kind"), QUANTISATION_CASES)
def test_model_info_quantisation(tmp_path, quantisation, kind):
    path = build_model(
        tmp_path / "model.onnx", ultralytics_output(), quantisation=quantisation
    )
    info = Detector(path).model_info
    assert info.quantisation is kind
    assert info.input_wh == (SIZE, SIZE)
    assert info.name == "model.onnx"
    assert len(info.sha256) == 64


def test_batch_dynamic_runs_once(tmp_path):
    path = build_model(tmp_path / "model.onnx", ultralytics_output(), batch="batch")
    detector = Detector(path)
    frames = [np.zeros((SIZE, SIZE, 3), dtype=np.uint8)] * 3

    tensor = np.zeros((3, 3, SIZE, SIZE), dtype=np.float32)
    outputs = detector.infer_batch(tensor)
    results = detector.detect_batch(frames)

    assert detector.model_info.batch_dynamic
    assert outputs[0].shape == (3, 4 + CLASSES, GRID_ROWS)
    assert len(results) == 3
    assert all(_rows(r) == _rows(results[0]) for r in results)
    assert len(results[0]) == 2


def test_batch_fixed_runs_sequentially(tmp_path):
    path = build_model(tmp_path / "model.onnx", ultralytics_output())
    detector = Detector(path)

    outputs = detector.infer_batch(np.zeros((2, 3, SIZE, SIZE), dtype=np.float32))

    assert not detector.model_info.batch_dynamic
    assert outputs[0].shape == (2, 4 + CLASSES, GRID_ROWS)
    assert detector.detect_batch([]) == []


def test_stages_equal_detect(tmp_path):
    path = build_model(tmp_path / "model.onnx", ultralytics_output())
    detector = Detector(path)
    frame = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)

    tensor, transform = detector.preprocess(frame)
    staged = detector.postprocess(detector.infer(tensor), transform, (SIZE, SIZE))

    assert _rows(staged) == _rows(detector.detect(frame))


# --- errors ---------------------------------------------------------------


def test_missing_file(tmp_path):
    missing = tmp_path / "absent.onnx"
    with pytest.raises(
        ModelNotFoundError, match=r"absent\.onnx' not found.*sitlab-models"
    ):
        Detector(missing)


def test_sha256_mismatch(tmp_path):
    path = build_model(tmp_path / "model.onnx", ultralytics_output())
    wrong = "0" * 64
    with pytest.raises(
        ChecksumMismatchError,
        match=(
            rf"model\.onnx' has sha256 [0-9a-f]{{64}}, expected {wrong}"
            r".*download it again"
        ),
    ):
        Detector(path, sha256=wrong)


def test_sha256_accepts_prefix_and_case(tmp_path):
    path = build_model(tmp_path / "model.onnx", ultralytics_output())
    digest = Detector(path).model_info.sha256
    assert Detector(path, sha256="sha256:" + digest.upper()).model_info.sha256 == digest


def test_unknown_provider(tmp_path):
    path = build_model(tmp_path / "model.onnx", ultralytics_output())
    with pytest.raises(
        ProviderNotAvailableError,
        match=(
            r"\['NoSuchExecutionProvider'\] not available"
            r".*available: \[.*'CPUExecutionProvider'"
        ),
    ):
        Detector(path, providers=("NoSuchExecutionProvider",))


def test_corrupt_model(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a protobuf" * 10)
    with pytest.raises(
        CorruptModelError, match=r"failed to load model .*broken\.onnx.*export it again"
    ):
        Detector(path)


CONFIG_ERROR_CASES = [
    pytest.param(
        {"classes": ["persn"]},
        r"classes: unknown class name 'persn'; "
        r"the model's class names are \['person', 'car', 'dog'\]",
        id="unknown-class",
    ),
    pytest.param(
        {"class_confidence": {"cat": 0.3}},
        r"class_confidence: unknown class name 'cat'.*\['person', 'car', 'dog'\]",
        id="unknown-class-threshold",
    ),
    pytest.param({"classes": []}, r"classes is empty", id="empty-classes"),
    pytest.param(
        {"confidence": 1.5},
        r"confidence must be between 0 and 1, got 1\.5",
        id="confidence",
    ),
    pytest.param({"iou": -0.1}, r"iou must be between 0 and 1, got -0\.1", id="iou"),
    pytest.param(
        {"max_detections": 0},
        r"max_detections must be at least 1, got 0",
        id="max-detections",
    ),
    pytest.param(
        {"output_format": "yolov9"},
        r"output_format 'yolov9' is invalid; use one of",
        id="format-name",
    ),
    pytest.param(
        {"intra_op_threads": -1}, r"intra_op_threads must be 0.*got -1", id="threads"
    ),
    pytest.param(
        {"graph_optimization": "max"},
        r"graph_optimization 'max' is invalid.*'all'",
        id="optimisation",
    ),
    pytest.param(
        {"sha256": "abc"},
        r"sha256 'abc' is invalid; give the 64 hex digits",
        id="sha256-form",
    ),
    pytest.param(
        {"input_size": 320},
        r"input_size 320x320 conflicts with the model's fixed input 96x96",
        id="input-size",
    ),
]


@pytest.mark.parametrize(("kwargs", "message"), CONFIG_ERROR_CASES)
def test_config_errors(tmp_path, kwargs, message):
    path = build_model(tmp_path / "model.onnx", ultralytics_output())
    with pytest.raises(DetectorConfigError, match=message):
        Detector(path, **kwargs)


def test_runtime_settings_accepted(tmp_path):
    path = build_model(tmp_path / "model.onnx", ultralytics_output())
    detector = Detector(
        path,
        intra_op_threads=1,
        inter_op_threads=1,
        spin_wait=True,
        graph_optimization="basic",
    )
    assert len(detector.detect(np.zeros((SIZE, SIZE, 3), dtype=np.uint8))) == 2


# --- real models on real footage ------------------------------------------


@pytest.fixture(scope="module")
def vtest_frame(vtest_avi: Path) -> np.ndarray:
    capture = cv2.VideoCapture(str(vtest_avi))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 100)
    ok, frame = capture.read()
    capture.release()
    assert ok, f"could not read frame 100 of {vtest_avi}"
    return frame


REAL_MODEL_CASES = [
    pytest.param(
        "yolov8n_640_fp32.onnx", (640, 640), QuantisationKind.FP32, id="fp32-640"
    ),
    pytest.param(
        "yolov8n_320_fp32.onnx", (320, 320), QuantisationKind.FP32, id="fp32-320"
    ),
    pytest.param(
        "yolov8n_int8.onnx", (640, 640), QuantisationKind.DYNAMIC_INT8, id="int8-640"
    ),
]


@pytest.mark.media
@pytest.mark.parametrize(("name", "input_wh", "kind"), REAL_MODEL_CASES)
def test_real_model_finds_people(models_dir, vtest_frame, name, input_wh, kind):
    detector = Detector(models_dir / name)
    height, width = vtest_frame.shape[:2]

    detections = detector.detect(vtest_frame)
    people = detections.select(detections.class_id == 0)
    sizes = people.xyxy[:, 2:] - people.xyxy[:, :2]

    assert detector.class_names[0] == "person"
    assert len(detector.class_names) == 80
    assert detector.model_info.output_format is OutputFormat.ULTRALYTICS
    assert detector.model_info.quantisation is kind
    assert detector.input_size_wh == input_wh
    assert len(people) >= 4
    assert (people.confidence >= 0.25).all()
    assert (people.xyxy[:, :2] >= 0).all()
    assert (people.xyxy[:, 2] <= width).all()
    assert (people.xyxy[:, 3] <= height).all()
    # Pedestrians on this campus clip are upright: taller than wide, and
    # between 30 and 250 pixels tall at 768x576.
    assert (sizes[:, 1] > sizes[:, 0]).all()
    assert ((sizes[:, 1] > 30) & (sizes[:, 1] < 250)).all()


@pytest.mark.media
def test_real_model_batch_matches_single(model_640, vtest_frame):
    detector = Detector(model_640, classes=["person"])
    flipped = np.ascontiguousarray(vtest_frame[:, ::-1])

    batch = detector.detect_batch([vtest_frame, flipped])
    single = [detector.detect(vtest_frame), detector.detect(flipped)]

    for batched, alone in zip(batch, single, strict=True):
        np.testing.assert_allclose(batched.xyxy, alone.xyxy, atol=1e-3)
        np.testing.assert_array_equal(batched.class_id, alone.class_id)
