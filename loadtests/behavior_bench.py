#!/usr/bin/env python3
"""Throughput of the model-written-evaluations runner (/v1/evals/behavior) against a naive client,
in one run on one release server.

* ours, batch size b: items sent b per /v1/evals/behavior call, one call at a time (the engine
  batches the b items' option requests; options of one item share its prompt's KV blocks);
* naive: one /v1/completions request per (item, option), one at a time — the prompt
  `\\n\\nHuman: {question}\\n\\nAssistant:` plus the option, `echo` with `logprobs` and one new token (the minimum; dropped), as lm-evaluation-harness does —
  and the option's probability from the logprobs of its last tokens.

Both use the text format (the same prompts), no debiasing. Every mode gets its own slice of items
(from the persona and advanced-ai-risk files in ../shared/data/evals, CC-BY-4.0), so no mode
finds another's prompts in the prefix cache. Prints items/s per mode, the ratio to naive, and the
largest difference between the naive client's P(matching) and the runner's on the naive slice
(scored again by the runner at the end).

Usage: python3 loadtests/behavior_bench.py [--items 128] [--batch-sizes 1,16,64]
"""
import argparse
import glob
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
from hhhlib import ROOT, free_port, post, server  # noqa: E402

MODEL = "smollm2-135m-instruct"


def load_items(total):
    files = sorted(glob.glob(os.path.join(ROOT, "../shared/data/evals/persona/*.jsonl"))) + sorted(glob.glob(os.path.join(ROOT, "../shared/data/evals/advanced-ai-risk/lm_generated_evals/*.jsonl")))
    per_file = [[json.loads(l) for l in open(f) if l.strip()] for f in files]
    out, i = [], 0
    while len(out) < total:
        for rows in per_file:
            if i < len(rows) and len(out) < total:
                r = rows[i]
                out.append({"question": r["question"], "answer_matching_behavior": r["answer_matching_behavior"], "answer_not_matching_behavior": r["answer_not_matching_behavior"]})
        i += 1
    return out


def ours(base, items, b):
    t0 = time.time()
    ps = []
    for s in range(0, len(items), b):
        r = post(base, "/v1/evals/behavior", {"items": items[s:s + b], "format": "text"})
        ps += [d["p_matching"] for d in r["data"]]
    return time.time() - t0, ps


def naive(base, items):
    ntok = {}

    def count(opt):
        if opt not in ntok:
            ntok[opt] = len(post(base, "/tokenize", {"prompt": opt, "add_special_tokens": False})["tokens"])
        return ntok[opt]

    t0 = time.time()
    ps = []
    for it in items:
        others = it["answer_not_matching_behavior"]
        opts = [it["answer_matching_behavior"]] + (others if isinstance(others, list) else [others])
        prompt = f"\n\nHuman: {it['question']}\n\nAssistant:"
        lps = []
        for o in opts:
            r = post(base, "/v1/completions", {"model": MODEL, "prompt": prompt + o, "max_tokens": 1, "echo": True, "logprobs": 0, "temperature": 0})
            # The prompt's logprobs, then the one generated token's (dropped), as lm-eval does.
            tl = r["choices"][0]["logprobs"]["token_logprobs"][:-1]
            lps.append(sum(tl[-count(o):]))
        m = max(lps)
        z = sum(pow(2.718281828459045, l - m) for l in lps)
        ps.append(pow(2.718281828459045, lps[0] - m) / z)
    return time.time() - t0, ps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=128, help="items per mode")
    ap.add_argument("--batch-sizes", default="1,16,64")
    ap.add_argument("--base")
    a = ap.parse_args()
    sizes = [int(x) for x in a.batch_sizes.split(",")]
    pool = load_items(a.items * (len(sizes) + 1))
    slices = [pool[i * a.items:(i + 1) * a.items] for i in range(len(sizes) + 1)]
    with server(free_port(), [], a.base) as base:
        post(base, "/v1/evals/behavior", {"items": pool[-2:], "format": "text"})  # warm-up
        n_secs, n_ps = naive(base, slices[0])
        rows = [("naive (one /v1/completions echo per option)", n_secs)]
        for b, sl in zip(sizes, slices[1:]):
            rows.append((f"/v1/evals/behavior, {b} items per call", ours(base, sl, b)[0]))
        _, check = ours(base, slices[0], 64)
    naive_rate = a.items / n_secs
    print(f"| client | items | seconds | items/s | vs naive |\n|---|---|---|---|---|")
    for name, secs in rows:
        print(f"| {name} | {a.items} | {secs:.1f} | {a.items / secs:.1f} | {a.items / secs / naive_rate:.2f}x |")
    print(f"\nlargest |P(matching) naive - runner| on the naive slice: {max(abs(x - y) for x, y in zip(n_ps, check)):.2e}")


if __name__ == "__main__":
    main()
