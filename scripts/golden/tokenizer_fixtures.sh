#!/usr/bin/env bash
# Regenerates engine/tests/fixtures/tokenizers: llama.cpp's vocabulary-only GGUF files with
# their test vectors (models/ggml-vocab-NAME.gguf and .inp/.out, from the pinned llama.cpp
# source tree), and the ids transformers and llama.cpp give the same texts from those files
# and from the demo model (scripts/golden/tokenizer_fixtures.py); and the chat templates of the
# supported families rendered by transformers (scripts/golden/chat_template_fixtures.py).
#
# llama.cpp's ids need its library built from the same tree: LLAMA_CPP_BUILD names that build
# directory (static libraries, as `cmake -S "$(scripts/tools.sh print-llama-cpp-source)" -B DIR
# -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF && cmake --build DIR --target llama` makes them);
# without one, llama-cpp.json is left as it is.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${MODELFLEET_CACHE:-$HOME/.cache/modelfleet}"
VENV="$CACHE/bench-venv"
OUT="$ROOT/engine/tests/fixtures/tokenizers"
# The vocabularies of the supported architectures that llama.cpp ships vectors for.
VOCABS=(llama-bpe llama-spm gpt-2 qwen2 deepseek-llm phi-3)

if ! "$VENV/bin/python" -c "import torch, transformers, gguf" 2>/dev/null; then
    echo "tokenizer fixtures: creating $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet torch==2.15.0 transformers==5.23.0 gguf==0.19.0 accelerate==1.15.0
fi
LLAMA_CPP="$(bash "$ROOT/scripts/tools.sh" print-llama-cpp-source)"
mkdir -p "$OUT"
for vocab in "${VOCABS[@]}"; do
    for suffix in gguf gguf.inp gguf.out; do
        cp "$LLAMA_CPP/models/ggml-vocab-$vocab.$suffix" "$OUT/"
    done
    echo "tokenizer fixtures: copied ggml-vocab-$vocab" >&2
done

TOOL=""
BUILD="${LLAMA_CPP_BUILD:-}"
if [[ -n "$BUILD" && -f "$BUILD/src/libllama.a" ]]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    TOOL="$work/llama_cpp_tokenize"
    echo "tokenizer fixtures: building llama_cpp_tokenize against $BUILD" >&2
    g++ -O1 -std=c++17 -I"$LLAMA_CPP/include" -I"$LLAMA_CPP/ggml/include" -I"$LLAMA_CPP/vendor" \
        "$ROOT/scripts/golden/llama_cpp_tokenize.cpp" -o "$TOOL" \
        "$BUILD/src/libllama.a" "$BUILD/ggml/src/libggml.a" "$BUILD/ggml/src/libggml-cpu.a" \
        "$BUILD/ggml/src/libggml-base.a" -lgomp -lpthread -ldl
else
    echo "tokenizer fixtures: LLAMA_CPP_BUILD names no llama.cpp build; keeping llama-cpp.json" >&2
fi
MODEL_DIR="$(bash "$ROOT/scripts/tools.sh" print-model)"
"$VENV/bin/python" "$ROOT/scripts/golden/tokenizer_fixtures.py" "$OUT" "$MODEL_DIR/model.gguf" "$TOOL" "${VOCABS[@]}"
"$VENV/bin/python" "$ROOT/scripts/golden/chat_template_fixtures.py" "$ROOT/engine/tests/fixtures/chat-templates" \
    "$LLAMA_CPP" "$OUT" "$MODEL_DIR/model.gguf"
