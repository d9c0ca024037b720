#!/usr/bin/env python3
"""How often the default model's first answer token comes from the long tail when a client sends
no sampling fields (OpenAI's defaults: temperature 1, top_p 1), with and without the model's
generation defaults (`--generation-config`).

For each configuration a release server is started; 200 seeded chat requests ("hi" and short
questions, no sampling fields, max_tokens 16, top_logprobs 20) are sent, and the share whose
first sampled token is outside the top 20 of the model's distribution is reported, with its mean
logprob and the share over every sampled token. Configurations: none (no defaults), the shipped defaults
(models/…generation_config.json, written by `make model`), and llama.cpp's server defaults.

Usage: python3 loadtests/generation_defaults_bench.py [--requests 200] [--port 18441]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
from hhhlib import MODEL, get, post, server  # noqa: E402

PROMPTS = ["hi", "Hello!", "What is the capital of France?", "How are you today?", "Tell me a joke.", "What is 2 + 2?", "Name a colour.", "Why is the sky blue?"]
CONFIGS = [
    ("none (temperature 1, top_p 1)", ["--generation-config", "none"]),
    ("shipped defaults (auto)", ["--generation-config", "auto"]),
    ("llama.cpp server defaults", ["--generation-config", "none", "--override-generation-config", json.dumps({"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05})]),
]


def measure(base, n, tokens):
    """(share of first tokens outside the top 20, their mean logprob, share of all tokens outside
    the top 20 over the first `tokens` of each answer)."""
    outside, lps, all_out, all_n = 0, [], 0, 0
    for i in range(n):
        body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": tokens, "seed": i, "logprobs": True, "top_logprobs": 20}
        content = post(base, "/v1/chat/completions", body)["choices"][0]["logprobs"]["content"]
        for j, c in enumerate(content):
            out = c["token"] not in {t["token"] for t in c["top_logprobs"]}
            all_out += out
            all_n += 1
            if j == 0:
                outside += out
                lps.append(c["logprob"])
    return outside / n, sum(lps) / n, all_out / max(all_n, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--port", type=int, default=18441)
    ap.add_argument("--tokens", type=int, default=16, help="tokens per answer for the all-positions share")
    a = ap.parse_args()
    rows = []
    for name, extra in CONFIGS:
        with server(a.port, ["--model", MODEL] + extra) as base:
            card = get(base, "/v1/models")["data"][0]
            share, mean_lp, all_share = measure(base, a.requests, a.tokens)
            rows.append((name, card.get("generation_defaults"), share, mean_lp, all_share))
            print(f"{name}: {share:.3f} outside the top 20", file=sys.stderr)
    print(f"| configuration | defaults in /v1/models | first token outside the top 20 ({a.requests} seeded requests) | mean logprob of the first token | any of the first {a.tokens} tokens: share outside the top 20 |")
    print("|---|---|---|---|---|")
    for name, d, share, lp, all_share in rows:
        print(f"| {name} | `{json.dumps(d)}` | {share:.3f} | {lp:.2f} | {all_share:.3f} |")


if __name__ == "__main__":
    main()
