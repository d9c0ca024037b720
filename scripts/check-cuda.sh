#!/usr/bin/env bash
# Compile the project's own CUDA kernels (kernels/cuda/*.cu) to PTX with nvcc 13.0 from PyPI —
# no GPU and no system CUDA needed (recipe: ../shared/guides/cuda-build.md) — for sm_90 (H100,
# H200) and sm_80 (A100), and check every expected kernel entry point is in the PTX. CI runs this
# on every run (`make test`); it does not run the kernels (that needs a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CUDA_VENV:-$HOME/.cache/cuda13-venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import nvidia" 2>/dev/null && [ -x "$("$VENV/bin/python" -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],"cu13","bin","nvcc"))')" ] \
  || "$VENV/bin/pip" install -q "cuda-toolkit[nvcc,crt,nvvm,cudart,cccl]==13.0.2"
CUDA_HOME="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
NVCC=$CUDA_HOME/bin/nvcc
"$NVCC" --version | tail -2
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
declare -A ENTRIES=(
  [reshape_and_cache]="reshape_and_cache_f32 reshape_and_cache_f16 reshape_and_cache_bf16"
  [paged_attention]="paged_attention_partial_f32 paged_attention_partial_f16 paged_attention_partial_bf16 paged_attention_combine_f32 paged_attention_combine_f16 paged_attention_combine_bf16"
)
for cu in kernels/cuda/*.cu; do
  name=$(basename "$cu" .cu)
  for arch in 90 80; do
    "$NVCC" --ptx -O3 -std=c++17 -arch=sm_$arch -Werror all-warnings -o "$OUT/$name.$arch.ptx" "$cu"
    for e in ${ENTRIES[$name]:?"no expected entries listed for $name"}; do
      grep -q "\.entry $e(" "$OUT/$name.$arch.ptx" || { echo "$name.cu (sm_$arch): entry $e missing from the PTX"; exit 1; }
    done
  done
  echo "ok: $cu -> PTX for sm_90 and sm_80 ($(grep -c '\.entry' "$OUT/$name.90.ptx") entry points)"
done
# The crate's build.rs path: `--features cuda` embeds the PTX (no candle CUDA build needed here).
NVCC="$NVCC" cargo build -q -p hhh-kernels --features cuda
echo "ok: hhh-kernels builds with --features cuda (PTX embedded)"
