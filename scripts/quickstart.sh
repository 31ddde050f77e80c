#!/usr/bin/env bash
# The quickstart pipeline on the bundled MNIST subset: search → export → finetune → report.
# Usage: scripts/quickstart.sh [recipe] [extra key=value overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
MPSCTL="${MPSCTL:-.venv/bin/mpsctl}"
recipe="${1:-recipes/quickstart.yaml}"
shift || true
start=$(date +%s)
search_ckpt=$("$MPSCTL" search "$recipe" "$@" | tail -n 1)
export_ckpt=$("$MPSCTL" export "$search_ckpt" | tail -n 1)
final_ckpt=$("$MPSCTL" finetune "$export_ckpt" | tail -n 1)
run_dir=$(dirname "$final_ckpt")
"$MPSCTL" export "$final_ckpt" --onnx "$run_dir/model.onnx" > /dev/null
"$MPSCTL" export "$final_ckpt" --onnx "$run_dir/model.qonnx.onnx" --onnx-variant qonnx > /dev/null
"$MPSCTL" report "$final_ckpt" --plot "$run_dir/plots"
echo "integer ONNX model: $run_dir/model.onnx; QONNX (real bit-widths): $run_dir/model.qonnx.onnx"
echo "per-epoch metrics: $run_dir/metrics.jsonl"
echo "quickstart finished in $(( $(date +%s) - start )) s: $final_ckpt"
# Last: the fine-tuned model on the held-out test split (never used to choose anything).
"$MPSCTL" eval "$final_ckpt" --split test
