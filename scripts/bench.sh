#!/usr/bin/env bash
# Side-by-side CPU benchmark: hhh-server vs llama.cpp's llama-server on the default GGUF, same
# threads (2) and context, one after the other in one run, driven by hhh-loadtest (loadtests/).
# Rewrites the "llama.cpp comparison" section of docs/benchmarks.md (between the markers) and
# leaves the rest of that file alone; raw JSON, summaries and plots go under .bench/.
#
#   make bench                                   # builds llama.cpp from the llama-cpp-python sdist if needed
#   LLAMA_SERVER=/path/llama-server make bench
#   BENCH_CONCURRENCY="1 4 8 16" BENCH_REQUESTS_PER_CLIENT=2 BENCH_REPS=3 make bench
#   BENCH_REPORT_ONLY=1 BENCH_CONCURRENCY="1 4 16" bash scripts/bench.sh   # table from existing JSON
#
# Figures per repetition: single-stream decode tok/s (1000 / TPOT p50 at C=1), prompt tok/s for
# 512-token prompts (prompt tokens / TTFT p50, 1 client, max_tokens 1), aggregate output tok/s,
# TTFT and ITL p50 at each concurrency (hh-rlhf chat prompts, 128 output tokens, ignore_eos).
# The table gives the median over repetitions and the min–max spread of the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.bench
mkdir -p "$OUT" docs
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
CONC=${BENCH_CONCURRENCY:-"1 4 8 16 32 64"}
PER=${BENCH_REQUESTS_PER_CLIENT:-2}
REPS=${BENCH_REPS:-3}
PORT_OURS=18081
PORT_LLAMA=18082
LT=./target/release/hhh-loadtest
[[ -n ${BENCH_REPORT_ONLY:-} ]] || cargo build --release -p hhh-server -p hhh-loadtest

if [[ -z "${LLAMA_SERVER:-}" && -z "${BENCH_REPORT_ONLY:-}" ]]; then
  LLAMA_SERVER=$OUT/llama.cpp/build/bin/llama-server
  if [[ ! -x $LLAMA_SERVER || ! -x $OUT/llama.cpp/build/bin/llama-bench ]]; then
    python3 -m pip install --quiet cmake ninja
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d $OUT/src
    tar xzf $OUT/src/llama_cpp_python-0.3.36.tar.gz -C $OUT/src
    rm -rf $OUT/llama.cpp && cp -r $OUT/src/llama_cpp_python-0.3.36/vendor/llama.cpp $OUT/llama.cpp
    cmake -S $OUT/llama.cpp -B $OUT/llama.cpp/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
      -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
    cmake --build $OUT/llama.cpp/build --target llama-server llama-bench -j2
  fi
fi

wait_ready() { for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0; sleep 0.2; done; return 1; }
# KV capacity in tokens for C clients, the same for both: 16 384 up to 32 clients (llama.cpp's
# `-c`, split into C slots), 384 per client beyond (64 clients: 24 576, 384 per slot).
kv_tokens() { local t=$(( $1 * 384 )); echo $(( t > 16384 ? t : 16384 )); }
start_ours() { RUST_LOG=warn ./target/release/hhh-server serve --model $MODEL --port $PORT_OURS --threads 2 --max-num-seqs 64 --num-kv-blocks $(( $(kv_tokens "$1") / 16 )) & echo $! > $OUT/pid; wait_ready $PORT_OURS; }
start_llama() { $LLAMA_SERVER -m $MODEL -t 2 -tb 2 -np "$1" -c "$(kv_tokens "$1")" -cb --host 127.0.0.1 --port $PORT_LLAMA --log-disable >/dev/null 2>&1 & echo $! > $OUT/pid; wait_ready $PORT_LLAMA; }
stop() { kill "$(cat $OUT/pid)" 2>/dev/null || true; wait "$(cat $OUT/pid)" 2>/dev/null || true; sleep 1; }
peak_rss() { awk '/VmHWM/ {print int($2/1024)}' /proc/"$(cat $OUT/pid)"/status; }
# Wait (at most 60 s) until the machine is quiet: < 10 % CPU busy over one second.
quiet() {
  local a b c d e f g h busy idle  # `c` would otherwise clobber the caller's client count
  for _ in $(seq 1 60); do
    read -r _ a b c d _ < /proc/stat; sleep 1; read -r _ e f g h _ < /proc/stat
    busy=$(( (e + f + g) - (a + b + c) )); idle=$(( h - d ))
    (( (busy * 100) < 10 * (busy + idle + 1) )) && return 0
  done
  echo "warning: machine not quiet after 60 s" >&2
}
start() { quiet; if [[ $1 == ours ]]; then start_ours "$2"; PORT=$PORT_OURS; NAME=smollm2-135m-instruct; else start_llama "$2"; PORT=$PORT_LLAMA; NAME=smollm2; fi; }

