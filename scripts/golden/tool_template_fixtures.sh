#!/usr/bin/env bash
# Regenerates engine/tests/fixtures/chat-templates/tools-reference.json: tool-calling
# conversations rendered by transformers (the pinned bench environment in the cache).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${MODELFLEET_CACHE:-$HOME/.cache/modelfleet}"
VENV="$CACHE/bench-venv"
if ! "$VENV/bin/python" -c "import transformers, tokenizers" 2>/dev/null; then
    echo "tool template fixtures: no transformers in $VENV; run bench/engine_cpu.sh once" >&2
    exit 1
fi
"$VENV/bin/python" "$ROOT/scripts/golden/tool_template_fixtures.py" \
    "$ROOT/engine/tests/fixtures/chat-templates"
