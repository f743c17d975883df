#!/usr/bin/env bash
# Regenerates the engine fixtures that llama.cpp makes, in the pinned Python environment the
# CPU benchmark also uses (created in the cache if missing) and with llama.cpp built by
# scripts/tools.sh llama-cpp (~9 CPU-minutes the first time, then cached):
#
#   greedy     engine/tests/fixtures/demo-model-llama-cpp.json (make_llama_cpp_greedy.py)
#   quantized  engine/tests/fixtures/gguf-quantized/ (make_quantized_fixtures.py)
#   architectures  engine/tests/fixtures/architectures/ (make_architecture_fixtures.py)
#
# Usage: scripts/golden/make_llama_cpp_fixtures.sh [greedy|quantized|architectures|all]
#        (default: all)
# FIXTURE_THREADS sets llama-server's threads for `greedy` (default: all cores).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${MODELFLEET_CACHE:-$HOME/.cache/modelfleet}"
VENV="$CACHE/bench-venv"
if ! "$VENV/bin/python" -c "import torch, transformers, gguf" 2>/dev/null; then
    echo "fixtures: creating $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet torch==2.15.0 transformers==5.23.0 gguf==0.19.0 accelerate==1.15.0
fi
LLAMA_BIN="$(bash "$ROOT/scripts/tools.sh" print-llama-cpp)"
FIXTURES="$ROOT/engine/tests/fixtures"
what="${1:-all}"
case "$what" in
    greedy | quantized | architectures | all) ;;
    *) echo "usage: $0 [greedy|quantized|architectures|all]" >&2; exit 2 ;;
esac
if [[ "$what" == greedy || "$what" == all ]]; then
    MODEL_DIR="$(bash "$ROOT/scripts/tools.sh" print-model)"
    "$VENV/bin/python" "$ROOT/scripts/golden/make_llama_cpp_greedy.py" "$FIXTURES/demo-model-llama-cpp.json" \
        "$MODEL_DIR" "$LLAMA_BIN" "${FIXTURE_THREADS:-$(nproc)}"
fi
if [[ "$what" == quantized || "$what" == all ]]; then
    "$VENV/bin/python" "$ROOT/scripts/golden/make_quantized_fixtures.py" "$FIXTURES/gguf-quantized" \
        "$(bash "$ROOT/scripts/tools.sh" print-llama-cpp-source)" "$LLAMA_BIN"
fi
if [[ "$what" == architectures || "$what" == all ]]; then
    "$VENV/bin/python" "$ROOT/scripts/golden/make_architecture_fixtures.py" "$FIXTURES/architectures" \
        "$(bash "$ROOT/scripts/tools.sh" print-llama-cpp-source)" "$LLAMA_BIN"
fi
