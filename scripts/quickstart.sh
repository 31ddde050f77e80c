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
"$MPSCTL" report "$final_ckpt"
echo "quickstart finished in $(( $(date +%s) - start )) s: $final_ckpt"
