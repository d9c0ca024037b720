#!/usr/bin/env bash
# The GPU check, one command for a machine with an NVIDIA GPU (at most ~9 minutes):
#   scripts/gpu-check.sh [--dry-run] [OUT_DIR]
# It uses binaries built elsewhere and carried over, never builds on the GPU machine:
#   dist/hhh-server.xz   scripts/build-cuda.sh --pack (x86-64-v3, stripped, xz; CUDA 13.0)
#   dist/wheels/         the `openai` client and its dependencies (same command), installed offline
# Stages, each under a timeout, each writing JSON under OUT_DIR (default gpu-check-out/):
#   gpu.txt            the card, its memory and driver (nvidia-smi)
#   gpu-check.json     hhh-server gpu-check: kernels vs CPU twins, GPU vs CPU decoding, benchmarks
#   server.json        hhh-server serve --device cuda on a random model + the official openai client
# Without a GPU it fails with a message; it never skips a stage. --dry-run runs everything it
# can on this machine's CPU (candle's CPU backend, small shapes) with target/release/hhh-server.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:-gpu-check-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT/failure.json"
fail() { echo "gpu-check: $*" >&2; echo "{\"pass\": false, \"error\": \"$*\"}" > "$OUT/failure.json"; exit 1; }

if [ $DRY = 1 ]; then
  BIN=target/release/hhh-server
  [ -x "$BIN" ] || cargo build --release -p hhh-server
  DEVICE=candle-cpu
  DRYFLAG=--dry-run
  SERVE_POOL=(--num-kv-blocks 256)
  echo "dry run on $(nproc) CPU cores: no GPU involved" > "$OUT/gpu.txt"
else
  command -v nvidia-smi >/dev/null 2>&1 || fail "no NVIDIA driver here (nvidia-smi not found): run this on a GPU machine, or use --dry-run"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || fail "nvidia-smi found no GPU: $(cat "$OUT/gpu.txt")"
  [ -f dist/hhh-server.xz ] || fail "dist/hhh-server.xz is missing: build it with scripts/build-cuda.sh --pack and carry dist/ over"
  BIN=$(mktemp -d)/hhh-server
  xz -dc dist/hhh-server.xz > "$BIN"; chmod +x "$BIN"
  # CUDA 13 libraries from the machine's PyTorch wheels (site-packages/nvidia/*/lib).
  LIBS=$(python3 -c 'import nvidia, os, glob; print(":".join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib")))))' 2>/dev/null || true)
  [ -n "$LIBS" ] || fail "no CUDA libraries found under python3's nvidia package (expected PyTorch's cu13 wheels)"
  export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  DEVICE=cuda
  DRYFLAG=
  SERVE_POOL=(--gpu-memory-utilization 0.5)  # the memory planner sizes the pool
fi
cat "$OUT/gpu.txt"

# Stage 1: kernels, decoding, benchmarks.
timeout 420 "$BIN" gpu-check $DRYFLAG --out "$OUT/gpu-check.json" 2> "$OUT/gpu-check.log" || S1=$?
tail -5 "$OUT/gpu-check.log"

# Stage 2: the server end to end with the official openai client.
PY=python3
if ! $PY -c "import openai" 2>/dev/null; then
  [ -d dist/wheels ] || fail "the openai client is not installed and dist/wheels is missing"
  $PY -m venv "$OUT/venv" && "$OUT/venv/bin/pip" install -q --no-index --find-links dist/wheels openai || fail "installing openai from dist/wheels failed"
  PY="$OUT/venv/bin/python"
fi
"$BIN" gpu-check --write-model "$OUT/model" > /dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" serve --model "$OUT/model" --served-model-name random --device $DEVICE --port "$PORT" --max-model-len 1024 \
  "${SERVE_POOL[@]}" > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "127.0.0.1:$PORT/health/ready" > /dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { tail -20 "$OUT/server.log"; fail "the server exited during start-up"; }
  sleep 1
done
S2=0
timeout 120 $PY tests/gpu_openai_smoke.py "http://127.0.0.1:$PORT" random "$OUT/server.json" || S2=$?
curl -s "127.0.0.1:$PORT/metrics" | grep -E '^hhh_model_info|^hhh_kv_cache' > "$OUT/metrics.txt" || true
kill -TERM $SERVER; wait $SERVER || true
trap - EXIT
echo "results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
[ "${S1:-0}" = 0 ] || fail "gpu-check stage failed (exit ${S1}); see $OUT/gpu-check.json"
[ $S2 = 0 ] || fail "the openai client stage failed; see $OUT/server.log"
echo "gpu-check: pass"
