#!/usr/bin/env python3
"""Interactive latency while a large batch runs (issue: batch lines at a lower priority).

One release server. Phases, each `--seconds` long, with `--clients` closed-loop streaming chat
clients (short prompts, `--max-tokens` tokens, greedy):
  A   no batch;
  B   while a large batch (`--batch-lines` completions of `--batch-tokens` tokens) runs;
  A'  no batch again (after the batch is cancelled), to see drift.
Reports TTFT p50/p90 (and the mean, with the server's own mean from its TTFT histogram, which
counts interactive requests only) and ITL p50 of the interactive requests per phase, the ratio B / A of the TTFT
p50 (the goal: <= 1.5), and the batch's own throughput during B (lines/s and completion tokens/s,
from the batch's request counts).

    python3 loadtests/batch_ttft_bench.py [--clients 4] [--seconds 30]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
from hhhlib import free_port, get, metric, post, server  # noqa: E402
from cai_dataset import upload  # noqa: E402

MODEL = "smollm2-135m-instruct"
PROMPTS = ["Name three fruits.", "What is the capital of Italy?", "Give me a tip for sleeping well.", "Say hello in French.", "What colour is the sky?", "Count to five."]


def stream_once(base, prompt, max_tokens):
    """(ttft, [inter-token gaps]) of one streamed chat request."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True}
    req = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first, last, gaps = None, None, []
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ch = json.loads(line[6:])
            if not any(c.get("delta", {}).get("content") for c in ch.get("choices", [])):
                continue
            now = time.perf_counter()
            if first is None:
                first = now - t0
            else:
                gaps.append(now - last)
            last = now
    return first, gaps


def hist_sum_count(base, name):
    text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
    val = lambda suffix: sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name + suffix + " ") or l.startswith(name + suffix + "{"))
    return val("_sum"), val("_count")


def phase(base, clients, seconds, max_tokens):
    s0, c0 = hist_sum_count(base, "hhh_time_to_first_token_seconds")
    ttfts, gaps, stop = [], [], time.time() + seconds
    lock = threading.Lock()

    def client(k):
        i = k
        while time.time() < stop:
            t, g = stream_once(base, PROMPTS[i % len(PROMPTS)], max_tokens)
            i += clients
            with lock:
                if t is not None:
                    ttfts.append(t)
                gaps.extend(g)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1] if len(xs) >= 2 else float("nan")
    s1, c1 = hist_sum_count(base, "hhh_time_to_first_token_seconds")
    return {"requests": len(ttfts), "ttft_mean_ms": round(1e3 * statistics.mean(ttfts), 1), "server_ttft_mean_ms": round(1e3 * (s1 - s0) / max(c1 - c0, 1), 1), "ttft_p50_ms": round(1e3 * statistics.median(ttfts), 1), "ttft_p90_ms": round(1e3 * q(ttfts, 90), 1), "itl_p50_ms": round(1e3 * statistics.median(gaps), 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-lines", type=int, default=2000)
    ap.add_argument("--batch-tokens", type=int, default=64)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--base")
    ap.add_argument("--server-args", default="", help="extra serve flags, e.g. '--batch-step-tokens 8'")
    a = ap.parse_args()
    with server(a.port or free_port(), ["--data-dir", tempfile.mkdtemp(prefix="hhh-bench-")] + a.server_args.split(), a.base) as base:
        for p in PROMPTS:  # warm the prefix cache and the code paths
            stream_once(base, p, 4)
        res = {"A (no batch)": phase(base, a.clients, a.seconds, a.max_tokens)}
        lines = [{"custom_id": f"b{i}", "method": "POST", "url": "/v1/completions",
                  "body": {"model": MODEL, "prompt": f"Write a short story about item {i}:", "max_tokens": a.batch_tokens, "ignore_eos": True, "temperature": 0.8, "seed": i}}
                 for i in range(a.batch_lines)]
        b = post(base, "/v1/batches", {"input_file_id": upload(base, lines), "endpoint": "/v1/completions", "completion_window": "24h"})
        while get(base, f"/v1/batches/{b['id']}")["request_counts"]["completed"] < 1:  # the batch is running
            time.sleep(0.2)
        c0, g0, t0 = get(base, f"/v1/batches/{b['id']}")["request_counts"]["completed"], metric(base, "hhh_batch_tokens_total"), time.time()
        res["B (batch running)"] = phase(base, a.clients, a.seconds, a.max_tokens)
        c1, g1, t1 = get(base, f"/v1/batches/{b['id']}")["request_counts"]["completed"], metric(base, "hhh_batch_tokens_total"), time.time()
        assert c1 < a.batch_lines, "the batch finished during phase B: use more --batch-lines"
        post(base, f"/v1/batches/{b['id']}/cancel", {})
        while get(base, f"/v1/batches/{b['id']}")["status"] != "cancelled":
            time.sleep(0.2)
        res["A' (after)"] = phase(base, a.clients, a.seconds, a.max_tokens)
        res["batch during B"] = {"lines_per_s": round((c1 - c0) / (t1 - t0), 2), "tokens_per_s (prompt+completion)": round((g1 - g0) / (t1 - t0), 1)}
        res["ttft_p50 ratio B/A"] = round(res["B (batch running)"]["ttft_p50_ms"] / res["A (no batch)"]["ttft_p50_ms"], 2)
        print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
