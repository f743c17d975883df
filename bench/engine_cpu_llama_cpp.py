"""llama.cpp on the CPU: a baseline of the engine benchmark.

Runs llama.cpp's own benchmark tools on the same GGUF file with the same thread count and
prints one JSON object per concurrency on stdout, in the shape the other runners print:

- concurrency 1: `llama-bench`. Prefill is `-p P -n 0` (P tokens in one batch, logits of
  the last); decode is `-p 0 -n D -d P`: D tokens generated one at a time after a context of
  P tokens, so each step attends over the same KV length as in the other systems. Time to
  first token is the prefill's time (llama-bench samples no token).
- concurrency c > 1: `llama-batched-bench -npp P -ntg D -npl c`: c distinct prompts of P
  tokens prefilled together, then D steps that each decode one token of all c sequences.
  Its time to first token is the time to prefill all c prompts, as in the other runners.

Both tools use random token ids for the prompts (the other runners use fixed distinct ids);
for a dense model only the count matters. Each measurement runs --repeats times and the best
figures are kept, as in the other runners (llama-bench's own -r repeats inside one process
after its warm-up run; llama-batched-bench is started once per repeat).
"""

import argparse
import json
import os
import subprocess
import sys


# Bytes per KV cache element of llama.cpp's cache types (a q8_0 block: 32 values in 34 bytes).
KV_ELEMENT_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}
FLASH_ATTN = {-1: "auto", 0: "off", 1: "on"}


def run_json(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"llama.cpp: {' '.join(command)} exited {result.returncode}")
    return result.stdout


def llama_bench(args, extra: list[str]) -> dict:
    out = run_json(
        [os.path.join(args.bin_dir, "llama-bench"), "-m", args.model, "-t", str(args.threads),
         "-r", str(max(args.repeats, 1)), "-o", "json", *extra]
    )
    tests = json.loads(out)
    if len(tests) != 1:
        raise SystemExit(f"llama-bench: expected one test, got {len(tests)}")
    return tests[0]


def single_stream(args) -> tuple[dict, dict]:
    prefill = llama_bench(args, ["-p", str(args.prompt_len), "-n", "0"])
    decode = llama_bench(args, ["-p", "0", "-n", str(args.decode_tokens), "-d", str(args.prompt_len)])
    row = {
        "side": "llama.cpp",
        "concurrency": 1,
        "prompt_len": args.prompt_len,
        "decode_tokens": args.decode_tokens,
        "prefill_tokens_per_s": max(prefill["samples_ts"]),
        "decode_tokens_per_s": max(decode["samples_ts"]),
        "ttft_s": min(prefill["samples_ns"]) / 1e9,
        "weight_bytes": prefill["model_size"],
        "kv_bytes_per_element": KV_ELEMENT_BYTES.get(prefill.get("type_k"), 2.0),
        "tool": "llama-bench",
    }
    info = {
        "build": f"{prefill['build_number']} ({prefill['build_commit']})",
        "cpu_info": prefill["cpu_info"],
        "backends": prefill["backends"],
        "flash_attn": FLASH_ATTN.get(prefill.get("flash_attn"), prefill.get("flash_attn")),
        "type_k": prefill.get("type_k"),
        "n_batch": prefill.get("n_batch"),
        "n_ubatch": prefill.get("n_ubatch"),
        "model_type": prefill.get("model_type"),
    }
    return row, info


def batched(args, levels: list[int], single: dict) -> list[dict]:
    if not levels:
        return []
    per_sequence = args.prompt_len + args.decode_tokens
    command = [
        os.path.join(args.bin_dir, "llama-batched-bench"), "-m", args.model,
        "-t", str(args.threads), "-tb", str(args.threads),
        "-c", str(max(levels) * per_sequence),
        "-npp", str(args.prompt_len), "-ntg", str(args.decode_tokens),
        "-npl", ",".join(str(c) for c in levels),
        "--output-format", "jsonl",
    ]
    best: dict[int, dict] = {}
    for _ in range(max(args.repeats, 1)):
        out = run_json(command)
        for line in out.splitlines():
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            c = r["pl"]
            row = {
                "side": "llama.cpp",
                "concurrency": c,
                "prompt_len": r["pp"],
                "decode_tokens": r["tg"],
                "prefill_tokens_per_s": r["speed_pp"],
                "decode_tokens_per_s": r["speed_tg"],
                "ttft_s": r["t_pp"],
                # The same model and cache types as llama-bench's run (both tools' defaults).
                "weight_bytes": single["weight_bytes"],
                "kv_bytes_per_element": single["kv_bytes_per_element"],
                "tool": "llama-batched-bench",
                "flash_attn": FLASH_ATTN.get(r["flash_attn"], r["flash_attn"]),
            }
            if c in best:
                b = best[c]
                row["prefill_tokens_per_s"] = max(b["prefill_tokens_per_s"], row["prefill_tokens_per_s"])
                row["decode_tokens_per_s"] = max(b["decode_tokens_per_s"], row["decode_tokens_per_s"])
                row["ttft_s"] = min(b["ttft_s"], row["ttft_s"])
            best[c] = row
    missing = [c for c in levels if c not in best]
    if missing:
        raise SystemExit(f"llama-batched-bench printed no result for concurrency {missing}")
    return [best[c] for c in levels]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bin-dir", required=True, help="where llama-bench and llama-batched-bench are")
    parser.add_argument("--model", required=True, help="the GGUF file")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    parser.add_argument("--info-out", help="a JSON file to write llama.cpp's build and settings to")
    args = parser.parse_args()

    levels = [int(x) for x in args.concurrency.split(",")]
    single, info = single_stream(args)
    rows = [single] if 1 in levels else []
    rows += batched(args, [c for c in levels if c != 1], single)
    for row in sorted(rows, key=lambda r: levels.index(r["concurrency"])):
        print(json.dumps(row), flush=True)
    if args.info_out:
        with open(args.info_out, "w") as f:
            json.dump(info, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
