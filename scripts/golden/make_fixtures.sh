#!/usr/bin/env bash
# Regenerates engine/tests/fixtures with Hugging Face transformers on the CPU, in the pinned
# Python environment the CPU benchmark also uses (created in the cache if missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${MODELFLEET_CACHE:-$HOME/.cache/modelfleet}"
VENV="$CACHE/bench-venv"
if ! "$VENV/bin/python" -c "import torch, transformers, gguf" 2>/dev/null; then
    echo "fixtures: creating $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet torch==2.15.0 transformers==5.23.0 gguf==0.19.0 accelerate==1.15.0
fi
MODEL_DIR="$(bash "$ROOT/scripts/tools.sh" print-model)"
"$VENV/bin/python" "$ROOT/scripts/golden/make_fixtures.py" "$ROOT/engine/tests/fixtures" "$MODEL_DIR"
