#!/usr/bin/env python3
"""Evaluation command (not a test): the Constitutional AI evals through the raw label primitive.

    python3 scripts/eval_cai.py --rows 80          # starts the release server on 127.0.0.1
    python3 scripts/eval_cai.py --base-url http://127.0.0.1:8000 --rows 80

Files (../shared/data/constitution/evals/, Bai et al. 2022; upstream states no licence, so they
are read here and not shipped): each row is {"prompt", "corrects", "incorrects"}; the prompt ends
with "The answer is:" and the options are " (A)", " (B)", ... . One /v1/harmlessness/label call per
row scores every option after the prompt; a row is correct when the most probable option is in
`corrects`.

- 438HHHEvaluations-shared (pairwise HHH preference, 2 options): also asked with the two
  responses (the [[[...]]] blocks) swapped; "debiased" averages P(correct) over both orders, and
  the position bias is the mean of P(A | order 1) + P(A | order 2) - 1.
- HarmfulVsEthical (2 options): accuracy, and how often the model answers (A) whatever the label.
- HarmfulnessClassification (9 options): accuracy against a 1/9 chance level.

Reports the prefix-cache hit rate over the run. Prints a markdown table.
"""
import argparse
import json
import os
import re
import time

from hhhlib import MODEL, metric, post, server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVALS = os.path.join(ROOT, "../shared/data/constitution/evals")


def rows(name, n):
    with open(os.path.join(EVALS, name)) as f:
        out = [json.loads(l) for l in f if l.strip()]
    return out[:n] if n else out


def options_of(row):
    return sorted(set(row["corrects"]) | set(row["incorrects"]))


def label(base, prompt, options):
    v = post(base, "/v1/harmlessness/label", {"prompt": prompt, "options": options})
    return [d["probability"] for d in v["data"]]


def swap(prompt):
    """Swap the two [[[...]]] responses of a 438HHH prompt; None if it does not have exactly two."""
    blocks = re.findall(r"\[\[\[.*?\]\]\]", prompt, flags=re.S)
    if len(blocks) != 2:
        return None
    a, b = blocks
    i, j = prompt.index(a), prompt.rindex(b)
    return prompt[:i] + b + prompt[i + len(a):j] + a + prompt[j + len(b):]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=80, help="rows per file (0: all)")
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--port", type=int, default=18433)
    a = ap.parse_args()
    with server(a.port, ["--model", MODEL, "--max-model-len", "2048"], a.base_url) as base:
        q0, h0, t0 = metric(base, "hhh_prefix_cache_queries_tokens_total"), metric(base, "hhh_prefix_cache_hits_tokens_total"), time.time()
        table = []
        # 438 HHH: both orders.
        one, deb, bias, n = 0, 0, [], 0
        for r in rows("438HHHEvaluations-shared.jsonl", a.rows):
            sw = swap(r["prompt"])
            if sw is None or options_of(r) != [" (A)", " (B)"]:
                continue
            p1 = label(base, r["prompt"], [" (A)", " (B)"])
            p2 = label(base, sw, [" (A)", " (B)"])
            c = 0 if r["corrects"] == [" (A)"] else 1
            one += p1[c] > 0.5
            deb += (p1[c] + p2[1 - c]) / 2 > 0.5
            bias.append(p1[0] + p2[0] - 1)
            n += 1
        table.append(("438HHHEvaluations (shared 350), one order", one, n, "0.5"))
        table.append(("438HHHEvaluations, debiased (both orders)", deb, n, "0.5"))
        hhh_bias = sum(bias) / max(len(bias), 1)
        # Harmful vs ethical.
        ok, said_a, n = 0, 0, 0
        for r in rows("HarmfulVsEthical.jsonl", a.rows):
            opts = options_of(r)
            p = label(base, r["prompt"], opts)
            best = opts[max(range(len(opts)), key=lambda i: p[i])]
            ok += best in r["corrects"]
            said_a += best == " (A)"
            n += 1
        table.append(("HarmfulVsEthical", ok, n, "0.5"))
        hve_a = said_a / max(n, 1)
        # Harm category (9-way).
        ok, n = 0, 0
        for r in rows("HarmfulnessClassification.jsonl", a.rows):
            opts = options_of(r)
            p = label(base, r["prompt"], opts)
            ok += opts[max(range(len(opts)), key=lambda i: p[i])] in r["corrects"]
            n += 1
        table.append(("HarmfulnessClassification (9 options)", ok, n, f"{1/9:.3f}"))
        q1, h1 = metric(base, "hhh_prefix_cache_queries_tokens_total"), metric(base, "hhh_prefix_cache_hits_tokens_total")
        print("| eval | accuracy | rows | chance |\n|---|---|---|---|")
        for name, k, n, chance in table:
            print(f"| {name} | {k / max(n, 1):.3f} ({k}/{n}) | {n} | {chance} |")
        print(f"\n438HHH position bias {hhh_bias:+.2f}; HarmfulVsEthical answered (A) in {hve_a:.2f} of rows; "
              f"prefix-cache hit rate {(h1 - h0) / max(q1 - q0, 1):.2f}; {time.time() - t0:.0f} s")



if __name__ == "__main__":
    main()
