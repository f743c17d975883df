"""Prints the engine benchmark as a Markdown table: engine vs transformers, as ratios.

Usage: engine_cpu_report.py ENGINE.jsonl TRANSFORMERS.jsonl
"""

import json
import sys


def load(path: str) -> dict[int, dict]:
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                row = json.loads(line)
                rows[row["concurrency"]] = row
    return rows


def main() -> int:
    engine, baseline = load(sys.argv[1]), load(sys.argv[2])
    print("| concurrency | metric | modelfleet-engine | transformers | ratio |")
    print("|---:|---|---:|---:|---:|")
    for c in sorted(engine):
        if c not in baseline:
            continue
        for key, label in (
            ("prefill_tokens_per_s", "prefill tokens/s"),
            ("decode_tokens_per_s", "decode tokens/s"),
        ):
            e, b = engine[c][key], baseline[c][key]
            print(f"| {c} | {label} | {e:.1f} | {b:.1f} | {e / b:.2f}x |")
        e, b = engine[c]["ttft_s"], baseline[c]["ttft_s"]
        print(f"| {c} | time to first token (s, lower is better) | {e:.3f} | {b:.3f} | {b / e:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
