"""Run Ultralytics' ObjectCounter on a clip, for comparison with the node's pipeline.

This script runs inside its own virtual environment, `var/bench-venv`, so
torch and ultralytics never enter the node's environment. Create it with:

    python bench/ultralytics_counter.py --install

which runs `pip install torch==2.14.1 torchvision==0.29.1`, then
`pip install ultralytics onnx onnxruntime shapely lap` in that environment. Then
`bench/pipeline.py --ultralytics` calls this script with the venv's Python:

    var/bench-venv/bin/python bench/ultralytics_counter.py --clip CLIP \
        --model MODEL [--threads 2] [--input 640] [--seconds N]

The same ONNX file is loaded through `YOLO(path, task="detect")`. Torch and
ONNX Runtime get the same thread count as the node. The counting line is
vertical through the middle of the frame, as in `bench/pipeline.py`. One
JSON line with frames, seconds, fps and counts goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "var" / "bench-venv"
INSTALL_STEPS = (
    ("torch==2.14.1", "torchvision==0.29.1"),
    ("ultralytics", "onnx", "onnxruntime", "shapely", "lap"),
)


def install() -> int:
    """Create `var/bench-venv` and install torch and ultralytics into it."""
    if not (VENV / "bin" / "python").exists():
        venv.create(VENV, with_pip=True)
    pip = str(VENV / "bin" / "pip")
    for packages in INSTALL_STEPS:
        done = subprocess.run([pip, "install", *packages], check=False)  # noqa: S603
        if done.returncode != 0:
            sys.stderr.write(
                f"pip install {' '.join(packages)} failed with exit code "
                f"{done.returncode}; its output is above\n"
            )
            return done.returncode
    return 0


def pin_onnxruntime_threads(threads: int) -> None:
    """Make every ONNX Runtime session use `threads` intra-op threads, no spinning.

    Ultralytics creates its session without thread settings, so the session
    class is wrapped to add them; this matches the node's defaults.
    """
    import onnxruntime  # noqa: PLC0415 - only the bench venv has these packages

    original = onnxruntime.InferenceSession

    def session(path: Any, sess_options: Any = None, **kwargs: Any) -> Any:  # noqa: ANN401
        options = sess_options or onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return original(path, options, **kwargs)

    onnxruntime.InferenceSession = session


def count(args: argparse.Namespace) -> dict[str, Any]:
    """Run the counter over the clip and return frames, timing and counts."""
    import cv2  # noqa: PLC0415 - only the bench venv has these packages
    import torch  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    pin_onnxruntime_threads(args.threads)
    from ultralytics import solutions  # noqa: PLC0415

    capture = cv2.VideoCapture(str(args.clip))
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    counter = solutions.ObjectCounter(
        model=str(args.model),
        region=[(width // 2, 0), (width // 2, height)],
        imgsz=args.input,
        device="cpu",
        show=False,
        verbose=False,
    )
    limit = None if args.seconds is None else int(round(args.seconds * fps))
    frames, started = 0, time.perf_counter()
    result = None
    while limit is None or frames < limit:
        ok, image = capture.read()
        if not ok:
            break
        result = counter(image)
        frames += 1
    seconds = time.perf_counter() - started
    capture.release()
    return {
        "frames": frames,
        "seconds": round(seconds, 2),
        "fps": round(frames / seconds, 2) if seconds else 0.0,
        "frame_ms": round(1000.0 * seconds / frames, 2) if frames else 0.0,
        "in_count": getattr(result, "in_count", None),
        "out_count": getattr(result, "out_count", None),
        "threads": args.threads,
        "torch": torch.__version__,
        "ultralytics": __import__("ultralytics").__version__,
    }


def main() -> int:
    """Install the environment or run the counter, per the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="create the venv")
    parser.add_argument("--clip", type=Path, help="video file")
    parser.add_argument("--model", type=Path, help="ONNX model file")
    parser.add_argument("--threads", type=int, default=2, help="torch and ORT threads")
    parser.add_argument("--input", type=int, default=640, help="model input size")
    parser.add_argument("--seconds", type=float, default=None, help="clip seconds")
    args = parser.parse_args()
    if args.install:
        return install()
    if args.clip is None or args.model is None:
        parser.error("--clip and --model are required unless --install is given")
    sys.stdout.write(json.dumps(count(args)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
