#!/usr/bin/env bash
# NE16 pipeline on the bundled MNIST subset: latency-aware search → refine → export → finetune.
set -euo pipefail
cd "$(dirname "$0")/.."
MPSCTL="${MPSCTL:-.venv/bin/mpsctl}"
recipe="${1:-recipes/quickstart-ne16.yaml}"
shift || true
start=$(date +%s)
search_ckpt=$("$MPSCTL" search "$recipe" "$@" | tail -n 1)
refine_ckpt=$("$MPSCTL" refine --target ne16 "$search_ckpt" | tail -n 1)
export_ckpt=$("$MPSCTL" export "$refine_ckpt" | tail -n 1)
final_ckpt=$("$MPSCTL" finetune "$export_ckpt" | tail -n 1)
"$MPSCTL" report "$final_ckpt"
echo "NE16 quickstart finished in $(( $(date +%s) - start )) s: $final_ckpt"
"$MPSCTL" eval "$final_ckpt" --split test
