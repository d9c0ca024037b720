#!/usr/bin/env python3
"""LiteLLM against a real hhh-server (release build, default model), as its users call an
OpenAI-compatible server: `completion` (chat; streaming too; tools with a forced call) and
`text_completion`. LiteLLM sends no sampling fields unless asked, so the answers use the model's
generation defaults. Exits non-zero on any failure.
"""
import json
import os
import sys

# LiteLLM fetches a model price map from the internet at import unless told to use its own copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import litellm  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import hhhlib  # noqa: E402

MODEL = "smollm2-135m-instruct"
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}}}


def main():
    with hhhlib.server(hhhlib.free_port(), ["--num-kv-blocks", "512"]) as base:
        kw = dict(api_base=base + "/v1", api_key="unused")
        msgs = [{"role": "user", "content": "Say hello."}]
        r = litellm.completion(model=f"openai/{MODEL}", messages=msgs, max_tokens=16, **kw)
        text = r.choices[0].message.content
        assert text and r.usage.completion_tokens > 0, r
        r = litellm.completion(model=f"openai/{MODEL}", messages=msgs, max_tokens=16, temperature=0, seed=1, **kw)
        chunks = list(litellm.completion(model=f"openai/{MODEL}", messages=msgs, max_tokens=16, temperature=0, seed=1, stream=True, **kw))
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == r.choices[0].message.content, (streamed, r.choices[0].message.content)
        r = litellm.completion(model=f"openai/{MODEL}", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER],
                               tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=40, **kw)
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str), r
        r = litellm.text_completion(model=f"text-completion-openai/{MODEL}", prompt="The capital of France is", max_tokens=4, temperature=0, **kw)
        assert isinstance(r.choices[0].text, str) and r.choices[0].text, r
        print("litellm client test: ok")


if __name__ == "__main__":
    main()
