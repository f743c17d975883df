"""The GPU benchmark's baseline: a random-initialised Llama of a published shape in
Hugging Face transformers (bf16, on the GPU), on the same workload as
`modelfleet-engine bench`. Saves the model first, so the engine runs the same weights.

Usage: transformers_bench.py --shape llama-3.1-8b --save DIR --prompt-len 512
           --decode-tokens 128 --concurrency 1,64,256 [--dry-run]

Prints one JSON line per concurrency level, with the engine's field names:
  single stream: decode tokens/s after the first token, TTFT;
  concurrency c: c prompts generated together (static batching), output tokens/s over the
  whole run, TTFT (every request waits for the batch's prefill: p50 = p99).
"""

import argparse
import json
import os
import sys
import time

# Published shapes (config.json of meta-llama/Llama-3.2-1B and Llama-3.1-8B).
SHAPES = {
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                         tie_word_embeddings=True,
                         rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                           high_freq_factor=4.0,
                                           original_max_position_embeddings=8192)),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                         tie_word_embeddings=False,
                         rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                           high_freq_factor=4.0,
                                           original_max_position_embeddings=8192)),
    # Not a benchmark: checks this script and the engine's loading of what it saves, on a CPU.
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 tie_word_embeddings=False, vocab_size=41024, bos_token_id=1, eos_token_id=2),
}
COMMON = dict(vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5,
              rope_theta=500000.0, bos_token_id=128000, eos_token_id=128001,
              hidden_act="silu", initializer_range=0.02, architectures=["LlamaForCausalLM"])


def prompt_ids(sequence, length):
    """Must match bench_prompt in engine/src/cli/bench.rs: distinct per sequence."""
    return [1000 + ((i * 7919 + sequence * 104729) % 40000) for i in range(length)]


def word_level_tokenizer(vocab_size):
    """A tokenizer with one word per id, so every id the model emits decodes."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def make_model(shape, save, device):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(**{**COMMON, **SHAPES[shape]})
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.eval()
    if save:
        os.makedirs(save, exist_ok=True)
        started = time.time()
        model.save_pretrained(save, safe_serialization=True, max_shard_size="4GB")
        word_level_tokenizer(config.vocab_size).save(os.path.join(save, "tokenizer.json"))
        print(f"[transformers] saved {shape} to {save} in {time.time() - started:.1f}s",
              file=sys.stderr)
    return model


def synchronize():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_generate(model, ids, new_tokens):
    import torch
    synchronize()
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False, pad_token_id=0)
    synchronize()
    assert out.shape[1] == ids.shape[1] + new_tokens, out.shape
    return time.perf_counter() - started


def run_level(model, concurrency, prompt_len, decode_tokens):
    import torch
    ids = torch.tensor([prompt_ids(s, prompt_len) for s in range(concurrency)], device=model.device)
    ttft = timed_generate(model, ids, 1)
    total = timed_generate(model, ids, decode_tokens + 1)
    decode = max(total - ttft, 1e-9)
    return {
        "side": "transformers", "backend": str(model.device.type), "concurrency": concurrency,
        "prompt_len": prompt_len, "decode_tokens": decode_tokens,
        "prefill_tokens_per_s": concurrency * prompt_len / ttft,
        "decode_tokens_per_s": concurrency * decode_tokens / decode,
        "output_tokens_per_s": concurrency * (decode_tokens + 1) / total,
        "ttft_s": ttft, "ttft_p50_s": ttft, "ttft_p99_s": ttft,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=sorted(SHAPES), required=True)
    p.add_argument("--save")
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--decode-tokens", type=int, default=128)
    p.add_argument("--concurrency", default="1,64,256")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dry-run", action="store_true", help="check the arguments and exit")
    args = p.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    if args.dry_run:
        print(json.dumps({"shape": args.shape, "levels": levels, **SHAPES[args.shape]}))
        return
    import torch
    import transformers
    print(f"[transformers] {transformers.__version__}, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name() if args.device == 'cuda' else args.device}", file=sys.stderr)
    model = make_model(args.shape, args.save, args.device)
    run_level(model, 1, 16, 4)  # warm-up
    for c in levels:
        print(json.dumps(run_level(model, c, args.prompt_len, args.decode_tokens)), flush=True)


if __name__ == "__main__":
    main()
