#!/usr/bin/env bash
# Proves the CUDA backend on a GPU machine, in one run of about 5 minutes (8 at most),
# writing everything under $OUT section by section:
#
#   00-environment   the GPU, driver, CUDA libraries found, Python packages
#   10-kernels       each CUDA kernel against the CPU kernel on random inputs
#   20-model         the golden fixtures (transformers' logits), batched equals alone
#                    (to 1e-3 relative: cuBLAS may pick another algorithm for another batch
#                    size), recorded CUDA graphs equal eager steps
#   30-sanitizer     compute-sanitizer memcheck over a short run of kernels and the model
#   40-bench-*       random-initialised Llama-3.2-1B and Llama-3.1-8B shapes:
#                    modelfleet-engine against transformers (bf16) on this device, same run
#   summary.md       one line per section (PASS / FAIL / SKIPPED, with why) + the benchmark
#
# The GPU machine has CUDA 13 (driver 580), PyTorch and transformers, but no Rust and no
# network: the binaries are built here and carried.
#
#   scripts/gpu-check.sh --build      (here) build and strip the binaries into target/gpu-check/
#   scripts/gpu-check.sh --dry-run    (here) check the bundle and the scripts, print the plan
#   scripts/gpu-check.sh              (on the GPU machine, from the repository root) run it
#
# Knobs (environment): OUT (default ./gpu-check-out), GPU_CHECK_BUDGET_S (460: sections not
# started by then are skipped), GPU_CHECK_BENCH_SHAPES (llama-3.2-1b,llama-3.1-8b).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUNDLE="$ROOT/target/gpu-check"
OUT="${OUT:-$ROOT/gpu-check-out}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-460}"
SHAPES="${GPU_CHECK_BENCH_SHAPES:-llama-3.2-1b,llama-3.1-8b}"
PROMPT_LEN=512
DECODE_TOKENS=128
CONCURRENCY=1,64,256
# Tokens per engine step: chunked prefill, as a server runs.
MAX_BATCHED_TOKENS=8192
STARTED=$SECONDS

log() { printf '[gpu-check] %s\n' "$*" >&2; }
die() { printf '[gpu-check] ERROR: %s\n' "$*" >&2; exit 1; }

# --- here: the bundle ------------------------------------------------------------------------
build_bundle() {
    cd "$ROOT" || die "no repository root"
    log "building modelfleet-engine and the CUDA test binary (release)"
    cargo build --release --locked -p modelfleet-engine --bin modelfleet-engine || die "engine build failed"
    local tests
    tests="$(cargo test --release --locked -p modelfleet-engine --test cuda --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"):
        print(m["executable"])')" || die "test build failed"
    [[ -x "$tests" ]] || die "no CUDA test binary was built"
    rm -rf "$BUNDLE"
    mkdir -p "$BUNDLE"
    strip -o "$BUNDLE/modelfleet-engine" target/release/modelfleet-engine
    strip -o "$BUNDLE/cuda-tests" "$tests"
    {
        echo "commit $(git rev-parse HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
        echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
        (cd "$BUNDLE" && sha256sum modelfleet-engine cuda-tests)
    } > "$BUNDLE/MANIFEST"
    log "bundle ready: $(du -sh "$BUNDLE" | cut -f1) in $BUNDLE (carry target/gpu-check)"
    cat "$BUNDLE/MANIFEST" >&2
}

# --- checks shared by --dry-run and the real run ---------------------------------------------
check_inputs() {
    local ok=1
    for f in modelfleet-engine cuda-tests MANIFEST; do
        [[ -e "$BUNDLE/$f" ]] || { log "missing $BUNDLE/$f (run scripts/gpu-check.sh --build here)"; ok=0; }
    done
    if [[ $ok == 1 ]]; then
        (cd "$BUNDLE" && sha256sum --quiet -c <(grep -E '^[0-9a-f]{64} ' MANIFEST)) \
            || { log "the bundle does not match its MANIFEST"; ok=0; }
        # Captured first: `grep -q` stopping early would fail the pipe under pipefail.
        local tests help
        tests="$("$BUNDLE/cuda-tests" --list 2>/dev/null)"
        help="$("$BUNDLE/modelfleet-engine" bench --help 2>/dev/null)"
        grep -q '^kernels::.*: test$' <<< "$tests" || { log "cuda-tests lists no kernel tests"; ok=0; }
        grep -q '^model::.*: test$' <<< "$tests" || { log "cuda-tests lists no model tests"; ok=0; }
        for flag in --backend --max-num-batched-tokens --gpu-memory-utilization; do
            grep -q -- "$flag" <<< "$help" || { log "modelfleet-engine bench has no $flag"; ok=0; }
        done
    fi
    for fixture in tiny-llama tiny-llama-bf16 tiny-qwen2; do
        [[ -f "$ROOT/engine/tests/fixtures/$fixture/reference.json" ]] \
            || { log "missing fixture $fixture"; ok=0; }
    done
    for script in transformers_bench.py report.py; do
        python3 -m py_compile "$ROOT/bench/gpu/$script" 2>/dev/null \
            || { log "bench/gpu/$script does not compile"; ok=0; }
    done
    IFS=, read -ra shapes <<< "$SHAPES"
    for shape in "${shapes[@]}"; do
        python3 "$ROOT/bench/gpu/transformers_bench.py" --shape "$shape" --dry-run > /dev/null 2>&1 \
            || { log "transformers_bench.py does not know shape $shape"; ok=0; }
    done
    [[ $ok == 1 ]]
}

