#!/usr/bin/env bash
# The main job, end to end, on synthetic street scenes (called by `make demo` with .venv on PATH):
# make data -> train -> evaluate with --verify-config -> show the registry.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=demo_data/vehicle_detection
EPOCHS=${DEMO_EPOCHS:-12}
MIN_MAP50=${DEMO_MIN_MAP50:-0.5}

if [ ! -d "$DATA" ]; then
  street-scene make-dataset --task vehicle_detection --out "$DATA" --train 240 --val 48 --test 48 --seed 0 --image-size 256
fi

echo "== train (${EPOCHS} epochs on CPU) =="
log=$(mktemp)
python scripts/train.py \
  --config configs/detection_config.yaml \
  --task detection \
  --detection-task vehicle_detection \
  --train-data "$DATA/train" \
  --val-data "$DATA/val" \
  --data-yaml configs/datasets/vehicle_detection.yaml \
  --run-name demo_vehicle_detector \
  --config-override detection.training.epochs="$EPOCHS" \
  --config-override detection.training.image_size=256 | tee "$log"
run_id=$(sed -n 's/^Run ID: //p' "$log" | tail -n 1)
run_dir=$(sed -n 's/^Training completed. Results saved to //p' "$log" | tail -n 1)
rm -f "$log"

echo "== evaluate with --verify-config =="
python scripts/evaluate.py \
  --config "$run_dir/config.yaml" \
  --task detection \
  --detection-task vehicle_detection \
  --test-data "$DATA/test" \
  --checkpoint "$run_dir/best_model.pth" \
  --data-yaml configs/datasets/vehicle_detection.yaml \
  --verify-config --json > "$run_dir/demo_test_metrics.json"
map50=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['metrics']['test/mAP50'])" "$run_dir/demo_test_metrics.json")

echo "== registry =="
street-scene registry list --task vehicle_detection

echo
echo "Run ID: $run_id"
echo "Test mAP50: $map50 (target >= $MIN_MAP50)"
python -c "import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)" "$map50" "$MIN_MAP50" \
  || { echo "demo: test mAP50 below target" >&2; exit 1; }
