"""The layout keeps one concept per folder: the runtime stands alone, benchmarks are not
evaluation, and the command list says what is really there."""

from __future__ import annotations

import argparse
import ast
import importlib
import re
from pathlib import Path

from disrouter import cli

ROOT = Path(__file__).resolve().parents[2]
OTHER_FOLDERS = ("topology", "stack", "client", "gateway", "evaluation", "bench", "training")


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_runtime_imports_none_of_the_other_folders():
    # What runs inside a replica depends on its own config struct only (actors/config.py).
    offending = {
        str(path.relative_to(ROOT)): sorted(n for n in imports(path) if n.split(".")[:2] in [["disrouter", f] for f in OTHER_FOLDERS])
        for path in (ROOT / "actors").rglob("*.py")
    }
    assert {k: v for k, v in offending.items() if v} == {}
    assert not (ROOT / "actors" / "commands.py").exists(), "the CLI does not live in the runtime"


def test_bench_holds_performance_benchmarks_only():
    modules = {p.stem for p in (ROOT / "bench").glob("*.py")} - {"__init__"}
    assert modules == {"chain_cpu", "fabric", "llm_throughput", "load"}  # load: the benchmarks' shared load loop


def test_the_command_list_names_exactly_the_registered_commands():
    source = (ROOT / "disrouter" / "cli.py").read_text()
    listed = dict(re.findall(r'^\s+"([\w.]+)",\s+#\s*(.+)$', source, flags=re.M))
    assert list(listed) == cli.COMMAND_MODULES
    for module_name, comment in listed.items():
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module_name).register(sub)
        assert sorted(sub.choices) == sorted(c.strip() for c in comment.split(",")), module_name