# --- on the GPU machine -----------------------------------------------------------------------
# Directories holding the CUDA 13 libraries the engine loads (NVRTC, cuBLAS), from a CUDA
# install or from the NVIDIA wheels PyTorch depends on.
cuda_library_dirs() {
    {
        for d in "${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 \
                 /usr/local/cuda/targets/x86_64-linux/lib; do
            [[ -d "$d" ]] && echo "$d"
        done
        python3 - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()] + sys.path
for root in roots:
    for pattern in ("nvidia/*/lib", "nvidia/cu13/lib", "nvidia/*/lib64"):
        for d in glob.glob(os.path.join(root, pattern)):
            print(d)
EOF
    } | while read -r d; do
        compgen -G "$d/libnvrtc.so.13*" > /dev/null || compgen -G "$d/libcublas*.so.13*" > /dev/null || continue
        echo "$d"
    done | awk '!seen[$0]++'
}

find_sanitizer() {
    command -v compute-sanitizer && return
    for c in "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer \
             /usr/local/cuda/compute-sanitizer/compute-sanitizer /usr/local/cuda-13*/bin/compute-sanitizer; do
        [[ -x "$c" ]] && { echo "$c"; return; }
    done
    python3 -c 'import glob, site, sys
for r in site.getsitepackages() + sys.path:
    for c in glob.glob(r + "/nvidia/**/compute-sanitizer", recursive=True):
        print(c); raise SystemExit' 2>/dev/null | head -1
}

# Runs a section: name, seconds it may take, command. Records PASS/FAIL/SKIPPED in summary.md.
section() {
    local name="$1" limit="$2"; shift 2
    local elapsed=$((SECONDS - STARTED))
    if (( elapsed + 10 > BUDGET_S )); then
        echo "- $name: SKIPPED (budget of ${BUDGET_S}s spent at ${elapsed}s)" >> "$OUT/summary.md"
        log "$name: skipped, over budget"
        return
    fi
    (( limit > BUDGET_S - elapsed )) && limit=$((BUDGET_S - elapsed))
    log "$name (up to ${limit}s)"
    local t0=$SECONDS rc
    # The section runs as this script again, so that `timeout` can stop all of it.
    timeout --kill-after=10 "$limit" bash "${BASH_SOURCE[0]}" --section "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    local took=$((SECONDS - t0))
    if [[ $rc == 0 ]]; then
        echo "- $name: PASS (${took}s)" >> "$OUT/summary.md"
    elif [[ $rc == 124 || $rc == 137 ]]; then
        echo "- $name: FAIL (timed out after ${limit}s; see $name.log)" >> "$OUT/summary.md"
    elif [[ $rc == 77 ]]; then
        echo "- $name: SKIPPED ($(tail -1 "$OUT/$name.log"))" >> "$OUT/summary.md"
    else
        echo "- $name: FAIL (exit $rc after ${took}s; see $name.log)" >> "$OUT/summary.md"
    fi
    log "$name: $(tail -1 "$OUT/summary.md")"
}

environment() {
    nvidia-smi || true
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv || true
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "compute-sanitizer: ${SANITIZER:-not found}"
    cat "$BUNDLE/MANIFEST"
    python3 - <<'EOF'
import json, torch, transformers
p = torch.cuda.get_device_properties(0)
clock = getattr(p, "memory_clock_rate", 0)  # kHz
bus = getattr(p, "memory_bus_width", 0)     # bits
peak = 2 * clock * 1e3 * bus / 8 if clock and bus else None
# Known peaks where the properties do not say (bytes/s).
known = {"H100 80GB HBM3": 3.35e12, "H200": 4.8e12, "A100-SXM4-80GB": 2.039e12}
if not peak:
    peak = next((v for k, v in known.items() if k in p.name), None)
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}")
print(json.dumps({"name": p.name, "memory": p.total_memory, "peak_bandwidth_bytes_per_s": peak}))
import os
json.dump({"name": p.name, "peak_bandwidth_bytes_per_s": peak}, open(os.path.join(os.environ["OUT"], "device.json"), "w"))
EOF
    [[ -n "$LD_LIBRARY_PATH" ]] || { echo "no directory with libnvrtc.so.13 / libcublas.so.13 found"; return 1; }
}

