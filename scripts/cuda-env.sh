# Sourced by the CUDA scripts: a venv with nvcc 13.0 and the CUDA runtime headers from PyPI
# (../shared/guides/cuda-build.md), installed once per machine; exports CUDA_HOME, NVCC, PATH.
VENV=${CUDA_VENV:-$HOME/.cache/cuda13-venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
_nvcc_path() { "$VENV/bin/python" -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],"cu13","bin","nvcc"))' 2>/dev/null; }
[ -x "$(_nvcc_path)" ] || "$VENV/bin/pip" install -q "cuda-toolkit[nvcc,crt,nvvm,cudart,cccl]==13.0.2"
CUDA_HOME="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
NVCC=$CUDA_HOME/bin/nvcc
export CUDA_HOME NVCC PATH="$CUDA_HOME/bin:$PATH"
