#!/usr/bin/env bash
# Engine benchmark on the CPU: modelfleet-engine against Hugging Face transformers on the
# same GGUF model, the same machine and the same thread count, in one run. Prints absolute
# figures for both and their ratios; figures, not a test.
#
# Knobs (environment): BENCH_THREADS (default: all cores), BENCH_PROMPT_LEN (128),
# BENCH_DECODE_TOKENS (32), BENCH_CONCURRENCY (1,8,32), BENCH_REPEATS (2: best of, on both
# sides), BENCH_OUT (a Markdown file to write
# the report to as well).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MODELFLEET_CACHE:-$HOME/.cache/modelfleet}"
THREADS="${BENCH_THREADS:-$(nproc)}"
PROMPT_LEN="${BENCH_PROMPT_LEN:-128}"
DECODE_TOKENS="${BENCH_DECODE_TOKENS:-32}"
CONCURRENCY="${BENCH_CONCURRENCY:-1,8,32}"
REPEATS="${BENCH_REPEATS:-2}"
VENV="$CACHE/bench-venv"
# Pinned baseline. PyPI has no CPU-only torch wheel for Linux x86-64, and its default wheel
# cannot even be imported without the CUDA runtime wheels it links against, so the pinned
# torch comes with them; it all lives in the cache, never in the repository.
PY_PACKAGES=(torch==2.15.0 transformers==5.23.0 gguf==0.19.0 accelerate==1.15.0)

log() { echo "bench: $*" >&2; }

MODEL_DIR="$(bash "$ROOT/scripts/tools.sh" print-model)"
[[ -f "$MODEL_DIR/model.gguf" ]] || { log "no demo model in $MODEL_DIR: run make tools"; exit 1; }

if ! "$VENV/bin/python" -c "import torch, transformers, gguf, accelerate" 2>/dev/null; then
    log "provisioning the transformers baseline in $VENV (several GB, once)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "${PY_PACKAGES[@]}"
fi

log "building modelfleet-engine (release)"
cargo build --release --locked -p modelfleet-engine --bin modelfleet-engine \
    --manifest-path "$ROOT/Cargo.toml" >&2
ENGINE="$ROOT/target/release/modelfleet-engine"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

COMMON=(--threads "$THREADS" --prompt-len "$PROMPT_LEN" --decode-tokens "$DECODE_TOKENS"
    --concurrency "$CONCURRENCY" --repeats "$REPEATS")
log "modelfleet-engine: $THREADS threads, prompts of $PROMPT_LEN tokens, $DECODE_TOKENS decode tokens, concurrency $CONCURRENCY"
RAYON_NUM_THREADS="$THREADS" "$ENGINE" bench --model "$MODEL_DIR" "${COMMON[@]}" \
    | tee "$WORK/engine.jsonl" >&2
log "transformers: same workload"
OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" "$VENV/bin/python" \
    "$ROOT/bench/engine_cpu_transformers.py" --model-dir "$MODEL_DIR" "${COMMON[@]}" \
    | tee "$WORK/transformers.jsonl" >&2

{
    echo "# Engine on the CPU: modelfleet-engine vs transformers"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet -- engine bench || echo ' (with local changes)')"
    echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
    echo "- threads: $THREADS on both sides"
    echo "- model: SmolLM2-135M-Instruct Q4_1 GGUF ($MODEL_DIR/model.gguf)"
    echo "- workload: per concurrency c, c distinct prompts of $PROMPT_LEN tokens prefilled together, then $DECODE_TOKENS greedy tokens each; best of $REPEATS runs per side"
    echo "- baseline: $("$VENV/bin/python" -c 'import torch, transformers; print(f"transformers {transformers.__version__}, torch {torch.__version__} (float32 weights dequantised from the GGUF)")')"
    echo
    "$VENV/bin/python" "$ROOT/bench/engine_cpu_report.py" "$WORK/engine.jsonl" "$WORK/transformers.jsonl"
} | tee "${BENCH_OUT:-/dev/null}"
