#!/usr/bin/env bash
# Check the project's own CUDA kernels (kernels/cuda/*.cu) without a GPU (recipe:
# ../shared/guides/cuda-build.md; nvcc 13.0 from PyPI):
#  1. compile each file to PTX and to cubin for sm_90 (H100/H200) and sm_80 (A100), warnings as
#     errors, every expected entry point present;
#  2. ptxas resource usage (-Xptxas -v) of every kernel: no register spills, no local memory, and
#     registers / shared memory equal to the checked-in baseline kernels/cuda/ptxas-baseline.txt
#     (`--update-baseline` rewrites it after an intended change; review the diff);
#  3. the kernels' logic on the CPU under ThreadSanitizer (kernels/simt: the unmodified .cu files
#     through the SIMT shim; `cargo test --workspace` runs the same tests without TSan);
#  4. hhh-kernels builds with --features cuda (build.rs embeds the PTX).
# The full `--features cuda` server build is scripts/build-cuda.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
UPDATE=0
[ "${1:-}" = "--update-baseline" ] && UPDATE=1
. scripts/cuda-env.sh
"$NVCC" --version | tail -2
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
declare -A ENTRIES=(
  [reshape_and_cache]="reshape_and_cache_f32 reshape_and_cache_f16 reshape_and_cache_bf16"
  [paged_attention]="paged_attention_partial_f32 paged_attention_partial_f16 paged_attention_partial_bf16 paged_attention_combine_f32 paged_attention_combine_f16 paged_attention_combine_bf16"
  [paged_prefill]="paged_prefill_f32_hd64 paged_prefill_f32_hd128 paged_prefill_f16_hd64 paged_prefill_f16_hd128 paged_prefill_bf16_hd64 paged_prefill_bf16_hd128"
)
USAGE=$OUT/usage.txt
: > "$USAGE"
for cu in kernels/cuda/*.cu; do
  name=$(basename "$cu" .cu)
  for arch in 90 80; do
    "$NVCC" --ptx -O3 -std=c++17 -arch=sm_$arch -Werror all-warnings -o "$OUT/$name.$arch.ptx" "$cu"
    for e in ${ENTRIES[$name]:?"no expected entries listed for $name"}; do
      grep -q "\.entry $e(" "$OUT/$name.$arch.ptx" || { echo "$name.cu (sm_$arch): entry $e missing from the PTX"; exit 1; }
    done
    "$NVCC" -cubin -O3 -std=c++17 -arch=sm_$arch -Werror all-warnings -Xptxas -v -o "$OUT/$name.$arch.cubin" "$cu" 2> "$OUT/ptxas.log"
    # One line per kernel: arch kernel registers smem stack spill_stores spill_loads
    python3 - "$OUT/ptxas.log" "$arch" >> "$USAGE" <<'PY'
import re, sys
cur = None
for line in open(sys.argv[1]):
    m = re.search(r"Compiling entry function '(\w+)'", line)
    if m:
        cur = {"name": m.group(1)}
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m and cur is not None:
        cur["stack"], cur["st"], cur["ld"] = m.groups()
        continue
    m = re.search(r"Used (\d+) registers", line)
    if m and cur is not None:
        smem = re.search(r"(\d+) bytes smem", line)
        print(f"sm_{sys.argv[2]} {cur['name']} regs={m.group(1)} smem={smem.group(1) if smem else 0} stack={cur.get('stack')} spill_stores={cur.get('st')} spill_loads={cur.get('ld')}")
        cur = None
PY
  done
  echo "ok: $cu -> PTX and cubin for sm_90 and sm_80 ($(grep -c '\.entry' "$OUT/$name.90.ptx") entry points)"
done
sort -o "$USAGE" "$USAGE"
bad=$(grep -vE "stack=0 spill_stores=0 spill_loads=0$" "$USAGE" || true)
[ -z "$bad" ] || { echo "register spills or local memory:"; echo "$bad"; exit 1; }
expected=$(grep -c . <<< "$(for e in "${ENTRIES[@]}"; do echo $e; done | tr ' ' '\n')")
[ "$(wc -l < "$USAGE")" -eq $((2 * expected)) ] || { echo "ptxas reported $(wc -l < "$USAGE") kernels, expected $((2 * expected))"; cat "$USAGE"; exit 1; }
BASE=kernels/cuda/ptxas-baseline.txt
if [ $UPDATE = 1 ]; then
  { echo "# ptxas -v of every kernel (scripts/check-cuda.sh --update-baseline); nvcc $("$NVCC" --version | grep -o 'V[0-9][0-9.]*' | tail -1)"; cat "$USAGE"; } > "$BASE"
  echo "wrote $BASE"
elif ! diff <(grep -v '^#' "$BASE") "$USAGE" > "$OUT/diff"; then
  echo "ptxas resource usage differs from $BASE (< baseline, > now); if intended, run scripts/check-cuda.sh --update-baseline:"
  cat "$OUT/diff"; exit 1
fi
echo "ok: no spills, no local memory; registers and shared memory as in $BASE ($(wc -l < "$USAGE") kernels)"
# The kernels' logic under ThreadSanitizer (a few random steps: TSan is slow). The CPU twins run
# on one thread here (RAYON_NUM_THREADS=1): they are Rust, not instrumented, and TSan would
# report their atomics-synchronised pool as races.
# The test binary is a plain main (harness = false): libtest's threads synchronise inside Rust's
# uninstrumented std and were reported as races. No suppressions: every report is fatal.
rc=0
RAYON_NUM_THREADS=1 HHH_SIMT_TSAN=1 HHH_SIMT_CASES=2 CARGO_TARGET_DIR=target/tsan \
  cargo test -q --release -p hhh-kernels-simt --test kernels > "$OUT/tsan.log" 2>&1 || rc=$?
tail -3 "$OUT/tsan.log"
if [ $rc -ne 0 ] || grep -q "ThreadSanitizer" "$OUT/tsan.log"; then
  echo "SIMT tests under ThreadSanitizer failed (exit $rc); the reports:"
  grep -A40 "WARNING: ThreadSanitizer" "$OUT/tsan.log" | cut -c1-220 | head -120 || true
  grep -B2 -A10 "panicked" "$OUT/tsan.log" | head -40 || true
  exit 1
fi
echo "ok: the kernels' SIMT tests pass under ThreadSanitizer with no race reported"
NVCC="$NVCC" cargo build -q -p hhh-kernels --features cuda
echo "ok: hhh-kernels builds with --features cuda (PTX embedded)"
