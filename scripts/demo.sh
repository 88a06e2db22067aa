#!/usr/bin/env bash
# Demo: install the model from the local model folder, then run a node on the
# PETS 2009 campus clip and print every message it would publish.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=.venv/bin
models_dir=${SITLAB_MODELS_DIR:?set SITLAB_MODELS_DIR to the folder with yolov8n_640_fp32.onnx}
media_dir=${SITLAB_MEDIA_DIR:?set SITLAB_MEDIA_DIR to the folder with pets09_s2l1_vtest/vtest.avi}
clip="$media_dir/pets09_s2l1_vtest/vtest.avi"
mkdir -p var/demo

echo "== installing the detector from $models_dir (verified by sha256)" >&2
"$bin/sitlab-models" pull yolov8n-640-fp32 --from "$models_dir" --dest var/models >&2

echo "== running the node on $clip" >&2
"$bin/sitlab-edge" run \
    --config firmware-config/examples/vtest-campus.yaml \
    --source "$clip" \
    --interval 20 \
    --sink stdout | tee var/demo/messages.jsonl

echo "== $(wc -l < var/demo/messages.jsonl) messages of every kind (status, heartbeat, counts, incidents) written to var/demo/messages.jsonl" >&2