# BENCH_REPORT_ONLY=1: rebuild the table from the JSON already under .bench/ (no runs).
for rep in $( [[ -n ${BENCH_REPORT_ONLY:-} ]] || seq 1 "$REPS"); do
  for c in $CONC; do
    n=$(( c * PER > 8 ? c * PER : 8 ))
    for who in ours llama; do
      start $who "$c"
      $LT --base-url "http://127.0.0.1:$PORT" --model $NAME --scenario chat --max-concurrency "$c" --num-requests "$n" \
        --output-len 128 --ignore-eos --warmup 2 --seed "$rep" --quiet --out "$OUT/r$rep/$who-c$c" >/dev/null
      peak_rss > "$OUT/r$rep/$who-c$c/peak_rss_mib"; stop
    done
  done
  for who in ours llama; do
    start $who 1
    $LT --base-url "http://127.0.0.1:$PORT" --model $NAME --scenario random --input-len 512 --output-len 1 \
      --max-concurrency 1 --num-requests 5 --warmup 1 --seed "$rep" --quiet --out "$OUT/r$rep/$who-pp512" >/dev/null
    stop
  done
done

# llama-bench once (the anchor's own figures for pp512 / tg128, outside any server).
LLAMA_BENCH=$(dirname "${LLAMA_SERVER:-$OUT/llama.cpp/build/bin/llama-server}")/llama-bench
if [[ -z ${BENCH_REPORT_ONLY:-} && -x $LLAMA_BENCH ]]; then
  quiet; $LLAMA_BENCH -m $MODEL -t 2 -p 512 -n 128 -r 3 -o md > "$OUT/llama-bench.md" 2>/dev/null || true
fi

python3 - "$OUT" "$REPS" $CONC > "$OUT/section.md" <<'PY'
import json, statistics, subprocess, sys, datetime, os
out, reps, concs = sys.argv[1], int(sys.argv[2]), list(dict.fromkeys(sys.argv[3:]))
def rep(r, who, point):
    d = f"{out}/r{r}/{who}-{point}"
    return json.load(open(f"{d}/{os.listdir(d) and [f for f in os.listdir(d) if f.startswith('point-')][0]}"))
