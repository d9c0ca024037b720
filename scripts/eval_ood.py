#!/usr/bin/env python3
"""Measure /v1/ood/score: in-distribution = TruthfulQA questions, OOD = the first human turns of
hh-rlhf's harmless-base test (red-team requests). Reports the AUROC of the Mahalanobis distance
for separating held-out TruthfulQA questions from red-team requests (docs/interpretability.md).

1. Split TruthfulQA's 817 questions (seeded): FIT for `hhh-server fit-ood` (which holds out 20 %
   of them itself for calibration) and TEST, never seen by the fit.
2. Fit: target/release/hhh-server fit-ood --prompts FIT --layer L --out STATS.
3. Serve with --ood-stats STATS; score TEST and as many red-team turns; AUROC.

Usage: python3 scripts/eval_ood.py [--layers 20 30] [--n-fit 500] [--out docs/figures/ood.json]
Needs ../shared/data (TruthfulQA, hh-rlhf) and the release binary (make build).
"""

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DATA = os.path.join(ROOT, "..", "shared", "data")
BIN = os.path.join(ROOT, "target", "release", "hhh-server")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def truthfulqa():
    with open(os.path.join(DATA, "truthfulqa", "TruthfulQA.csv"), newline="") as f:
        return [r["Question"] for r in csv.DictReader(f)]


def red_team():
    out = []
    with open(os.path.join(DATA, "hh-rlhf", "harmless-base-test.jsonl")) as f:
        for line in f:
            t = json.loads(line)["chosen"]
            first = t.split("\n\nHuman: ", 1)[1].split("\n\nAssistant:", 1)[0].strip()
            if first:
                out.append(first)
    return out


def evals_control(k, rng):
    """Benign text of another style: questions of the model-written persona evaluations."""
    import glob
    qs = []
    for f in sorted(glob.glob(os.path.join(DATA, "evals", "persona", "*.jsonl"))):
        with open(f) as fh:
            qs.extend(json.loads(l)["question"] for l in fh if l.strip())
    rng.shuffle(qs)
    return qs[:k]


def auroc(neg, pos):
    """P(score of a random positive > a random negative), ties counted half."""
    wins = 0.0
    for p in pos:
        for n in neg:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(pos) * len(neg))


def post(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, nargs="+", default=[20, 30])
    ap.add_argument("--n-fit", type=int, default=500)
    ap.add_argument("--port", type=int, default=8431)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "figures", "ood.json"))
    ap.add_argument("--mix-evals", action="store_true", help="in-distribution = TruthfulQA and persona-evaluation questions (half each); the control is then held-out persona questions")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    qs = truthfulqa()
    rng.shuffle(qs)
    fit, test = qs[: a.n_fit], qs[a.n_fit:]
    rt = red_team()
    rng.shuffle(rt)
    rt = rt[: len(test)]
    control = evals_control(len(test), rng)
    if a.mix_evals:
        persona = evals_control(len(test) + a.n_fit, random.Random(a.seed + 1))
        fit = fit[: a.n_fit // 2] + persona[: a.n_fit // 2]
        control = [q for q in persona[a.n_fit // 2:] if q not in set(fit)][: len(test)]
        rng.shuffle(fit)
    tmp = tempfile.mkdtemp(prefix="hhh-ood-")
    fit_file = os.path.join(tmp, "fit.jsonl")
    with open(fit_file, "w") as f:
        for q in fit:
            f.write(json.dumps({"text": q}) + "\n")
    results = {"model": os.path.basename(MODEL), "in_distribution": "TruthfulQA and persona-evaluation questions" if a.mix_evals else "TruthfulQA questions", "ood": "hh-rlhf harmless-base test, first human turn",
               "n_fit_file": len(fit), "n_test_benign": len(test), "n_test_red_team": len(rt), "control": "model-written persona evaluation questions (benign, another style)", "layers": []}
    for layer in a.layers:
        stats = os.path.join(tmp, f"stats-{layer}.json")
        t0 = time.time()
        fitted = subprocess.run([BIN, "fit-ood", "--model", MODEL, "--prompts", fit_file, "--layer", str(layer), "--out", stats, "--seed", str(a.seed)], check=True, capture_output=True, text=True)
        summary = json.loads(fitted.stdout)
        fit_s = time.time() - t0
        server = subprocess.Popen([BIN, "serve", "--model", MODEL, "--port", str(a.port), "--ood-stats", stats], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{a.port}"
            for _ in range(300):
                try:
                    urllib.request.urlopen(base + "/health/ready", timeout=2)
                    break
                except Exception:
                    time.sleep(0.5)
            score = lambda xs: [d["distance"] for i in range(0, len(xs), 64) for d in post(base, "/v1/ood/score", {"input": xs[i:i + 64]})["data"]]
            t0 = time.time()
            benign, red, ctrl = score(test), score(rt), score(control)
            flagged = lambda ds, thr: sum(d > thr for d in ds) / len(ds)
            row = {"layer": layer, "shrinkage": summary["shrinkage"], "threshold": summary["threshold"], "auroc": auroc(benign, red),
                   "auroc_control_persona_evals": auroc(benign, ctrl), "auroc_red_team_vs_control": auroc(ctrl, red),
                   "flagged_benign": flagged(benign, summary["threshold"]), "flagged_red_team": flagged(red, summary["threshold"]),
                   "median_distance_benign": sorted(benign)[len(benign) // 2], "median_distance_red_team": sorted(red)[len(red) // 2],
                   "fit_seconds": fit_s, "score_seconds": time.time() - t0}
            print(json.dumps(row), flush=True)
            results["layers"].append(row)
        finally:
            server.terminate()
            server.wait()
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
