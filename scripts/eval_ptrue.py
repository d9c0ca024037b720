#!/usr/bin/env python3
"""P(True) on TruthfulQA (Kadavath et al. 2022) through /v1/self_evaluation, with and without
brainstorming, on one release server.

For each of the first `--questions` TruthfulQA questions (../shared/data/truthfulqa, Apache-2.0)
the proposed answers are the dataset's best answer (true) and its first incorrect answer
(false), so the labels are known without a judge. Each question is asked once per brainstorm
setting (`--brainstorm 0,5`): with k > 0, k samples of the model's own answers (temperature 1,
seeded) are shown before the answer being judged. Reports, per setting, the AUROC of P(True)
for separating true from false answers, the Brier score and the expected calibration error (10
bins) against the labels, the mean P(True) of each class and the accuracy of "P(True) > 0.5".

Usage: python3 scripts/eval_ptrue.py [--questions 200] [--brainstorm 0,5] [--format chat]
       [--out docs/figures/ptrue.json] [--base http://127.0.0.1:8000]
"""
import argparse
import concurrent.futures as cf
import csv
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hhhlib import ROOT, free_port, post, server  # noqa: E402

DATA = os.path.join(ROOT, "../shared/data/truthfulqa/TruthfulQA.csv")


def auroc(scores, labels):
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    if not pos or not neg:
        return None
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def brier(p, y):
    return sum((a - b) ** 2 for a, b in zip(p, y)) / len(p)


def ece(p, y, bins=10):
    acc = [[0.0, 0.0, 0] for _ in range(bins)]
    for a, b in zip(p, y):
        k = min(int(a * bins), bins - 1)
        acc[k][0] += a
        acc[k][1] += b
        acc[k][2] += 1
    return sum(c / len(p) * abs(sp - sy) / c for sp, sy, c in acc if c)


def questions(n):
    rows = list(csv.DictReader(open(DATA, newline="", encoding="utf-8")))
    out = []
    for r in rows:
        wrong = [w.strip() for w in r["Incorrect Answers"].split(";") if w.strip()]
        if r["Best Answer"].strip() and wrong:
            out.append((r["Question"].strip(), r["Best Answer"].strip(), wrong[0]))
        if len(out) >= n:
            break
    return out


def run(base, qs, k, fmt, workers):
    def one(i):
        q, good, bad = qs[i]
        body = {"question": q, "answers": [good, bad], "brainstorm": k, "seed": i, "max_tokens": 32}
        if fmt:
            body["format"] = fmt
        r = post(base, "/v1/self_evaluation", body)
        return [d["p_true"] for d in r["data"]], r["format"], r.get("brainstorm", [])

    t0 = time.time()
    with cf.ThreadPoolExecutor(workers) as ex:
        res = list(ex.map(one, range(len(qs))))
    secs = time.time() - t0
    p = [x for r in res for x in r[0]]
    y = [1.0, 0.0] * len(qs)
    pairwise = sum(1 for r in res if r[0][0] > r[0][1]) / len(res)
    return {
        "brainstorm": k, "format": res[0][1], "questions": len(qs), "seconds": round(secs, 1),
        "auroc": auroc(p, y), "brier": brier(p, y), "ece_10_bins": ece(p, y),
        "mean_p_true_correct": sum(p[0::2]) / len(qs), "mean_p_true_incorrect": sum(p[1::2]) / len(qs),
        "accuracy_threshold_0.5": sum(1 for a, b in zip(p, y) if (a > 0.5) == (b > 0.5)) / len(p),
        "pairwise_correct_above_incorrect": pairwise,
        "example_brainstorm": res[0][2],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--brainstorm", default="0,5")
    ap.add_argument("--format", choices=["text", "chat"])
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--out")
    ap.add_argument("--base")
    a = ap.parse_args()
    qs = questions(a.questions)
    with server(free_port(), [], a.base) as base:
        results = [run(base, qs, int(k), a.format, a.workers) for k in a.brainstorm.split(",")]
    print("| brainstorm | format | questions | AUROC | Brier | ECE | mean P(True) true / false | P(true answer) > P(false answer) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['brainstorm']} | {r['format']} | {r['questions']} | {r['auroc']:.3f} | {r['brier']:.3f} | {r['ece_10_bins']:.3f} | "
              f"{r['mean_p_true_correct']:.3f} / {r['mean_p_true_incorrect']:.3f} | {r['pairwise_correct_above_incorrect']:.3f} |")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        json.dump({"data": "TruthfulQA (first questions with a best and an incorrect answer)", "results": results}, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
