#!/usr/bin/env bash
# The main job on the embedded default: set up, start the local stack (Tansu broker + Ray head
# on 127.0.0.1), deploy the default topology, and ask it a question. `disrouter down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0
if [ -x .venv/bin/disrouter ] && .venv/bin/disrouter --help | grep -q " models "; then
  .venv/bin/disrouter models pull
fi
.venv/bin/disrouter down >/dev/null 2>&1 || true
.venv/bin/disrouter up "$@"
# A two-step word problem from the held-out arith questions: the trained SmolLM2 says "I don't
# know!" in 1 token (`reject_at`) and Qwen works it out (22) — the trail shows the route.
.venv/bin/disrouter ask "${DISROUTER_DEMO_QUESTION:-Lena has 10 baskets with 3 stickers in each. She gives away 8 stickers. How many stickers does Lena have left?}"
echo
echo "The stack keeps running: 'source .venv/bin/activate', then 'disrouter ask \"...\"'; stop it with 'disrouter down'."
