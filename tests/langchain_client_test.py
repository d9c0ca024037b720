#!/usr/bin/env python3
"""`langchain-openai`'s ChatOpenAI against a real hhh-server (release build, default model), as
LangChain users call it, unmodified:

- `with_structured_output(Model)` (json_schema, langchain-openai's default), `method="json_mode"`
  and `method="function_calling"` (a named tool_choice);
- `bind_tools([...], tool_choice="any")` (→ `required`): `invoke` returns schema-valid
  `tool_calls`; the follow-up with a `ToolMessage` is answered; `stream` chunks add up to the
  same calls as `invoke` with the same seed.

Exits non-zero on any failure.
"""
import os
import sys
from typing import Literal

import pydantic
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import hhhlib  # noqa: E402

MODEL = "smollm2-135m-instruct"


class Person(pydantic.BaseModel):
    """A person."""
    name: str = pydantic.Field(max_length=20)
    age: int = pydantic.Field(ge=0, le=150)
    mood: Literal["happy", "sad", "calm"]


class GetWeather(pydantic.BaseModel):
    """Current weather for a city."""
    city: str = pydantic.Field(max_length=20)
    unit: Literal["celsius", "fahrenheit"]


def main():
    with hhhlib.server(hhhlib.free_port(), ["--num-kv-blocks", "512"]) as base:
        def llm(seed, temperature=1.0, max_tokens=80):
            return ChatOpenAI(model=MODEL, base_url=base + "/v1", api_key="unused", temperature=temperature, max_tokens=max_tokens, seed=seed, max_retries=0)

        for seed in range(5):
            p = llm(seed).with_structured_output(Person).invoke("Describe a person.")
            assert isinstance(p, Person), (seed, p)
            p = llm(seed).with_structured_output(Person, method="function_calling").invoke("Describe a person.")
            assert isinstance(p, Person), (seed, p)
            # JSON mode only promises an object (OpenAI's semantics), so the prompt names the keys,
            # as OpenAI's docs ask; at temperature 1 the 135M model writes objects until the limit.
            d = llm(seed, 0.2, 200).with_structured_output(Person.model_json_schema(), method="json_mode").invoke("Describe a person as JSON with the keys name, age and mood.")
            assert isinstance(d, dict), (seed, d)

        question = HumanMessage("What is the weather in Paris?")
        for seed in range(5):
            bound = llm(seed).bind_tools([GetWeather], tool_choice="any")
            ai = bound.invoke([question])
            assert len(ai.tool_calls) >= 1 and ai.tool_calls[0]["name"] == "GetWeather", (seed, ai)
            for call in ai.tool_calls:
                GetWeather.model_validate(call["args"])
            total = None
            for chunk in bound.stream([question]):
                total = chunk if total is None else total + chunk
            assert [(c["name"], c["args"]) for c in total.tool_calls] == [(c["name"], c["args"]) for c in ai.tool_calls], (seed, total.tool_calls, ai.tool_calls)
            answer = llm(seed).bind_tools([GetWeather]).invoke([question, ai, ToolMessage("21 C, clear", tool_call_id=ai.tool_calls[0]["id"])])
            assert answer.content or answer.tool_calls, (seed, answer)
        print("langchain client test: ok")


if __name__ == "__main__":
    main()
