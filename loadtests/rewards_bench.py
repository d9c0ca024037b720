#!/usr/bin/env python3
"""Throughput of /v1/rewards with prefix sharing, against a naive baseline, in one run.

For k responses per conversation (default 1, 8, 64), the same set of (conversation, response)
pairs is scored two ways, on the default model with a reward head:

* ours: one /v1/rewards call per conversation with its k responses (the engine batches them and
  the k inputs share the conversation's KV blocks through the prefix cache);
* naive: a server started with --no-prefix-caching, each pair scored as its own call with the
  full rendered text ({"text": ...}), `--naive-concurrency` calls in flight (a static scorer that
  recomputes every text from scratch).

Conversations come from hh-rlhf harmless-base (../shared/data/hh-rlhf, MIT); the k responses of a
conversation are its own chosen/rejected responses plus final responses of other pairs. Prints a
markdown table (pairs/s, ratio, prefix-cache hit rate from /metrics).

Usage: python3 loadtests/rewards_bench.py [--pairs 64] [--ks 1,8,64]
"""
import argparse
import concurrent.futures as cf
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
from hhhlib import metric, parse_transcript as parse, post, server  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/hhh-server")
MODEL = os.path.join(ROOT, "models/SmolLM2-135M-Instruct.Q4_1.gguf")
HEAD = os.path.join(ROOT, "server/heads/smollm2-135m-instruct-hh-harmless.json")
DATA = os.path.join(ROOT, "../shared/data/hh-rlhf/harmless-base-test.jsonl")
NAME = "smollm2-135m-instruct"


def workload(pairs, k, max_chars):
    rows = [json.loads(l) for l in open(DATA)]
    convs, pool = [], []
    for r in rows:
        c, j = parse(r["chosen"]), parse(r["rejected"])
        if not c or not j or len(r["chosen"]) > max_chars or not c[-1]["content"] or not j[-1]["content"]:
            continue
        convs.append((c[:-1], [c[-1]["content"], j[-1]["content"]]))
        pool.append(c[-1]["content"])
    n_conv = max(1, pairs // k)
    work = []
    for i in range(n_conv):
        msgs, own = convs[i]
        resp = (own + [pool[(i * 131 + m * 17) % len(pool)] for m in range(k)])[:k]
        work.append((msgs, resp))
    return work


def run_ours(base, work):
    t0 = time.time()
    n = 0
    for msgs, resp in work:
        out = post(base, "/v1/rewards", {"model": NAME, "input": [{"messages": msgs, "response": r} for r in resp]})
        n += len(out["data"])
    return n, time.time() - t0


def run_naive(base, work, concurrency):
    texts = []
    for msgs, resp in work:
        for r in resp:
            toks = post(base, "/tokenize", {"messages": msgs + [{"role": "assistant", "content": r}], "add_generation_prompt": False})["tokens"]
            texts.append(post(base, "/detokenize", {"tokens": toks})["prompt"])
    t0 = time.time()
    with cf.ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(lambda t: post(base, "/get_reward", {"query": [t]}), texts))
    return len(texts), time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=64, help="pairs scored per point")
    ap.add_argument("--ks", default="1,8,64")
    ap.add_argument("--max-chars", type=int, default=1500, help="skip longer conversations")
    ap.add_argument("--naive-concurrency", type=int, default=8)
    ap.add_argument("--port", type=int, default=18431)
    a = ap.parse_args()
    ks = [int(x) for x in a.ks.split(",")]
    results = {}
    for mode, extra in (("ours", []), ("naive", ["--no-prefix-caching"])):
        with server(a.port, ["--model", MODEL, "--reward-head", HEAD, "--max-model-len", "2048"] + extra) as base:
            for k in ks:
                work = workload(a.pairs, k, a.max_chars)
                q0, h0 = metric(base, "hhh_prefix_cache_queries_tokens_total"), metric(base, "hhh_prefix_cache_hits_tokens_total")
                n, dt = run_ours(base, work) if mode == "ours" else run_naive(base, work, a.naive_concurrency)
                q1, h1 = metric(base, "hhh_prefix_cache_queries_tokens_total"), metric(base, "hhh_prefix_cache_hits_tokens_total")
                results[(mode, k)] = (n, dt, (h1 - h0) / max(q1 - q0, 1))
                print(f"{mode} k={k}: {n} pairs in {dt:.1f} s", file=sys.stderr)
    print(f"| responses per conversation | ours pairs/s | naive pairs/s | ratio | prefix-cache hit rate (ours) |")
    print("|---|---|---|---|---|")
    for k in ks:
        n, dt, hit = results[("ours", k)]
        nn, ndt, _ = results[("naive", k)]
        print(f"| {k} | {n / dt:.2f} | {nn / ndt:.2f} | {(n / dt) / (nn / ndt):.2f}x | {hit:.2f} |")


if __name__ == "__main__":
    main()
