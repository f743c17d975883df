#!/usr/bin/env python3
"""Tool-calling conversations rendered by transformers' apply_chat_template with `tools`.

Reads the chat templates kept in the fixture directory (chat_template_fixtures.py writes them)
of the families whose templates carry tool syntax, plus the demo model's (which has none and
ignores tools), and renders a conversation that offers tools, one where the assistant called
one and the tool answered. Tool-call arguments are given as objects, as the engine passes them
to templates (OpenAI's API sends them as JSON strings; templates print them with tojson).

Writes OUT/tools-reference.json. Run: scripts/golden/tool_template_fixtures.sh.
"""
import json
import os
import sys
from datetime import datetime

import transformers
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast
from transformers.utils import chat_template_utils

OUT = sys.argv[1]
TODAY = datetime(2025, 1, 15, 9, 30)


class FixedClock(datetime):
    @classmethod
    def now(cls, tz=None):
        return TODAY


chat_template_utils.datetime = FixedClock

FAMILIES = {
    "llama-3.1": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama-3.2": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistral-nemo": ("<s>", "</s>"),
    "qwen2.5": (None, "<|im_end|>"),
    "smollm2": ("<|im_start|>", "<|im_end|>"),
}

# Keys in sorted order, at every level: the engine's JSON values keep no insertion order, so
# templates print them sorted; with sorted input both sides agree byte for byte.
TOOLS = [{"function": {
    "description": "The current weather in a city.",
    "name": "get_weather",
    "parameters": {"properties": {"city": {"description": "The city's name", "type": "string"},
                                  "unit": {"enum": ["celsius", "fahrenheit"], "type": "string"}},
                   "required": ["city"], "type": "object"}}, "type": "function"}]

ASK = {"role": "user", "content": "What is the weather in Paris?"}
CALL = {"role": "assistant", "content": "", "tool_calls": [{
    "function": {"arguments": {"city": "Paris", "unit": "celsius"}, "name": "get_weather"},
    "id": "call00001", "type": "function"}]}
ANSWER = {"role": "tool", "tool_call_id": "call00001", "content": "{\"temperature\": 21}"}

CONVERSATIONS = {
    "offered": [{"role": "system", "content": "You are a terse assistant."}, ASK],
    "called_and_answered": [ASK, CALL, ANSWER],
}


def tokenizer_with(bos, eos):
    vocab = {t: i for i, t in enumerate(t for t in (bos, eos, "x") if t)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=[])),
                                   bos_token=bos, eos_token=eos)


families = {}
for family, (bos, eos) in FAMILIES.items():
    file = f"{family}.jinja"
    with open(os.path.join(OUT, file), encoding="utf-8") as f:
        template = f.read()
    tokenizer = tokenizer_with(bos, eos)
    rendered = {}
    for name, messages in CONVERSATIONS.items():
        prompt = tokenizer.apply_chat_template(messages, tools=TOOLS, chat_template=template,
                                               tokenize=False, add_generation_prompt=True)
        rendered[name] = {"messages": messages, "prompt": prompt}
    families[family] = {"template": file, "bos_token": bos or "", "eos_token": eos or "",
                        "conversations": rendered}
    print(f"tool template fixtures: {family}", file=sys.stderr)

with open(os.path.join(OUT, "tools-reference.json"), "w", encoding="utf-8") as f:
    json.dump({"transformers": transformers.__version__, "today": TODAY.isoformat(),
               "tools": TOOLS, "families": families}, f, ensure_ascii=False, indent=1)
    f.write("\n")
