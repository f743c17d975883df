"""The GPU benchmark's report: modelfleet-engine against transformers on one device, per
model shape, as a Markdown section. Usage:

  report.py --shape NAME --engine ENGINE.jsonl --baseline TRANSFORMERS.jsonl --device DEVICE.json

DEVICE.json: {"name", "peak_bandwidth_bytes_per_s"} (from torch's device properties).
Bandwidth utilisation of single-stream decode: tokens/s × bytes read per token (the weights
once, plus the KV cache at the mean decode context) over the device's peak.
"""

import argparse
import json

# KV bytes per token of context: layers × 2 (K, V) × KV heads × head_dim × 2 (bf16).
KV_BYTES_PER_TOKEN = {"llama-3.2-1b": 16 * 2 * 8 * 64 * 2, "llama-3.1-8b": 32 * 2 * 8 * 128 * 2}
AIMS = {"llama-3.1-8b": {"roofline": 0.80, "c256_vs_transformers": 7.0}}


def rows(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                row = json.loads(line)
                out[row["concurrency"]] = row
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", required=True)
    p.add_argument("--engine", required=True)
    p.add_argument("--baseline", required=True)
    p.add_argument("--device", required=True)
    a = p.parse_args()
    engine, base = rows(a.engine), rows(a.baseline)
    device = json.load(open(a.device))
    peak = device.get("peak_bandwidth_bytes_per_s") or 0
    print(f"### {a.shape} (random-initialised, bf16) on {device.get('name', '?')}\n")
    print("| concurrency | side | decode tok/s | output tok/s | TTFT p50 s | TTFT p99 s |")
    print("|---|---|---|---|---|---|")
    for c in sorted(set(engine) | set(base)):
        for name, side in (("modelfleet-engine", engine), ("transformers", base)):
            r = side.get(c)
            if r:
                print(f"| {c} | {name} | {r['decode_tokens_per_s']:.1f} | {r['output_tokens_per_s']:.1f} "
                      f"| {r['ttft_p50_s']:.3f} | {r['ttft_p99_s']:.3f} |")
    print()
    single = engine.get(1)
    if single and peak:
        r = single
        context = r["prompt_len"] + r["decode_tokens"] / 2
        per_token = r["weight_bytes"] + KV_BYTES_PER_TOKEN.get(a.shape, 0) * context
        utilisation = r["decode_tokens_per_s"] * per_token / peak
        roofline = peak / per_token
        print(f"- single-stream decode: {r['decode_tokens_per_s']:.1f} tok/s = "
              f"{100 * utilisation:.1f}% of the {peak / 1e12:.2f} TB/s peak "
              f"(roofline {roofline:.0f} tok/s at {per_token / 1e9:.2f} GB read per token)")
        aim = AIMS.get(a.shape, {}).get("roofline")
        if aim:
            print(f"  - aim ≥ {100 * aim:.0f}% of roofline: {'met' if utilisation >= aim else 'NOT met'}")
    for c in sorted(engine):
        if c in base and base[c]["output_tokens_per_s"] > 0:
            ratio = engine[c]["output_tokens_per_s"] / base[c]["output_tokens_per_s"]
            line = f"- concurrency {c}: output tok/s {ratio:.2f}× transformers"
            aim = AIMS.get(a.shape, {}).get("c256_vs_transformers") if c == 256 else None
            if aim:
                line += f" (aim ≥ {aim:.0f}×: {'met' if ratio >= aim else 'NOT met'})"
            print(line)
    print()


if __name__ == "__main__":
    main()
