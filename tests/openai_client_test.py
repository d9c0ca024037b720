#!/usr/bin/env python3
"""The official `openai` Python client against a real hhh-server (release build, default model).

Starts the server on a free port, then: chat (non-streaming, streaming with usage, logprobs),
completions with echo + logprobs, n > 1 with a seed, structured outputs through the SDK's
`parse` helper (a Pydantic model, 100 seeded calls at temperature 1, every one parsed and
validated), tool calling (`pydantic_function_tool` with `parse`: 20 seeded forced calls whose
arguments parse into the model; streamed `tool_calls` reassembled equal the non-streamed ones),
and error mapping (400/404 raised as the client's typed exceptions). Exits non-zero on any
failure.
"""
import os
import subprocess
import sys
import time
import urllib.request

from typing import Literal

import openai
import pydantic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from hhhlib import free_port  # noqa: E402
MODEL = "smollm2-135m-instruct"


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    age: int = pydantic.Field(ge=0, le=150)
    mood: Literal["happy", "sad", "calm"]


class GetWeather(pydantic.BaseModel):
    """Current weather for a city."""
    city: str = pydantic.Field(max_length=20)
    unit: Literal["celsius", "fahrenheit"]


def reassemble(chunks):
    """Streamed tool-call deltas → [(name, arguments)], by index, as clients assemble them."""
    calls = {}
    for ch in chunks:
        for c in ch.choices:
            for d in c.delta.tool_calls or []:
                entry = calls.setdefault(d.index, [None, ""])
                if d.function.name:
                    entry[0] = d.function.name
                entry[1] += d.function.arguments or ""
    return [tuple(calls[i]) for i in sorted(calls)]


def main():
    port = free_port()
    env = dict(os.environ, RUST_LOG="warn")
    srv = subprocess.Popen(
        [os.path.join(ROOT, "target/release/hhh-server"), "serve", "--port", str(port), "--num-kv-blocks", "512"],
        cwd=ROOT, env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if urllib.request.urlopen(base + "/health", timeout=1).status == 200:
                    break
            except Exception:
                time.sleep(0.1)
        else:
            raise SystemExit("server did not become ready")
        c = openai.OpenAI(base_url=base + "/v1", api_key="unused")
        assert [m.id for m in c.models.list().data] == [MODEL]

        r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0)
        text = r.choices[0].message.content
        assert text and r.choices[0].finish_reason in ("stop", "length"), r
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

        chunks = list(c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16,
                                                temperature=0, stream=True, stream_options={"include_usage": True}))
        streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert streamed == text, (streamed, text)
        assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens

        r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0,
                                      logprobs=True, top_logprobs=2)
        lp = r.choices[0].logprobs.content
        assert len(lp) == r.usage.completion_tokens and all(len(t.top_logprobs) == 2 for t in lp)

        r = c.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=3, temperature=0, echo=True, logprobs=1)
        ch = r.choices[0]
        assert ch.text.startswith("The capital of France is")
        assert ch.logprobs.token_logprobs[0] is None and all(x is not None for x in ch.logprobs.token_logprobs[1:])

        kw = dict(model=MODEL, messages=[{"role": "user", "content": "Pick a word."}], max_tokens=8, n=2, seed=7, temperature=1.0)
        a = [x.message.content for x in c.chat.completions.create(**kw).choices]
        b = [x.message.content for x in c.chat.completions.create(**kw).choices]
        assert len(a) == 2 and a == b, (a, b)

        # Structured outputs through the SDK's parse helper (json_schema, strict).
        parse = getattr(c.chat.completions, "parse", None) or c.beta.chat.completions.parse
        for seed in range(100):
            r = parse(model=MODEL, messages=[{"role": "user", "content": "Describe a person."}], response_format=Person,
                      temperature=1.0, seed=seed, max_tokens=80)
            p = r.choices[0].message.parsed
            assert isinstance(p, Person) and len(p.name) <= 20 and 0 <= p.age <= 150, (seed, r)

        # Tool calling: a strict function tool from a Pydantic model, forced by name and
        # `required`; `parse` validates the arguments into the model.
        tools = [openai.pydantic_function_tool(GetWeather)]
        msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
        for seed in range(20):
            choice = "required" if seed % 2 else {"type": "function", "function": {"name": "GetWeather"}}
            r = parse(model=MODEL, messages=msgs, tools=tools, tool_choice=choice, temperature=1.0, seed=seed, max_tokens=60)
            call = r.choices[0].message.tool_calls[0]
            assert isinstance(call.function.parsed_arguments, GetWeather), (seed, r)
        for choice in ("required", {"type": "function", "function": {"name": "GetWeather"}}, "auto"):
            kw = dict(model=MODEL, messages=msgs, tools=tools, tool_choice=choice, temperature=1.0, seed=11, max_tokens=60)
            whole = c.chat.completions.create(**kw)
            got = reassemble(c.chat.completions.create(stream=True, **kw))
            want = [(t.function.name, t.function.arguments) for t in whole.choices[0].message.tool_calls or []]
            assert got == want, (choice, got, want)
        # The call and its result go back; the model answers.
        call = whole.choices[0].message.tool_calls[0] if whole.choices[0].message.tool_calls else r.choices[0].message.tool_calls[0]
        follow = msgs + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump(include={"id", "type", "function"})]},
                         {"role": "tool", "tool_call_id": call.id, "content": "21 C, clear"}]
        r = c.chat.completions.create(model=MODEL, messages=follow, tools=tools, max_tokens=16)
        assert r.choices[0].message.content is not None, r

        try:
            c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=5)
            raise AssertionError("temperature=5 accepted")
        except openai.BadRequestError as e:
            assert e.body["param"] == "temperature", e.body
        try:
            c.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
            raise AssertionError("unknown model accepted")
        except openai.NotFoundError as e:
            assert e.body["code"] == "model_not_found", e.body
        print("openai client test: ok")
    finally:
        srv.terminate()
        srv.wait(timeout=30)


if __name__ == "__main__":
    main()
