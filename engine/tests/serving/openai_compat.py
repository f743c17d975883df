"""Drives a running engine through OpenAI's official Python client, as users' programs do,
over every endpoint and field the engine README lists as supported. Each check asserts what
the client hands back; the first that fails ends the run with its name.

Usage: python openai_compat.py BASE_URL SERVED_NAME
"""
import json
import re
import sys

import openai
from openai import OpenAI

BASE_URL, MODEL = sys.argv[1:3]
client = OpenAI(base_url=BASE_URL, api_key="unused", max_retries=0, timeout=120)
checks = []


def check(name):
    def run(fn):
        fn()
        checks.append(name)
        print(f"ok {name}", flush=True)
        return fn
    return run


def bad_request(param, call):
    try:
        call()
    except openai.BadRequestError as e:
        assert e.status_code == 400, e
        assert e.body and e.body.get("param") == param, (param, e.body)
        return
    raise AssertionError(f"expected a 400 naming {param}")


CHAT = [{"role": "user", "content": "What is the capital of France?"}]
PROMPT = "The capital of France is"


@check("models.list")
def _():
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL], models


@check("completions: text, token ids, stop, seed, sampling fields")
def _():
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text, r
    assert r.usage.completion_tokens == 8 or r.choices[0].finish_reason == "stop", r
    ids = client.completions.create(model=MODEL, prompt=[504, 3575, 282], max_tokens=3)
    assert ids.usage.prompt_tokens == 3, ids
    stopped = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=30, temperature=0,
                                        stop=["."], seed=1, top_p=0.9, presence_penalty=0.5,
                                        frequency_penalty=0.5, user="u-1")
    assert stopped.choices[0].finish_reason == "stop", stopped
    assert stopped.choices[0].text and "." not in stopped.choices[0].text, stopped
    extra = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0.7, seed=3,
        extra_body={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1, "ignore_eos": True})
    assert extra.usage.completion_tokens == 4, extra


@check("completions: logprobs and echo")
def _():
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, temperature=0,
                                  logprobs=2, echo=True)
    c = r.choices[0]
    assert c.text.startswith(PROMPT), c.text
    lp = c.logprobs
    assert len(lp.tokens) == r.usage.prompt_tokens + r.usage.completion_tokens, lp
    assert lp.token_logprobs[0] is None and all(v <= 0 for v in lp.token_logprobs[1:]), lp
    assert all(1 <= len(t) <= 3 for t in lp.top_logprobs[1:]), lp.top_logprobs


@check("completions: n and best_of")
def _():
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, n=2, best_of=2,
                                  temperature=1.0, seed=5)
    assert [c.index for c in r.choices] == [0, 1], r
    assert r.usage.completion_tokens <= 8, r.usage


@check("completions: streamed equals whole, with usage")
def _():
    whole = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, temperature=0)
    text, usage = "", None
    for chunk in client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10,
                                           temperature=0, stream=True,
                                           stream_options={"include_usage": True}):
        if chunk.choices:
            text += chunk.choices[0].text
        if chunk.usage:
            usage = chunk.usage
    assert text == whole.choices[0].text, (text, whole.choices[0].text)
    assert usage and usage.completion_tokens == whole.usage.completion_tokens, usage


@check("chat: whole and streamed, max_completion_tokens")
def _():
    whole = client.chat.completions.create(model=MODEL, messages=CHAT, max_completion_tokens=12,
                                           temperature=0)
    m = whole.choices[0].message
    assert m.role == "assistant" and m.content, whole
    text = ""
    for chunk in client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=12,
                                                temperature=0, stream=True):
        for choice in chunk.choices:
            text += choice.delta.content or ""
    assert text == m.content, (text, m.content)


@check("chat: logprobs and top_logprobs")
def _():
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=5, temperature=0,
                                       logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens, content
    for entry in content:
        assert len(entry.top_logprobs) == 2 and entry.top_logprobs[0].token == entry.token, entry
        assert bytes(entry.bytes) == entry.token.encode(), entry


@check("chat: n choices")
def _():
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=5, n=3,
                                       temperature=1.0, seed=9)
    assert len(r.choices) == 3 and r.usage.completion_tokens <= 15, r


@check("chat: response_format json_schema and json_object")
def _():
    schema = {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20},
        "country": {"enum": ["France", "Italy", "Spain"]}},
        "required": ["city", "country"], "additionalProperties": False}
    r = client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=60, temperature=0,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "place", "schema": schema, "strict": True}})
    answer = json.loads(r.choices[0].message.content)
    assert set(answer) == {"city", "country"} and answer["country"] in schema["properties"]["country"]["enum"]
    assert len(answer["city"]) <= 20, answer
    r = client.chat.completions.create(
        model=MODEL, max_tokens=120, temperature=0, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Describe a cat in JSON with a name and an age."}])
    assert isinstance(json.loads(r.choices[0].message.content), dict), r


@check("chat and completions: vLLM's guided fields through extra_body")
def _():
    r = client.completions.create(model=MODEL, prompt="Call me at", max_tokens=12, temperature=0,
                                  extra_body={"guided_regex": "[0-9]{3}-[0-9]{4}"})
    assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", r.choices[0].text), r.choices[0].text
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=5,
                                       extra_body={"guided_choice": ["Paris", "Lyon"]})
    assert r.choices[0].message.content in ("Paris", "Lyon"), r


@check("chat: tools, a forced call, and its result in the history")
def _():
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                       "required": ["city"], "additionalProperties": False}}}]
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(
        model=MODEL, messages=ask, tools=tools, max_tokens=40, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    history = ask + [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "{\"temperature\": 21}"}]
    r = client.chat.completions.create(model=MODEL, messages=history, tools=tools, max_tokens=8)
    assert r.choices[0].message.content, r
    r = client.chat.completions.create(model=MODEL, messages=ask, tools=tools, tool_choice="required",
                                       max_tokens=40, stream=True)
    calls = [c for chunk in r for choice in chunk.choices for c in (choice.delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather", calls


@check("errors: OpenAI's shape with the field named")
def _():
    bad_request("temperature", lambda: client.completions.create(model=MODEL, prompt="x", temperature=-1))
    bad_request("n", lambda: client.completions.create(model=MODEL, prompt="x", n=0))
    bad_request("top_logprobs", lambda: client.chat.completions.create(
        model=MODEL, messages=CHAT, top_logprobs=2))
    bad_request("logit_bias", lambda: client.chat.completions.create(
        model=MODEL, messages=CHAT, logit_bias={"42": 5}))
    bad_request("response_format", lambda: client.chat.completions.create(
        model=MODEL, messages=CHAT, response_format={"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"$ref": "#/$defs/missing"}}}))
    try:
        client.chat.completions.create(model="another-model", messages=CHAT)
        raise AssertionError("another model's name is not found")
    except openai.NotFoundError as e:
        assert e.body.get("code") == "model_not_found", e.body


print(f"compat: {len(checks)} checks passed", flush=True)
