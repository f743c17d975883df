#!/usr/bin/env python3
"""The chat templates of the supported families, rendered by transformers' apply_chat_template.

Templates come from the files the model families ship them in, as available offline: the
tokenizer.chat_template of a GGUF vocabulary (Qwen2, Phi-3, the demo model SmolLM2), the
templates llama.cpp keeps from the models' tokenizer_config.json (models/templates/*.jinja and
tests/test-chat-template.cpp), and, for the two families neither carries (Llama 2, Gemma 3),
copies of their tokenizer_config.json's template kept in the fixture directory.

Writes OUT/reference.json: per family, the template file, its bos/eos tokens, and for each
conversation the prompt transformers renders with add_generation_prompt (or the error it raises).
`strftime_now` reads a fixed date, so the references do not depend on the day they were made.

Run: scripts/golden/tokenizer_fixtures.sh (sets up the pinned environment in the cache).
"""
import ast
import json
import os
import sys
from datetime import datetime

import transformers
from gguf import GGUFReader
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast
from transformers.utils import chat_template_utils

OUT, LLAMA_CPP, VOCAB_DIR, DEMO_GGUF = sys.argv[1:5]
TODAY = datetime(2025, 1, 15, 9, 30)


class FixedClock(datetime):
    @classmethod
    def now(cls, tz=None):
        return TODAY


# transformers' strftime_now reads `datetime.now()` from its module.
chat_template_utils.datetime = FixedClock


def gguf_template(path):
    field = GGUFReader(path).fields["tokenizer.chat_template"]
    return field.contents()


def llama_cpp_file(name):
    with open(os.path.join(LLAMA_CPP, "models", "templates", name), encoding="utf-8") as f:
        return f.read()


def llama_cpp_test_template(name):
    """A template kept as a C++ string literal in llama.cpp's chat template test."""
    with open(os.path.join(LLAMA_CPP, "tests", "test-chat-template.cpp"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    at = next(i for i, line in enumerate(lines) if f'/* .name= */ "{name}' in line)
    literal = lines[at + 1].split("/* .template_str= */", 1)[1].strip().rstrip(",")
    return ast.literal_eval(literal)  # C and Python agree on these escapes (\n, \\, \")


def kept(name):
    with open(os.path.join(OUT, name), encoding="utf-8") as f:
        return f.read()


# family: (template source, bos, eos) -- the tokens as the family's tokenizer spells them.
FAMILIES = {
    "llama-2": (lambda: kept("llama-2.jinja"), "<s>", "</s>"),
    "llama-3.1": (lambda: llama_cpp_file("meta-llama-Llama-3.1-8B-Instruct.jinja"), "<|begin_of_text|>", "<|eot_id|>"),
    "llama-3.2": (lambda: llama_cpp_file("meta-llama-Llama-3.2-3B-Instruct.jinja"), "<|begin_of_text|>", "<|eot_id|>"),
    "mistral-7b-v0.2": (lambda: llama_cpp_test_template("mistralai/Mistral-7B-Instruct-v0.2 (NOTE: Old pre-v1"), "<s>", "</s>"),
    "mistral-nemo": (lambda: llama_cpp_file("mistralai-Mistral-Nemo-Instruct-2407.jinja"), "<s>", "</s>"),
    "qwen2": (lambda: gguf_template(os.path.join(VOCAB_DIR, "ggml-vocab-qwen2.gguf")), None, "<|im_end|>"),
    "qwen2.5": (lambda: llama_cpp_file("Qwen-Qwen2.5-7B-Instruct.jinja"), None, "<|im_end|>"),
    "gemma-2": (lambda: llama_cpp_file("google-gemma-2-2b-it.jinja"), "<bos>", "<eos>"),
    "gemma-3": (lambda: kept("gemma-3.jinja"), "<bos>", "<eos>"),
    "phi-3": (lambda: gguf_template(os.path.join(VOCAB_DIR, "ggml-vocab-phi-3.gguf")), "<s>", "<|endoftext|>"),
    "phi-3.5": (lambda: llama_cpp_file("microsoft-Phi-3.5-mini-instruct.jinja"), "<s>", "<|endoftext|>"),
    "smollm2": (lambda: gguf_template(DEMO_GGUF), "<|im_start|>", "<|im_end|>"),
}

SYSTEM = {"role": "system", "content": "You are a terse assistant."}
CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello!"}],
    "system_user": [SYSTEM, {"role": "user", "content": "What is 2+2?"}],
    "multi_turn": [SYSTEM,
                   {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "  Hello! How can I help?  "},
                   {"role": "user", "content": "Tell me a joke.\nMake it short."}],
    "multi_turn_no_system": [{"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": "Hello."},
                             {"role": "user", "content": "Bye"}],
    "assistant_first": [{"role": "assistant", "content": "I speak first."},
                        {"role": "user", "content": "Hi"}],
}


def tokenizer_with(bos, eos):
    """A tokenizer whose only job is to hand its special tokens to the template."""
    vocab = {t: i for i, t in enumerate(t for t in (bos, eos, "x") if t)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=[])),
                                   bos_token=bos, eos_token=eos)


families = {}
for family, (source, bos, eos) in FAMILIES.items():
    template = source()
    file = f"{family}.jinja"
    with open(os.path.join(OUT, file), "w", encoding="utf-8") as f:
        f.write(template)
    tokenizer = tokenizer_with(bos, eos)
    rendered = {}
    for name, messages in CONVERSATIONS.items():
        try:
            prompt = tokenizer.apply_chat_template(
                messages, chat_template=template, tokenize=False, add_generation_prompt=True)
            rendered[name] = {"messages": messages, "prompt": prompt}
        except Exception as e:  # the template refuses the conversation
            rendered[name] = {"messages": messages, "error": str(e)}
    families[family] = {"template": file, "bos_token": bos or "", "eos_token": eos or "",
                        "conversations": rendered}
    print(f"chat template fixtures: {family}", file=sys.stderr)

with open(os.path.join(OUT, "reference.json"), "w", encoding="utf-8") as f:
    json.dump({"transformers": transformers.__version__, "today": TODAY.isoformat(),
               "families": families}, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(f"chat template fixtures: wrote {os.path.join(OUT, 'reference.json')}", file=sys.stderr)
