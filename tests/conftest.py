"""Suite-wide test options: the `needs_module` marker (skips, or fails under
DISROUTER_REQUIRE_LLM=1, when an optional dependency is missing; see tests/requirements.py)."""

from __future__ import annotations

from tests.requirements import require_module


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "needs_module(name): needs an optional module (vllm, trl); skipped without it, failed "
        "instead when DISROUTER_REQUIRE_LLM=1",
    )


def pytest_runtest_setup(item) -> None:
    for mark in item.iter_markers("needs_module"):
        require_module(*mark.args)
