#!/usr/bin/env python3
"""Makes the golden fixtures of every architecture the engine runs beyond Llama (and of
Qwen2 from GGUF): a small random-initialised model of each, with transformers' logits, as a Hugging Face
directory and as the GGUF file llama.cpp's converter makes of it.

Outputs, under OUT (engine/tests/fixtures/architectures/):
  <name>/       config.json, model.safetensors (float32), tokenizer.json (a byte-level BPE of
                257 tokens: 256 bytes and one merge, which GGUF readers need), reference.json
                (token_ids: 24 tokens; logits: transformers' float32 logits at every position)
  <name>.gguf   convert_hf_to_gguf.py --outtype f32 of <name>/ (same weights, so the same
                reference; Gemma's norm gains gain their +1, Q and K of the Llama family are
                permuted for llama.cpp's RoPE, Mixtral's experts are stacked)
  <name>-Q8_0.gguf  llama-quantize --pure of <name>.gguf to Q8_0 (every matrix; the tiny
                models' rows are not whole K-quant blocks of 256)

Each model is made so its architecture's differences matter on a 24-token prompt: windows
shorter than the prompt, soft-caps inside the range of the scores, norm gains away from 1.

Usage: make_architecture_fixtures.py OUT LLAMA_CPP_SRC LLAMA_CPP_BIN [NAME...]
Run: scripts/golden/make_llama_cpp_fixtures.sh architectures
Pinned: torch==2.15.0 transformers==5.23.0 gguf==0.19.0
"""
import json
import os
import subprocess
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig,
                          MistralConfig, MistralForCausalLM, MixtralConfig, MixtralForCausalLM,
                          Phi3Config, Phi3ForCausalLM, Qwen2Config, Qwen2ForCausalLM)

OUT, LLAMA_SRC, LLAMA_BIN = sys.argv[1:4]
PROMPT = "Every architecture, here"  # 24 bytes, one token each

# The converter, run as llama.cpp ships it, with its tokenizer probes answered: the
# byte-level tokenizer's pre-tokenizer is GPT-2's split, and Gemma 2's converter, which
# asks for a SentencePiece model only, is pointed at the BPE one.
CONVERT = """
import runpy, sys
src = sys.argv[1]
sys.argv = [src + "/convert_hf_to_gguf.py", *sys.argv[2:]]
sys.path[:0] = [src, src + "/gguf-py"]
import conversion.base, conversion.gemma

def no_sentencepiece(self):
    raise FileNotFoundError("no tokenizer.model")

conversion.base.TextModel._set_vocab_sentencepiece = no_sentencepiece
conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
conversion.gemma.Gemma2Model.set_vocab = lambda self: self._set_vocab_gpt2()
runpy.run_path(sys.argv[0], run_name="__main__")
"""

COMMON = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, vocab_size=257, max_position_embeddings=256,
              rms_norm_eps=1e-5, initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def tokenizer():
    byte_to_char = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(byte_to_char))}
    vocab["ĠĠ"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "Ġ")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def perturb_norms(model, around):
    """Norm gains initialise to a constant; make them matter."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(around + 0.3 * torch.randn_like(p))


def qwen2():
    model = Qwen2ForCausalLM(Qwen2Config(**COMMON, rope_theta=1000000.0, tie_word_embeddings=True))
    with torch.no_grad():  # Qwen2 initialises biases to zero; make them matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    perturb_norms(model, 1.0)
    return model


def mistral():
    return MistralForCausalLM(MistralConfig(**COMMON, sliding_window=7, rope_theta=10000.0))


def gemma2():
    model = Gemma2ForCausalLM(Gemma2Config(**{**COMMON, "num_hidden_layers": 4}, sliding_window=7,
                                           query_pre_attn_scalar=16, attn_logit_softcapping=2.0,
                                           final_logit_softcapping=5.0, rope_theta=10000.0))
    perturb_norms(model, 0.0)  # Gemma stores gain - 1
    return model


def gemma3():
    config = Gemma3TextConfig(**{**COMMON, "num_hidden_layers": 6}, sliding_window=7,
                              query_pre_attn_scalar=16, rope_theta=1000000.0,
                              rope_scaling={"rope_type": "linear", "factor": 8.0},
                              rope_local_base_freq=10000.0)
    model = Gemma3ForCausalLM(config)
    perturb_norms(model, 0.0)
    return model


def phi3():
    model = Phi3ForCausalLM(Phi3Config(**COMMON, partial_rotary_factor=0.5, sliding_window=9,
                                       original_max_position_embeddings=256, rope_theta=10000.0))
    perturb_norms(model, 1.0)
    return model


def mixtral():
    model = MixtralForCausalLM(MixtralConfig(**COMMON, num_local_experts=4, num_experts_per_tok=2,
                                             rope_theta=1000000.0, sliding_window=None))
    perturb_norms(model, 1.0)
    return model


ARCHITECTURES = {"qwen2": qwen2, "mistral": mistral, "gemma2": gemma2, "gemma3": gemma3, "phi3": phi3, "mixtral": mixtral}


def run(command):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
        raise SystemExit(f"fixtures: {command[0]} exited {result.returncode}")


def main() -> int:
    torch.set_num_threads(1)  # the reference logits do not depend on the machine's cores
    os.makedirs(OUT, exist_ok=True)
    token_ids = tokenizer().encode(PROMPT).ids
    assert len(token_ids) == 24, len(token_ids)
    names = sys.argv[4:] or list(ARCHITECTURES)
    for name in names:
        torch.manual_seed(0)
        model = ARCHITECTURES[name]().eval()
        path = os.path.join(OUT, name)
        model.save_pretrained(path, safe_serialization=True)
        tokenizer().save(os.path.join(path, "tokenizer.json"))
        # Phi-3's converter reads the tokenizer's class to choose BPE over SentencePiece;
        # without special tokens the class adds none to the 257.
        with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "GPT2Tokenizer", "unk_token": None, "bos_token": None,
                       "eos_token": None, "pad_token": None}, f)
        with torch.no_grad():
            logits = model(torch.tensor([token_ids])).logits[0]
        with open(os.path.join(path, "reference.json"), "w") as f:
            json.dump({"transformers": __import__("transformers").__version__, "prompt": PROMPT,
                       "token_ids": token_ids,
                       "logits": [[round(v, 6) for v in row] for row in logits.tolist()]}, f)
        gguf = os.path.join(OUT, f"{name}.gguf")
        run([sys.executable, "-c", CONVERT, LLAMA_SRC, path, "--outtype", "f32", "--outfile", gguf])
        quantized = os.path.join(OUT, f"{name}-Q8_0.gguf")
        run([os.path.join(LLAMA_BIN, "llama-quantize"), "--pure", gguf, quantized, "Q8_0", "1"])
        print(f"fixtures: {path} and {gguf} ({os.path.getsize(gguf)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
