#!/usr/bin/env bash
# Build `hhh-server --features cuda` (release) on a machine with no GPU and no system CUDA, from
# PyPI wheels and link stubs (../shared/guides/cuda-build.md): nvcc 13.0 (PTX ISA 9.0, which the
# GPU machines' driver 580 accepts), candle's kernels for compute capability $CUDA_COMPUTE_CAP
# (default 90: H100/H200), our kernels (kernels/cuda) embedded as PTX. CPU code is built for
# x86-64-v3 (the GPU host's CPU differs from this one), in its own target directory so that the
# CPU build's `native`-free flags and this one never invalidate each other.
# Output: target/cuda/release/hhh-server (and, with --pack, dist/hhh-server-cuda.xz: stripped,
# xz-compressed, for carrying to a GPU machine). About 17 minutes on 2 cores from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cuda-env.sh
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDARC_CUDA_VERSION=13000 CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}
export CARGO_TARGET_DIR=${HHH_CUDA_TARGET_DIR:-target/cuda}
export RUSTFLAGS="-C target-cpu=x86-64-v3"
STUBS="$VENV/cuda-link-stubs"
cargo fetch -q
[ -f "$STUBS/libcuda.so" ] || bash scripts/make-cuda-link-stubs.sh "$STUBS"
ln -sf "$CUDA_HOME/lib/libcudart.so.13" "$STUBS/libcudart.so"
export LIBRARY_PATH="$STUBS${LIBRARY_PATH:+:$LIBRARY_PATH}"
cargo build --release -p hhh-server --features cuda --bins
BIN=$CARGO_TARGET_DIR/release/hhh-server
echo "built $BIN ($(du -h "$BIN" | cut -f1)); needs: $(readelf -d "$BIN" | grep NEEDED | grep -o '\[.*\]' | tr -d '[]' | tr '\n' ' ')"
if [ "${1:-}" = "--pack" ]; then
  mkdir -p dist
  for b in "$BIN"; do
    [ -f "$b" ] || continue
    strip -o "dist/$(basename "$b")" "$b"
    xz -9 -T2 -f "dist/$(basename "$b")"
    echo "packed dist/$(basename "$b").xz ($(du -h "dist/$(basename "$b").xz" | cut -f1))"
  done
  # The openai client for the GPU machine (no network there), for the Pythons it may have.
  for v in 3.10 3.11 3.12 3.13; do
    python3 -m pip download -q --only-binary=:all: --python-version "$v" --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d dist/wheels "openai>=1.40" || echo "no openai wheels for python $v"
  done
  echo "dist/: $(du -sh dist | cut -f1)"
fi
