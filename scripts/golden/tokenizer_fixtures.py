#!/usr/bin/env python3
"""Token ids that transformers and llama.cpp give texts, from the same GGUF vocabularies.

For each vocabulary (llama.cpp's ggml-vocab-NAME.gguf, and the demo model SmolLM2) the texts
are llama.cpp's test texts plus a few that write the vocabulary's own special tokens.
Writes, in OUT:
  transformers.json  ids from `AutoTokenizer.from_pretrained(dir, gguf_file=...)`, without and
                     with the special tokens the tokenizer adds.
  llama-cpp.json     ids from llama.cpp's `llama_tokenize` (scripts/golden/llama_cpp_tokenize.cpp),
                     when the tool is given: special tokens parsed, not parsed, and as a prompt;
                     and the tokens llama.cpp ends generation at.

Run: scripts/golden/tokenizer_fixtures.sh (sets up the pinned environment in the cache).
"""
import json
import os
import subprocess
import sys
import tempfile

import transformers
from transformers import AutoTokenizer

OUT, DEMO_GGUF, LLAMA_CPP_TOOL, VOCABS = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
SEPARATOR = "\n__ggml_vocab_test__\n"


def llama_cpp_texts(name):
    with open(os.path.join(OUT, f"ggml-vocab-{name}.gguf.inp"), encoding="utf-8") as f:
        texts = f.read().split(SEPARATOR)
    # The file ends with a separator, which leaves an empty last piece.
    return texts[:-1] if texts and texts[-1] == "" else texts


def special_texts(tokenizer):
    """Texts that write the vocabulary's own special tokens, each to come out as one token."""
    bos, eos = tokenizer.bos_token or "", tokenizer.eos_token or ""
    others = [t for t in tokenizer.all_special_tokens if t not in (bos, eos, tokenizer.unk_token)]
    a, b, c = (others + [eos, eos, eos])[:3]
    return [f"{bos}Hello world{eos}", f"Hi{eos}\n{bos} there", f"{eos}{eos}x",
            f"{a}user\nhi {b} ok{c}\n", "plain text"]


def references(directory, file, texts):
    path = os.path.join(directory, file)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=file)
    special = special_texts(tokenizer)
    hf = {
        "texts": [{"text": t, "ids": tokenizer.encode(t, add_special_tokens=False)} for t in texts],
        "special": [{"text": t,
                     "ids": tokenizer.encode(t, add_special_tokens=False),
                     "ids_with_special_tokens": tokenizer.encode(t, add_special_tokens=True)}
                    for t in special],
    }
    if not LLAMA_CPP_TOOL:
        return hf, None
    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as f:
        json.dump(texts + special, f, ensure_ascii=False)
        f.flush()
        run = subprocess.run([LLAMA_CPP_TOOL, path, f.name], check=True, capture_output=True, text=True)
    out = json.loads(run.stdout)
    ids = out["cases"]
    return hf, {"end_of_generation": out["end_of_generation"], "texts": ids[:len(texts)],
                "special": ids[len(texts):]}


sources = {name: (OUT, f"ggml-vocab-{name}.gguf", llama_cpp_texts(name)) for name in VOCABS}
sources["smollm2-demo"] = (os.path.dirname(DEMO_GGUF), os.path.basename(DEMO_GGUF), llama_cpp_texts("llama-bpe"))
hf_all, cpp_all = {}, {}
for name, source in sources.items():
    hf_all[name], cpp_all[name] = references(*source)
    print(f"tokenizer fixtures: {name}", file=sys.stderr)


def write(file, content):
    with open(os.path.join(OUT, file), "w", encoding="utf-8") as f:
        json.dump(content, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"tokenizer fixtures: wrote {os.path.join(OUT, file)}", file=sys.stderr)


write("transformers.json", {"transformers": transformers.__version__, "vocabularies": hf_all})
if LLAMA_CPP_TOOL:
    write("llama-cpp.json", {"vocabularies": cpp_all})
