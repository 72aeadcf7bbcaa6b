"""DISROUTER_REQUIRE_LLM=1 (set by scripts/test.sh) turns a missing LLM dependency from a skip
into a failure, so CI cannot pass on a broken install; without it a developer gets skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CASES = '''
import pytest
from tests.requirements import require_module, skip_or_fail

@pytest.mark.needs_module("disrouter_no_such_module")
def test_marked():
    pass

def test_required_in_the_body():
    require_module("disrouter_no_such_module")

def test_fixture_style():
    skip_or_fail("vLLM is not installed")
'''


def run(tmp_path: Path, require: str | None) -> subprocess.CompletedProcess:
    test = tmp_path / "test_cases.py"
    test.write_text(CASES)
    env = {k: v for k, v in os.environ.items() if k != "DISROUTER_REQUIRE_LLM"}
    if require is not None:
        env["DISROUTER_REQUIRE_LLM"] = require
    env["PYTHONPATH"] = str(ROOT)  # `tests.requirements`, imported as the suite imports it
    # -p tests.conftest: the suite's hooks (the marker), as they apply under tests/.
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           "--rootdir", str(tmp_path), str(test)], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_missing_llm_dependencies_skip_for_developers(tmp_path):
    result = run(tmp_path, None)
    assert result.returncode == 0, result.stdout
    assert "3 skipped" in result.stdout


def test_missing_llm_dependencies_fail_when_required(tmp_path):
    result = run(tmp_path, "1")
    assert result.returncode == 1, result.stdout
    # The marker fails the test in its set-up (an error), the calls fail it in its body.
    assert "2 failed, 1 error" in result.stdout and "skipped" not in result.stdout
    assert "DISROUTER_REQUIRE_LLM=1 makes that a failure" in result.stdout


def test_the_test_command_requires_them():
    assert "DISROUTER_REQUIRE_LLM" in (ROOT / "scripts" / "test.sh").read_text()
