#!/usr/bin/env python3
"""Makes engine/tests/fixtures/demo-model-llama-cpp.json: llama.cpp's greedy continuations of
the demo model (SmolLM2-135M-Instruct, Q4_1 GGUF), the reference the engine's quantised path
is compared with.

Starts llama-server on loopback with the demo GGUF and asks /completion, for each prompt (those
of demo-model.json and a few more), for 32 tokens, greedy (temperature 0, top-k 1, no
repetition penalty, EOS ignored as the engine's golden test does), with the 5 most likely
tokens and their probabilities at every step (`n_probs`, softmax of the raw logits, before
sampling), so a test can tell a near-tie from a real disagreement. The prompt is sent as text
and llama.cpp tokenizes it as it does by default (for this model: no BOS, add_bos_token is
false; special tokens parsed); its token ids are recorded and checked against transformers'
tokenizer of the same GGUF.

Records llama.cpp's build, its CPU variant and thread count: llama.cpp quantises activations
to 8 bits per block for the integer dot products (Q8_1 against the Q4_1 weights, Q8_0 against
the Q8_0 output projection), which is what the engine's quantised path mirrors, and its KV
cache is 16-bit.

Usage: make_llama_cpp_greedy.py OUT.json DEMO_MODEL_DIR LLAMA_CPP_BIN THREADS
Run: scripts/golden/make_llama_cpp_fixtures.sh greedy
"""
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request

OUT, DEMO_DIR, LLAMA_BIN, THREADS = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
FIXTURES = os.path.dirname(os.path.abspath(OUT))
GENERATED = 32
TOP = 5
EXTRA_PROMPTS = [
    "The quick brown fox jumps over the lazy dog. The",
    "Water boils at a temperature of",
    "import numpy as np\nimport",
    "<|im_start|>user\nName three fruits.<|im_end|>\n<|im_start|>assistant\n",
]
SERVER_ARGS = ["-c", "1024", "-np", "1", "--seed", "0", "--no-webui", "--no-warmup"]
START_DEADLINE_S = 120
REQUEST_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
        return json.loads(response.read())


def wait_healthy(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"llama-server exited {server.returncode} before it was ready")
        try:
            if call(base, "/health").get("status") == "ok":
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"llama-server was not healthy within {START_DEADLINE_S} s")


def continuation(base: str, prompt: str) -> dict:
    ids = call(base, "/tokenize", {"content": prompt, "add_special": True, "parse_special": True})["tokens"]
    out = call(base, "/completion", {
        "prompt": prompt,
        "n_predict": GENERATED,
        "temperature": 0.0,
        "top_k": 1,
        "top_p": 1.0,
        "min_p": 0.0,
        "repeat_penalty": 1.0,
        "ignore_eos": True,
        "n_probs": TOP,
        "post_sampling_probs": False,
        "cache_prompt": False,
        "return_tokens": True,
    })
    if out["tokens_evaluated"] != len(ids):
        raise SystemExit(f"llama.cpp evaluated {out['tokens_evaluated']} prompt tokens of {prompt!r}, /tokenize gave {len(ids)}")
    steps = out["completion_probabilities"]
    generated = [s["id"] for s in steps]
    if generated != out["tokens"] or len(generated) != GENERATED:
        raise SystemExit(f"llama.cpp's tokens and probabilities disagree for {prompt!r}")
    return {
        "prompt": prompt,
        "prompt_ids": ids,
        "generated_ids": generated,
        # At each step: the TOP most likely tokens, most likely first, with probabilities.
        "top": [[{"id": t["id"], "p": round(math.exp(t["logprob"]), 6)} for t in s["top_logprobs"]] for s in steps],
    }


def transformers_ids(prompts: list[str]) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(DEMO_DIR, gguf_file="model.gguf")
    return [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]


def main() -> int:
    with open(os.path.join(FIXTURES, "demo-model.json")) as f:
        prompts = [c["prompt"] for c in json.load(f)["continuations"]] + EXTRA_PROMPTS
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [os.path.join(LLAMA_BIN, "llama-server"), "-m", os.path.join(DEMO_DIR, "model.gguf"),
               "--host", "127.0.0.1", "--port", str(port), "-t", str(THREADS), "-tb", str(THREADS), *SERVER_ARGS]
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"llama-server-{port}.log"), "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(base, server)
        props = call(base, "/props")
        continuations = [continuation(base, p) for p in prompts]
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    for case, ids in zip(continuations, transformers_ids(prompts)):
        if case["prompt_ids"] != ids:
            case["transformers_prompt_ids"] = ids  # only where the two tokenizers disagree
    with open(os.path.join(LLAMA_BIN, "BUILD")) as f:
        build = dict(line.rstrip("\n").split(" ", 1) for line in f if " " in line)
    record = {
        "llama_cpp": props.get("build_info"),
        "llama_cpp_bin": build.get("llama-cpp-bin"),
        "variant": build.get("variant"),
        "compiler": build.get("compiler"),
        "threads": THREADS,
        "server_args": " ".join(SERVER_ARGS),
        "sampling": "temperature 0, top_k 1, top_p 1, min_p 0, repeat_penalty 1, ignore_eos; prompt as text, "
                    "llama.cpp's default special-token handling (no BOS for this model)",
        "probabilities": f"top {TOP} per step, softmax of the raw logits (n_probs, before sampling), rounded to 6 decimals",
        "arithmetic": "weights as stored (Q4_1, Q8_0 output projection), activations quantised per block to "
                      "Q8_1 / Q8_0 for integer dot products, f16 KV cache",
        "continuations": continuations,
    }
    with open(OUT, "w") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"fixtures: {OUT} ({len(continuations)} prompts)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
