#!/usr/bin/env python3
"""Makes the engine's golden fixtures with Hugging Face transformers on the CPU.

Outputs, under engine/tests/fixtures/:
  tiny-llama/, tiny-llama-bf16/, tiny-qwen2/ (sharded)  random-initialised models
      (config.json, safetensors, a byte-level tokenizer.json) and reference.json:
      token ids and the logits transformers computes for every position, in float32.
  demo-model.json  greedy continuations of the demo model (SmolLM2-135M-Instruct Q4_1 GGUF,
      loaded by transformers through `gguf_file=`) and its tokenizer's ids for varied texts.

Run: scripts/golden/make_fixtures.sh (sets up the pinned environment in the cache).
Pinned: torch==2.15.0 transformers==5.23.0 gguf==0.19.0 tokenizers==0.23.3
"""
import copy
import json
import os
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

OUT = sys.argv[1]
DEMO_DIR = sys.argv[2]
torch.manual_seed(0)


def byte_level_tokenizer():
    byte_to_char = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(byte_to_char))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def save_tiny(name, model, dtype=torch.float32, shard=None):
    path = os.path.join(OUT, name)
    os.makedirs(path, exist_ok=True)
    # The reference runs in f32 on the weights exactly as stored: round the parameters
    # through the storage dtype, but not the buffers (casting the model would also round
    # RoPE's inverse frequencies, which no loader reads from the file).
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
    stored = copy.deepcopy(model).to(dtype)
    kwargs = {"max_shard_size": shard} if shard else {}
    stored.save_pretrained(path, safe_serialization=True, **kwargs)
    byte_level_tokenizer().save(os.path.join(path, "tokenizer.json"))
    model = model.eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids).logits[0]
    with open(os.path.join(path, "reference.json"), "w") as f:
        json.dump({"token_ids": ids[0].tolist(),
                   "logits": [[round(v, 6) for v in row] for row in logits.tolist()]}, f)


common = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=256, max_position_embeddings=256,
              rms_norm_eps=1e-5, initializer_range=0.2)
llama = LlamaForCausalLM(LlamaConfig(**common, rope_theta=10000.0, tie_word_embeddings=False,
                                     rope_scaling={"rope_type": "llama3", "factor": 4.0,
                                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                   "original_max_position_embeddings": 32}))
save_tiny("tiny-llama", llama)
save_tiny("tiny-llama-bf16", LlamaForCausalLM(LlamaConfig(**common, rope_theta=500000.0)), dtype=torch.bfloat16)
qwen = Qwen2ForCausalLM(Qwen2Config(**common, rope_theta=1000000.0, tie_word_embeddings=True))
with torch.no_grad():  # Qwen2 initialises biases to zero; make them matter.
    for layer in qwen.model.layers:
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
            proj.bias.normal_(0, 0.5)
save_tiny("tiny-qwen2", qwen, shard="100KB")

# The demo model, through transformers' own GGUF loader.
tokenizer = AutoTokenizer.from_pretrained(DEMO_DIR, gguf_file="model.gguf")
model = AutoModelForCausalLM.from_pretrained(DEMO_DIR, gguf_file="model.gguf", torch_dtype=torch.float32).eval()
prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time, there was a",
           "The three primary colors are", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"]
continuations = []
for prompt in prompts:
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    continuations.append({"prompt": prompt, "prompt_ids": ids[0].tolist(),
                          "generated_ids": out[0, ids.shape[1]:].tolist()})
texts = ["Hello, world!", "  leading and   multiple   spaces\tand\ttabs\n\nnewlines",
         "Numbers: 1234567890, 3.14159, -42, 1e10", "Ünïcödé: café, naïve, 東京, Привет, 🙂🚀",
         "<|im_start|>system\nYou are helpful.<|im_end|>", "code: fn main() { println!(\"hi\"); }",
         "MiXeD CaSe and punctuation?!... (brackets) [x] {y}", "   ", "a" * 50]
with open(os.path.join(OUT, "demo-model.json"), "w") as f:
    json.dump({"transformers": __import__("transformers").__version__,
               "continuations": continuations,
               "tokenizer": [{"text": t, "ids": tokenizer(t, add_special_tokens=False).input_ids} for t in texts]},
              f, indent=1, ensure_ascii=False)
print("fixtures written to", OUT)