med = lambda xs: statistics.median(xs)
cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
print("<!-- bench:llama.cpp:start (generated by scripts/bench.sh; edits inside are overwritten) -->")
print(f"## Side by side with llama.cpp\n")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
flags = next(l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags"))
simd = " ".join(f for f in flags if f in ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile"))
print(f"Generated by `make bench` (scripts/bench.sh, driven by `hhh-loadtest`) on {datetime.date.today()} at commit {commit}, {cpu} (SIMD flags: {simd}), {os.cpu_count()} cores, "
      f"{reps} repetition(s). Both servers: SmolLM2-135M-Instruct Q4_1 GGUF, 2 threads, streaming chat on hh-rlhf prompts, "
      "128 output tokens, temperature 0, ignore_eos; closed loop. llama.cpp: llama-server from llama-cpp-python 0.3.36's "
      "vendored tree, `-np C -c T -cb`; ours: `--num-kv-blocks T/16`, with T = 16 384 tokens up to 32 clients and 384 per client beyond "
      "(f16 K/V in both, llama.cpp's default). The two servers alternate per point within each repetition; token counts are each server's own `usage`.\n")
print("| server | clients | output tok/s | TTFT p50 ms | ITL p50 ms | TPOT p50 ms | failed | peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|")
for c in concs:
    for who in ("ours", "llama"):
        rs = [rep(r, who, f"c{c}") for r in range(1, reps + 1)]
        rss = max(int(open(f"{out}/r{r}/{who}-c{c}/peak_rss_mib").read()) for r in range(1, reps + 1))
        L = lambda k: med([x["latency"][k]["median"] for x in rs])
        print(f"| {who} | {c} | {med([x['output_token_throughput'] for x in rs]):.1f} | {L('ttft_ms'):.0f} | {L('itl_ms'):.1f} | {L('tpot_ms'):.1f} | {sum(x['failed'] for x in rs)} | {rss} |")
print("\n| figure (median over repetitions) | ours | llama.cpp | ratio ours/llama.cpp | ratio min–max |")
print("|---|---|---|---|---|")
def row(name, f):
    a = [f(rep(r, "ours", p)) for r, p in pts]; b = [f(rep(r, "llama", p)) for r, p in pts]
    ratios = [x / y for x, y in zip(a, b)]
    print(f"| {name} | {med(a):.1f} | {med(b):.1f} | {med(ratios):.2f} | {min(ratios):.2f}–{max(ratios):.2f} |")
if "1" in concs:
    pts = [(r, "c1") for r in range(1, reps + 1)]
    row("single-stream decode tok/s (1000 / TPOT p50, C=1)", lambda x: 1000 / x["latency"]["tpot_ms"]["median"])
pts = [(r, "pp512") for r in range(1, reps + 1)]
row("prompt tok/s, 512-token prompt (prompt tokens / TTFT p50)", lambda x: x["prompt_tokens"] / x["completed"] / x["latency"]["ttft_ms"]["median"] * 1000)
for c in concs:
    pts = [(r, f"c{c}") for r in range(1, reps + 1)]
    row(f"aggregate output tok/s, {c} clients", lambda x: x["output_token_throughput"])
# TTFT and peak RSS at 16 clients (the goals' point) when it was run, and at the most clients.
for top in dict.fromkeys(([c for c in concs if c == "16"] + [concs[-1]])):
    pts = [(r, f"c{top}") for r in range(1, reps + 1)]
    row(f"TTFT p50 ms, {top} clients (lower is better)", lambda x: x["latency"]["ttft_ms"]["median"])
    a = [int(open(f"{out}/r{r}/ours-c{top}/peak_rss_mib").read()) for r in range(1, reps + 1)]
    b = [int(open(f"{out}/r{r}/llama-c{top}/peak_rss_mib").read()) for r in range(1, reps + 1)]
    ratios = [x / y for x, y in zip(a, b)]
    print(f"| peak RSS MiB, {top} clients (lower is better) | {med(a):.0f} | {med(b):.0f} | {med(ratios):.2f} | {min(ratios):.2f}–{max(ratios):.2f} |")
if os.path.exists(f"{out}/llama-bench.md"):
    print("\nllama-bench in the same run (`-t 2 -p 512 -n 128 -r 3`, the anchor without a server):\n")
    print(open(f"{out}/llama-bench.md").read().strip())
print("\n<!-- bench:llama.cpp:end -->")
PY

# Replace the generated section of docs/benchmarks.md (or put it first after the title).
python3 - "$OUT/section.md" docs/benchmarks.md <<'PY'
import sys, re
section, path = open(sys.argv[1]).read().strip(), sys.argv[2]
try:
    doc = open(path).read()
except FileNotFoundError:
    doc = "# Benchmarks\n"
pat = re.compile(r"<!-- bench:llama\.cpp:start.*?<!-- bench:llama\.cpp:end -->", re.S)
if pat.search(doc):
    doc = pat.sub(lambda _: section, doc)
else:
    head, _, rest = doc.partition("\n")
    doc = f"{head}\n\n{section}\n{rest}"
open(path, "w").write(doc)
PY
cat "$OUT/section.md"
