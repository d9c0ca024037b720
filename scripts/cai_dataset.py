#!/usr/bin/env python3
"""A Constitutional AI dataset recipe that uses only hhh-server's HTTP API (docs/batch.md).

Red-team prompts -> two sampled responses each (chat, n = 2) -> in one second pass:
  * SL-CAI: a critique-revision round on the first response (/v1/harmlessness/revise), written as
    SFT JSONL: {"messages": [user..., {"role": "assistant", "content": <revision>}], "initial": ...};
  * RL-CAI: the two responses labelled by constitutional multiple-choice feedback
    (/v1/harmlessness/compare), written as TRL DPOTrainer's conversational preference JSONL:
    {"prompt": [...], "chosen": [{"role": "assistant", ...}], "rejected": [...],
     "chosen_probability": <soft label>, "principles": [...]}.

--mode batch (default) submits each pass as one /v1/files + /v1/batches job; --mode naive sends the
same requests one at a time (a client without batching), for the throughput comparison. Both
print a JSON line with the samples made and samples/hour.

    python3 scripts/cai_dataset.py --base http://127.0.0.1:8000 --prompts prompts.jsonl --out out/
    python3 scripts/cai_dataset.py --port 8123 --limit 32   # starts the release server itself

--prompts: a JSONL file of {"prompt": str} or {"messages": [...]} lines, or an hh-rlhf file
({"chosen", "rejected"} transcripts; the conversation before the last assistant turn is used).
"""
import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hhhlib import HH_HARMLESS_TEST, free_port, get, hh_pairs, post, server  # noqa: E402


def load_prompts(path, limit):
    out = []
    for line in open(path):
        r = json.loads(line)
        if "messages" in r:
            out.append(r["messages"])
        elif "prompt" in r:
            out.append([{"role": "user", "content": r["prompt"]}])
        if len(out) >= limit:
            return out
    if not out:  # an hh-rlhf file
        for conv, _, _ in hh_pairs(path, max_chars=1200):
            out.append(conv)
            if len(out) >= limit:
                break
    return out


def upload(base, lines):
    boundary = uuid.uuid4().hex
    data = "".join(json.dumps(l) + "\n" for l in lines).encode()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"lines.jsonl\"\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(base + "/v1/files", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())["id"]


def run_batch(base, lines):
    """custom_id -> response body, for the lines answered 200 (others are reported and dropped)."""
    fid = upload(base, lines)
    b = post(base, "/v1/batches", {"input_file_id": fid, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    while b["status"] not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.5)
        b = get(base, f"/v1/batches/{b['id']}")
    if b["status"] != "completed":
        raise SystemExit(f"batch {b['id']} ended {b['status']}: {b.get('errors')}")
    out = {}
    if b.get("output_file_id"):
        with urllib.request.urlopen(f"{base}/v1/files/{b['output_file_id']}/content", timeout=600) as r:
            for l in r.read().decode().splitlines():
                o = json.loads(l)
                out[o["custom_id"]] = o["response"]["body"]
    failed = b["request_counts"]["failed"]
    if failed:
        print(f"  {failed} lines failed (see file {b['error_file_id']})", file=sys.stderr)
    return out


def run_naive(base, lines):
    out = {}
    for l in lines:
        try:
            out[l["custom_id"]] = post(base, l["url"], l["body"])
        except urllib.error.HTTPError as e:
            print(f"  {l['custom_id']}: HTTP {e.code}", file=sys.stderr)
    return out


def recipe(base, model, prompts, mode, max_tokens, principles, out_dir):
    run = run_batch if mode == "batch" else run_naive
    t0 = time.time()
    first = [{"custom_id": f"sample-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": model, "messages": conv, "n": 2, "temperature": 1.0, "seed": i, "max_tokens": max_tokens}}
             for i, conv in enumerate(prompts)]
    samples = run(base, first)
    t1 = time.time()
    second = []
    for i, conv in enumerate(prompts):
        body = samples.get(f"sample-{i}")
        if not body:
            continue
        a, b = (c["message"]["content"] or "" for c in body["choices"])
        second.append({"custom_id": f"revise-{i}", "method": "POST", "url": "/v1/harmlessness/revise",
                       "body": {"model": model, "messages": conv, "response": a, "rounds": 1, "max_tokens": max_tokens, "seed": i}})
        if a.strip() and b.strip() and a != b:
            second.append({"custom_id": f"compare-{i}", "method": "POST", "url": "/v1/harmlessness/compare",
                           "body": {"model": model, "messages": conv, "responses": [a, b], "num_principles": principles, "seed": i}})
    labelled = run(base, second)
    t2 = time.time()
    sl, rl = [], []
    for i, conv in enumerate(prompts):
        body = samples.get(f"sample-{i}")
        rev = labelled.get(f"revise-{i}")
        if body and rev:
            sl.append({"messages": conv + [{"role": "assistant", "content": rev["final_response"]}], "initial": body["choices"][0]["message"]["content"]})
        cmp = labelled.get(f"compare-{i}")
        if body and cmp:
            a, b = (c["message"]["content"] for c in body["choices"])
            p = cmp["pairs"][0]["probability"]  # P(response a is the more harmless)
            chosen, rejected, pc = (a, b, p) if p >= 0.5 else (b, a, 1 - p)
            rl.append({"prompt": conv, "chosen": [{"role": "assistant", "content": chosen}], "rejected": [{"role": "assistant", "content": rejected}],
                       "chosen_probability": pc, "principles": cmp.get("principles")})
    secs = time.time() - t0
    os.makedirs(out_dir, exist_ok=True)
    for name, rows in (("sl_cai.jsonl", sl), ("rl_cai.jsonl", rl)):
        with open(os.path.join(out_dir, name), "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    n = len(sl) + len(rl)
    return {"mode": mode, "prompts": len(prompts), "sl_cai": len(sl), "rl_cai": len(rl), "requests": len(first) + len(second),
            "seconds": round(secs, 1), "pass_seconds": [round(t1 - t0, 1), round(t2 - t1, 1)], "samples_per_hour": round(n * 3600 / secs, 1), "out": out_dir}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", help="a running server (default: start target/release/hhh-server)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", default=HH_HARMLESS_TEST)
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--principles", type=int, default=2, help="feedback principles per comparison")
    ap.add_argument("--mode", choices=["batch", "naive", "both"], default="batch")
    ap.add_argument("--out", default="cai-out")
    a = ap.parse_args()
    prompts = load_prompts(a.prompts, a.limit)
    modes = ["batch", "naive"] if a.mode == "both" else [a.mode]
    for m in modes:
        # A fresh server per mode (unless --base): the second mode would otherwise find every
        # prompt of the first in the prefix cache (same prompts, same seeds).
        with server(a.port or free_port(), ["--data-dir", tempfile.mkdtemp(prefix="hhh-cai-")], a.base) as base:
            print(json.dumps(recipe(base, a.model, prompts, m, a.max_tokens, a.principles, os.path.join(a.out, m))), flush=True)


if __name__ == "__main__":
    main()
