#!/bin/sh
# Regenerate the technician guide's images from vtest.avi with the real
# commands. Usage: docs/images/make-images.sh [MEDIA_DIR] [MODELS_DIR]
set -eu
media=${1:-../shared/media}
models=${2:-../shared/models}
out=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/node.yaml" <<YAML
# Campus node, set up with sitlab-calibrate.
site: sitlab-polygon
node: campus-01
source:
  uri: $(realpath "$media/pets09_s2l1_vtest/vtest.avi")
  fps: 10
model:
  path: $(realpath "$models/yolov8n_640_fp32.onnx")
detection:
  classes: [person]
outbox:
  path: $work/outbox.sqlite3
YAML

sitlab() { python -m calibration.cli "$@"; }
sitlab snapshot --config "$work/node.yaml" --at 4 --out "$work/snapshot.png"
sitlab draw --config "$work/node.yaml" --snapshot "$work/snapshot.png" \
    --line "walkway:120,330,700,330" \
    --zone "plaza:60,250,720,250,760,570,20,570" \
    --mask "windows:540,0,768,0,768,120,540,120"
sitlab preview --config "$work/node.yaml" --snapshot "$work/snapshot.png" \
    --out "$work/preview.png"
sitlab preview --config "$work/node.yaml" --snapshot "$work/snapshot.png" \
    --out "$work/preview-detect.png" --detect
# The guide's illustrative ground points (section 6), then the ground overlay.
sitlab ground --config "$work/node.yaml" --snapshot "$work/snapshot.png" \
    --point 120,540=0,0 --point 700,545=12.5,0 \
    --point 610,260=12.5,18 --point 170,262=0,18 --point 382,318=6,13.5
sitlab preview --config "$work/node.yaml" --snapshot "$work/snapshot.png" \
    --out "$work/preview-ground.png"
# The guide's copies keep 32 levels per colour channel, which keeps each
# PNG under 300 KB; the commands' own output is full depth.
python - "$work" "$out" <<'PY'
import sys
import cv2
work, out = sys.argv[1], sys.argv[2]
for name in ("snapshot", "preview", "preview-detect", "preview-ground"):
    image = cv2.imread(f"{work}/{name}.png")
    image = (image // 8) * 8 + 4
    cv2.imwrite(f"{out}/vtest-{name}.png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
PY
sitlab verify --config "$work/node.yaml" --seconds 30
