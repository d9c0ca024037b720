#!/usr/bin/env bash
# Link-time stubs for cudarc's "dynamic-linking": the right SONAMEs and cudarc's symbol names, so
# that a `--features cuda` binary links on a machine with no CUDA driver or libraries
# (../shared/guides/cuda-build.md). Every stub returns 34 (CUDA_ERROR_STUB_LIBRARY): never put them
# on LD_LIBRARY_PATH and never ship them; on a GPU machine the real libraries are loaded.
# usage: make-cuda-link-stubs.sh OUT_DIR [CUDARC_SRC_DIR]   (env CUDA_MAJOR=13, CC=cc)
set -euo pipefail
out="${1:?usage: $0 OUT_DIR [CUDARC_SRC_DIR]}"; src="${2:-}"
major="${CUDA_MAJOR:-13}"; cc="${CC:-cc}"
if [ -z "$src" ]; then
  src="$(cargo metadata --format-version 1 2>/dev/null | python3 -c '
import json, os, sys
m = json.load(sys.stdin)
p = [x for x in m["packages"] if x["name"] == "cudarc"]
print(os.path.dirname(p[0]["manifest_path"]) if p else "")')"
  # Optional dependencies are absent from plain `cargo metadata`: take the fetched copy.
  [ -n "$src" ] || src="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | sort -V | tail -1)"
fi
[ -d "$src/src/driver/sys" ] || { echo "cudarc source not found (got '$src')" >&2; exit 1; }
mkdir -p "$out"; tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
for spec in "driver:cuda:libcuda.so.1" "cublas:cublas:libcublas.so.$major" \
            "cublaslt:cublasLt:libcublasLt.so.$major" "curand:curand:libcurand.so.10" \
            "nvrtc:nvrtc:libnvrtc.so.$major"; do
  IFS=: read -r mod lib soname <<< "$spec"
  grep -ohE '^pub unsafe fn [A-Za-z_][A-Za-z0-9_]*' "$src/src/$mod/sys/mod.rs" | awk '{print $4}' \
    | sort -u | awk '{print "int " $1 "(void) { return 34; }"}' > "$tmp/$lib.c"
  "$cc" -shared -fPIC -Wl,-soname,"$soname" -o "$out/lib$lib.so" "$tmp/$lib.c"
done