cuda_tests() {
    MODELFLEET_REQUIRE_GPU=1 MODELFLEET_FIXTURES="$ROOT/engine/tests/fixtures" \
        "$BUNDLE/cuda-tests" --test-threads 1 --nocapture "$@"
}

sanitizer() {
    [[ -n "$SANITIZER" ]] || { echo "compute-sanitizer not found on this machine"; return 77; }
    MODELFLEET_REQUIRE_GPU=1 MODELFLEET_FIXTURES="$ROOT/engine/tests/fixtures" \
        "$SANITIZER" --tool memcheck --error-exitcode 3 --leak-check no \
        "$BUNDLE/cuda-tests" --test-threads 1 --exact \
        kernels::rms_norm_silu_mul_and_bias_equal_the_cpu_within_bf16_rounding \
        kernels::logits_rows_are_gathered_exactly \
        kernels::tokens_picked_on_the_gpu_equal_the_host_samplers_picks \
        model::llama_on_the_gpu_matches_transformers_fed_whole_token_by_token_and_in_chunks \
        model::recorded_decode_graphs_give_what_eager_steps_give_and_pick_on_the_gpu
}

bench_shape() {
    local shape="$1"
    local dir="$WORK/$shape"
    python3 "$ROOT/bench/gpu/transformers_bench.py" --shape "$shape" --save "$dir" \
        --prompt-len $PROMPT_LEN --decode-tokens $DECODE_TOKENS --concurrency $CONCURRENCY \
        > "$OUT/40-bench-$shape.transformers.jsonl" || return 1
    "$BUNDLE/modelfleet-engine" bench --backend cuda --model "$dir" \
        --prompt-len $PROMPT_LEN --decode-tokens $DECODE_TOKENS --concurrency $CONCURRENCY \
        --max-num-batched-tokens $MAX_BATCHED_TOKENS --repeats 1 \
        > "$OUT/40-bench-$shape.engine.jsonl" || return 1
    python3 "$ROOT/bench/gpu/report.py" --shape "$shape" \
        --engine "$OUT/40-bench-$shape.engine.jsonl" \
        --baseline "$OUT/40-bench-$shape.transformers.jsonl" \
        --device "$OUT/device.json" | tee "$OUT/40-bench-$shape.md"
    rm -rf "$dir"
}

run_on_device() {
    mkdir -p "$OUT"
    check_inputs || die "the inputs are not ready (see above)"
    LD_LIBRARY_PATH="$(cuda_library_dirs | paste -sd: -)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
    SANITIZER="$(find_sanitizer || true)"
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT
    export OUT SANITIZER WORK
    {
        echo "# CUDA backend check"
        echo
        echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(head -1 "$BUNDLE/MANIFEST")"
        echo
    } > "$OUT/summary.md"
    section 00-environment 60 environment
    section 10-kernels 120 cuda_tests kernels::
    section 20-model 90 cuda_tests model::
    section 30-sanitizer 120 sanitizer
    IFS=, read -ra shapes <<< "$SHAPES"
    for shape in "${shapes[@]}"; do
        section "40-bench-$shape" 300 bench_shape "$shape"
    done
    {
        echo
        echo "## Benchmark"
        echo
        cat "$OUT"/40-bench-*.md 2>/dev/null || echo "(no benchmark section finished)"
    } >> "$OUT/summary.md"
    log "done in $((SECONDS - STARTED))s; everything is in $OUT"
    cat "$OUT/summary.md"
    ! grep -q ': FAIL' "$OUT/summary.md"
}

case "${1:-run}" in
    --build) build_bundle ;;
    --dry-run)
        bash -n "${BASH_SOURCE[0]}" || die "this script does not parse"
        check_inputs || die "not ready: see above"
        log "inputs ready; on the GPU machine this runs: 00-environment, 10-kernels ($("$BUNDLE/cuda-tests" --list 2>/dev/null | grep -c '^kernels::') tests), 20-model ($("$BUNDLE/cuda-tests" --list 2>/dev/null | grep -c '^model::') tests), 30-sanitizer, 40-bench for $SHAPES; budget ${BUDGET_S}s; output in \$OUT"
        ;;
    run) run_on_device ;;
    --section)
        shift
        case "$1" in
            environment | cuda_tests | sanitizer | bench_shape) "$@" ;;
            *) die "no section $1" ;;
        esac
        ;;
    *) die "usage: scripts/gpu-check.sh [--build | --dry-run]" ;;
esac
