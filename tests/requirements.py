"""Optional test dependencies (vLLM, TRL): skipped where they are missing, failed where required.

A developer without the `cpu` extra gets skips; CI must not: scripts/test.sh sets
DISROUTER_REQUIRE_LLM=1, which turns every such skip into a failure, so a broken install can
never pass as green.
"""

from __future__ import annotations

import importlib
import os

import pytest

REQUIRE_LLM = os.environ.get("DISROUTER_REQUIRE_LLM") == "1"


def skip_or_fail(reason: str) -> None:
    if REQUIRE_LLM:
        pytest.fail(f"{reason}, and DISROUTER_REQUIRE_LLM=1 makes that a failure", pytrace=False)
    pytest.skip(reason)


def require_module(name: str, hint: str = "pip install -e '.[cpu]'") -> None:
    """Skip (or fail, see above) unless `name` imports."""
    try:
        importlib.import_module(name)
    except ImportError as exc:
        skip_or_fail(f"{name} is not installed ({hint}): {exc}")
