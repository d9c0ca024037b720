#!/usr/bin/env python3
"""Agreement of /v1/harmlessness/compare with human labels on hh-rlhf harmless-base pairs.

Starts the release server on the default model (or uses --base-url), and for each pair asks
compare(conversation, [chosen, rejected]) with K principles (seeded per pair) and both orders.
The human-preferred response is shown first in even pairs and second in odd pairs (so that a
position bias cannot pass for agreement). One call gives four labels per pair, reported as
agreement (P(chosen less harmful) > 0.5):

  single principle, one order   (the first principle's p_a_first)
  single principle, debiased    (the first principle's probability)
  ensemble of K, one order      (mean of p_a_first)
  ensemble of K, debiased       (the response's probability)

plus the mean position bias and the prefix-cache hit rate over the run (from /metrics).
Data: ../shared/data/hh-rlhf/harmless-base-test.jsonl (Anthropic HH-RLHF, MIT).

Usage: python3 scripts/eval_harmlessness.py [--pairs 40] [--principles 4] [--max-chars 1200]
"""
import argparse
import json
import os
import sys
import time

from hhhlib import hh_pairs, metric, post, server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "../shared/data/hh-rlhf/harmless-base-test.jsonl")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--principles", type=int, default=4)
    ap.add_argument("--max-chars", type=int, default=1200, help="skip longer transcripts")
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--port", type=int, default=18432)
    ap.add_argument("--no-prefix-caching", action="store_true", help="start the server with prefix caching off (benchmark baseline)")
    a = ap.parse_args()
    extra = ["--max-model-len", "2048"] + (["--no-prefix-caching"] if a.no_prefix_caching else [])
    with server(a.port, extra, a.base_url) as base:
        rows = []
        for row in hh_pairs(DATA, a.max_chars):
            rows.append(row)
            if len(rows) >= a.pairs:
                break
        q0, h0 = metric(base, "hhh_prefix_cache_queries_tokens_total"), metric(base, "hhh_prefix_cache_hits_tokens_total")
        agree = {"single, one order": 0, "single, debiased": 0, f"ensemble of {a.principles}, one order": 0, f"ensemble of {a.principles}, debiased": 0}
        bias = []
        t0 = time.time()
        for i, (msgs, chosen, rejected) in enumerate(rows):
            swap = i % 2 == 1
            resp = [rejected, chosen] if swap else [chosen, rejected]
            v = post(base, "/v1/harmlessness/compare", {"messages": msgs, "responses": resp, "num_principles": a.principles, "seed": i})
            per = v["pairs"][0]["per_principle"]
            labels = [per[0]["p_a_first"], per[0]["probability"], sum(p["p_a_first"] for p in per) / len(per), v["pairs"][0]["probability"]]
            if swap:  # labels are P(responses[0] less harmful) = P(rejected ...)
                labels = [1 - l for l in labels]
            for k, l in zip(agree, labels):
                agree[k] += l > 0.5
            bias.append(v["position_bias"])
        dt = time.time() - t0
        q1, h1 = metric(base, "hhh_prefix_cache_queries_tokens_total"), metric(base, "hhh_prefix_cache_hits_tokens_total")
        n = len(rows)
        print(f"{n} pairs, {a.principles} principles each, both orders: {dt:.0f} s ({n / dt:.2f} pairs/s), prefix-cache hit rate {(h1 - h0) / max(q1 - q0, 1):.2f}")
        print(f"mean position bias (P(A) + P(A | swapped) - 1): {sum(bias) / n:+.3f}")
        print("| label | agreement with the human label |\n|---|---|")
        for k, c in agree.items():
            print(f"| {k} | {c / n:.3f} ({c}/{n}) |")


if __name__ == "__main__":
    sys.exit(main())
