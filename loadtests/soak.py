#!/usr/bin/env python3
"""Soak test: steady closed-loop streaming load for a fixed time, reported per window.

Keeps --concurrency streaming chat requests in flight for --duration seconds (each worker starts
its next request when the previous one ends) and prints, per --window seconds: requests finished,
errors, output tokens/s, TTFT and ITL percentiles, and the server's resident memory (read from
`hhh_process_resident_memory_bytes` on /metrics). Ends with RSS at start and end and the total error
count, as a Markdown table (also written to --out as JSON).

Only loopback targets. Needs aiohttp.

  python3 loadtests/soak.py --url http://127.0.0.1:8000 --duration 600 --concurrency 4
"""
import argparse
import asyncio
import json
import random
import sys
import time
from urllib.parse import urlsplit

import aiohttp

WORDS = "river mountain lamp harbor violet engine quiet silver garden thunder pencil orbit meadow copper".split()


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def rss(session, url):
    try:
        async with session.get(url + "/metrics") as r:
            for line in (await r.text()).splitlines():
                if line.startswith("hhh_process_resident_memory_bytes "):
                    return float(line.split()[1])
    except aiohttp.ClientError:
        pass
    return float("nan")


async def one(session, args, rng, rec):
    prompt = " ".join(rng.choice(WORDS) for _ in range(args.prompt_words)) + ". Write a short story about these words."
    body = {"model": args.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": args.max_tokens,
            "temperature": 0.7, "stream": True, "ignore_eos": True}
    t0 = time.perf_counter()
    last, first, ntok = None, None, 0
    try:
        async with session.post(args.url + "/v1/chat/completions", json=body) as r:
            if r.status != 200:
                rec["errors"].append(f"HTTP {r.status}")
                await r.read()
                return
            async for raw in r.content:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                ev = json.loads(line[6:])
                if "error" in ev:
                    rec["errors"].append(ev["error"].get("message", "error event"))
                    return
                for c in ev.get("choices", []):
                    if c.get("delta", {}).get("content"):
                        now = time.perf_counter()
                        if first is None:
                            first = now
                            rec["ttft"].append(now - t0)
                        else:
                            rec["itl"].append(now - last)
                        last = now
                        ntok += 1
        rec["done"] += 1
        rec["tokens"] += ntok
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        rec["errors"].append(repr(e))


def new_rec():
    return {"ttft": [], "itl": [], "done": 0, "tokens": 0, "errors": []}


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--window", type=float, default=60)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=40)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    host = urlsplit(args.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loopback targets only")
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        windows, rec = [], new_rec()
        rss0 = await rss(session, args.url)
        start = time.perf_counter()
        end = start + args.duration
        win_start = start

        async def worker(i):
            rng = random.Random(i * 7919 + int(start))
            while time.perf_counter() < end:
                await one(session, args, rng, rec_ref[0])

        rec_ref = [rec]
        tasks = [asyncio.create_task(worker(i)) for i in range(args.concurrency)]
        while time.perf_counter() < end:
            await asyncio.sleep(max(0.0, min(win_start + args.window, end) - time.perf_counter()))
            r, rec_ref[0] = rec_ref[0], new_rec()
            now = time.perf_counter()
            w = {"t_end_s": round(now - start), "requests": r["done"], "errors": len(r["errors"]),
                 "tok_per_s": r["tokens"] / (now - win_start),
                 "ttft_p50_ms": pct(r["ttft"], 50) * 1e3, "ttft_p95_ms": pct(r["ttft"], 95) * 1e3,
                 "itl_p50_ms": pct(r["itl"], 50) * 1e3, "itl_p95_ms": pct(r["itl"], 95) * 1e3,
                 "rss_mib": await rss(session, args.url) / 2**20, "error_samples": r["errors"][:3]}
            windows.append(w)
            print(json.dumps(w), flush=True)
            win_start = now
        await asyncio.gather(*tasks)
        tail = rec_ref[0]
        rss1 = await rss(session, args.url)
    total_err = sum(w["errors"] for w in windows) + len(tail["errors"])
    print("\n| window end (s) | requests | errors | output tok/s | TTFT p50 / p95 (ms) | ITL p50 / p95 (ms) | RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for w in windows:
        print(f"| {w['t_end_s']} | {w['requests']} | {w['errors']} | {w['tok_per_s']:.1f} | {w['ttft_p50_ms']:.0f} / {w['ttft_p95_ms']:.0f} "
              f"| {w['itl_p50_ms']:.1f} / {w['itl_p95_ms']:.1f} | {w['rss_mib']:.1f} |")
    print(f"\nRSS start {rss0 / 2**20:.1f} MiB, end {rss1 / 2**20:.1f} MiB; errors {total_err} "
          f"(+{tail['done']} requests finished after the last window)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "windows": windows, "rss_start_mib": rss0 / 2**20, "rss_end_mib": rss1 / 2**20,
                       "errors": total_err}, f, indent=1)


if __name__ == "__main__":
    asyncio.run(main())
