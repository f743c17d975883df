#!/usr/bin/env python3
"""Makes the engine's quantised GGUF fixtures: a tiny random-initialised Llama written as
llama.cpp writes Llama, quantised by llama.cpp into the types people download, each with the
references an engine is checked against.

Outputs, under OUT (engine/tests/fixtures/gguf-quantized/):
  tiny-llama-<type>.gguf   for type in Q8_0, Q4_0, Q4_1, Q6_K (--pure: every matrix of that
                           type) and Q4_K_M, Q5_K_M (llama.cpp's own mix of K-quants)
  tiny-llama-<type>.json   token_ids: a 24-token prompt; logits: transformers' float32 logits
                           at every position with that very GGUF loaded (gguf_file=, which
                           dequantises with gguf-py): the reference of the dequantised f32 path;
                           tensors: per tensor its GGUF type, shape (ggml order: ne0 first) and
                           sampled (index into the flat row-major data, value) pairs of gguf-py's
                           dequantisation (values are float32s written as their shortest
                           round-trip decimal: parse them as f32 and compare exactly).

How: transformers builds the model (hidden 256, intermediate 512, 2 layers, 4 heads of 64,
2 KV heads; make_fixtures.py's byte-level tokenizer with one merge, 257 tokens; every row a
multiple of 256 long so the K-quants apply) and saves it as float32 safetensors; llama.cpp's
convert_hf_to_gguf.py writes the f32 GGUF (Q/K rows permuted for llama.cpp's RoPE, as for any
Llama), with two of its tokenizer probes answered (see CONVERT); llama-quantize makes each
type from it.

Usage: make_quantized_fixtures.py OUT LLAMA_CPP_SRC LLAMA_CPP_BIN
Run: scripts/golden/make_llama_cpp_fixtures.sh quantized (the pinned environment and llama.cpp).
Pinned: torch==2.15.0 transformers==5.23.0 gguf==0.19.0
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

OUT, LLAMA_SRC, LLAMA_BIN = sys.argv[1:4]
PROMPT = "A tiny model's 24 tokens"  # one byte, one token
SAMPLES_PER_TENSOR = 200
# (file type name, llama-quantize arguments)
TYPES = [
    ("Q8_0", ["--pure"]),
    ("Q4_0", ["--pure"]),
    ("Q4_1", ["--pure"]),
    ("Q6_K", ["--pure"]),
    ("Q4_K_M", []),
    ("Q5_K_M", []),
]

# The converter, run as llama.cpp ships it, with two of its tokenizer probes answered: the
# byte-level tokenizer's pre-tokenizer is named "gpt-2", llama.cpp's name for GPT-2's split (its hash of a test string is not in the
# converter's list of known tokenizers), and the SentencePiece probe reports the missing
# tokenizer.model as it would after importing sentencepiece (not installed here, not needed).
CONVERT = """
import runpy, sys
src = sys.argv[1]
sys.argv = [src + "/convert_hf_to_gguf.py", *sys.argv[2:]]
sys.path[:0] = [src, src + "/gguf-py"]
import conversion.base

def no_sentencepiece(self):
    raise FileNotFoundError("no tokenizer.model")

conversion.base.TextModel._set_vocab_sentencepiece = no_sentencepiece
conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def byte_level_tokenizer():
    # make_fixtures.py's byte-level tokenizer (256 byte tokens) plus one merge, of two spaces:
    # GGUF readers (llama.cpp's, the engine's) require tokenizer.ggml.merges, which the
    # converter writes only when there are merges. The prompt has no two spaces in a row.
    byte_to_char = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(byte_to_char))}
    vocab["ĠĠ"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "Ġ")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
        raise SystemExit(f"fixtures: {command[0]} exited {result.returncode}")
    return result


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=64, vocab_size=257, max_position_embeddings=256,
                         rms_norm_eps=1e-5, rope_theta=10000.0, initializer_range=0.05,
                         tie_word_embeddings=False, bos_token_id=None, eos_token_id=None)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # norms initialise to ones; make them matter
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    return model.eval()


def write_f32_gguf(work: str) -> str:
    hf_dir = os.path.join(work, "hf")
    tiny_llama().save_pretrained(hf_dir, safe_serialization=True)
    byte_level_tokenizer().save(os.path.join(hf_dir, "tokenizer.json"))
    path = os.path.join(work, "tiny-llama-F32.gguf")
    run([sys.executable, "-c", CONVERT, LLAMA_SRC, hf_dir, "--outtype", "f32", "--outfile", path])
    return path


def dequantised_samples(path: str) -> list[dict]:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    tensors = []
    for t in GGUFReader(path).tensors:
        values = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        assert values.size == int(t.n_elements), t.name
        # Seeded by the tensor's name, so a file's samples do not move when another changes.
        rng = np.random.default_rng(zlib.crc32(t.name.encode()))
        count = min(SAMPLES_PER_TENSOR, values.size)
        index = np.unique(np.concatenate([[0, values.size - 1], rng.choice(values.size, count - 2, replace=False)]))
        tensors.append({
            "name": t.name,
            "type": t.tensor_type.name,
            "shape": [int(d) for d in t.shape],
            "index": [int(i) for i in index],
            "value": [float(str(np.float32(values[i]))) for i in index],
        })
    return tensors


def reference(path: str, token_ids: list[int]) -> list[list[float]]:
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                 dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([token_ids])).logits[0]
    return [[round(v, 6) for v in row] for row in logits.tolist()]


def llama_cpp_build() -> str:
    out = run([os.path.join(LLAMA_BIN, "llama-server"), "--version"])  # llama-quantize has no --version
    return (out.stdout + out.stderr).strip().splitlines()[0]


def main() -> int:
    torch.set_num_threads(1)  # one thread: the reference logits do not depend on the machine's cores
    os.makedirs(OUT, exist_ok=True)
    token_ids = byte_level_tokenizer().encode(PROMPT).ids
    assert len(token_ids) == 24, len(token_ids)
    build = llama_cpp_build()
    from importlib.metadata import version

    with tempfile.TemporaryDirectory() as work:
        f32 = write_f32_gguf(work)
        for name, extra in TYPES:
            path = os.path.join(OUT, f"tiny-llama-{name}.gguf")
            run([os.path.join(LLAMA_BIN, "llama-quantize"), *extra, f32, path, name, "1"])
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            record = {
                "file": os.path.basename(path),
                "sha256": digest,
                "quantize": f"llama-quantize {' '.join(extra + [name])}".replace("  ", " "),
                "llama_cpp": build,
                "converter": "convert_hf_to_gguf.py --outtype f32 (pre-tokenizer named gpt-2)",
                "dequantised_by": f"gguf-py {version('gguf')}",
                "transformers": version("transformers"),
                "torch": torch.__version__,
                "prompt": PROMPT,
                "token_ids": token_ids,
                "logits": reference(path, token_ids),
                "tensors": dequantised_samples(path),
            }
            with open(os.path.join(OUT, f"tiny-llama-{name}.json"), "w") as f:
                json.dump(record, f, separators=(",", ":"))
                f.write("\n")
            print(f"fixtures: {path} ({os.path.getsize(path)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
