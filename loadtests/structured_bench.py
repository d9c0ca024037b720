#!/usr/bin/env python3
"""Output tokens per second with a JSON schema on every request against the same load without
one, in one run on one server (issue 21's structured-output benchmark), and the time to compile
a typical schema (the first request's extra latency over an unconstrained one is reported too).

16 clients send seeded chat requests (temperature 1, max_tokens 64) for --seconds each; the
constrained pass sends the same requests with `response_format: json_schema`. Output tok/s is
the sum of completion tokens over the pass's wall time.

Usage: python3 loadtests/structured_bench.py [--clients 16] [--seconds 30] [--port 18442]
"""
import argparse
import concurrent.futures as cf
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
from hhhlib import MODEL, post, server  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 4},
        "mood": {"enum": ["happy", "sad", "calm"]},
    },
    "required": ["name", "age", "hobbies", "mood"],
    "additionalProperties": False,
}


def body(seed, constrained):
    b = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Describe a person."}], "max_tokens": 64, "temperature": 1.0, "seed": seed}
    if constrained:
        b["response_format"] = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    return b


def run_pass(base, clients, seconds, constrained):
    deadline = time.time() + seconds

    def client(k):
        toks, n, seed = 0, 0, k * 100000
        while time.time() < deadline:
            toks += post(base, "/v1/chat/completions", body(seed, constrained))["usage"]["completion_tokens"]
            n += 1
            seed += 1
        return toks, n

    t0 = time.time()
    with cf.ThreadPoolExecutor(clients) as ex:
        res = list(ex.map(client, range(clients)))
    dt = time.time() - t0
    return sum(r[0] for r in res) / dt, sum(r[1] for r in res)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--port", type=int, default=18442)
    a = ap.parse_args()
    with server(a.port, ["--model", MODEL]) as base:
        post(base, "/v1/chat/completions", body(0, False))  # warm-up
        t = time.time()
        post(base, "/v1/chat/completions", dict(body(1, False), max_tokens=1))
        plain_1 = time.time() - t
        t = time.time()
        post(base, "/v1/chat/completions", dict(body(1, True), max_tokens=1))
        schema_1 = time.time() - t
        free, n_free = run_pass(base, a.clients, a.seconds, False)
        json_, n_json = run_pass(base, a.clients, a.seconds, True)
    print(f"| load | requests | output tok/s |")
    print("|---|---|---|")
    print(f"| {a.clients} clients, unconstrained | {n_free} | {free:.1f} |")
    print(f"| {a.clients} clients, json_schema on every request | {n_json} | {json_:.1f} |")
    print(f"ratio constrained / unconstrained: {json_ / free:.2f}x")
    print(f"one-token request: {plain_1 * 1000:.0f} ms unconstrained, {schema_1 * 1000:.0f} ms with the schema (compile + first mask)")


if __name__ == "__main__":
    main()
