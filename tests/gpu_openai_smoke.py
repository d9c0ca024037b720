"""The official `openai` client against a running hhh-server (scripts/gpu-check.sh starts it on
a GPU, or on candle's CPU backend with --dry-run) serving the random model written by
`hhh-server gpu-check --write-model`. usage: gpu_openai_smoke.py BASE_URL MODEL OUT_JSON"""
import json
import sys
import time

from openai import OpenAI

base, model, out = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=base + "/v1", api_key="unused")
results = {}
msgs = [{"role": "user", "content": "hello w9 w40 world"}]

t = time.time()
r = client.chat.completions.create(model=model, messages=msgs, max_tokens=32, temperature=0, logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
results["chat"] = {"finish_reason": r.choices[0].finish_reason, "completion_tokens": r.usage.completion_tokens, "logprobs": len(r.choices[0].logprobs.content), "seconds": time.time() - t}
assert r.usage.completion_tokens == 32 and len(r.choices[0].logprobs.content) == 32, r

stream = client.chat.completions.create(model=model, messages=msgs, max_tokens=32, temperature=0, stream=True, extra_body={"ignore_eos": True})
text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
results["stream_equals_non_stream"] = text == r.choices[0].message.content
assert results["stream_equals_non_stream"], (text, r.choices[0].message.content)

c = client.completions.create(model=model, prompt="hello world w12", max_tokens=8, temperature=0, echo=True, logprobs=1, extra_body={"ignore_eos": True})
results["completions_echo_logprobs"] = len(c.choices[0].logprobs.token_logprobs)
assert c.choices[0].logprobs.token_logprobs[0] is None and len(c.choices[0].logprobs.token_logprobs) == 3 + 8, c

n = client.chat.completions.create(model=model, messages=msgs, max_tokens=16, n=4, temperature=1.0, seed=5, extra_body={"ignore_eos": True})
results["n4_choices"] = len(n.choices)
assert len(n.choices) == 4

results["pass"] = True
json.dump(results, open(out, "w"), indent=2)
print(json.dumps(results))
