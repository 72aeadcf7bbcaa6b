"""The built wheel works on its own: every module, every data file, every command's --help.

A fresh clone's `pip install .` (not editable) is what users get, and only the wheel's contents
reach them. So: build the wheel from the files a commit would hold, install it with `--no-deps`
into a fresh venv, and import everything *from that venv*, with the source tree off sys.path.

What this proves: the wheel carries every module and package-data file of the source tree, the
package mapping (`actors/` → `disrouter.actors`, subpackages included) is right, the console
script works, and every module imports. What it does not prove: that the dependency metadata
resolves in a clean environment. The third-party packages come from the project's venv, through
a `.pth` line naming its site-packages (a plain path: that directory's own `.pth` files, among
them the editable install's finder, are not run), because a clean install of the extras (vLLM,
torch) takes far longer than a test may.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Every top-level package folder of the tree (found here, not copied from setup.py, so a folder
# setup.py forgets is caught).
FOLDERS = tuple(sorted(d.name for d in ROOT.iterdir() if (d / "__init__.py").is_file() and d.name not in ("disrouter", "tests")))
DATA = {"examples": ["*.yaml", "*.jsonl", "adapters/*/*"], "training": ["recipes/*.yaml"], "topology": ["crds/*.json", "crds/NOTICE"]}

# Runs inside the fresh venv: imports every module of the installed package, lists the
# subcommands, and reports where everything came from.
PROBE = r"""
import argparse, importlib, json, pkgutil, sys
import disrouter
modules, failed = {}, {}
for info in pkgutil.walk_packages(disrouter.__path__, "disrouter."):
    try:
        modules[info.name] = getattr(importlib.import_module(info.name), "__file__", None)
    except Exception as exc:
        failed[info.name] = f"{type(exc).__name__}: {exc}"
from disrouter.cli import build_parser
def commands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from commands(sub, (*prefix, name))
print(json.dumps({"package": disrouter.__file__, "modules": modules, "failed": failed,
                  "commands": list(commands(build_parser())), "path": sys.path}))
"""


def source_files() -> list[Path]:
    """What a commit of this tree holds: tracked files plus untracked ones not ignored."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [ROOT / name for name in out.stdout.decode().split("\0") if name and (ROOT / name).is_file()]


def source_modules() -> set[str]:
    names = {"disrouter", "disrouter.cli"}
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "__pycache__" in parts or not all((ROOT.joinpath(*parts[:i]) / "__init__.py").exists() for i in range(1, len(parts))):
                continue
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            names.add(".".join(("disrouter", *parts)))
    return names


def test_the_wheel_alone_imports_every_module_and_runs_every_command(tmp_path):
    # 1. Build from a copy holding only what a commit would: nothing stray in the tree helps.
    src = tmp_path / "src"
    for path in source_files():
        target = src / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                   check=True, capture_output=True)
    (wheel,) = dist.glob("disrouter-*.whl")

    # 2. A fresh venv, the wheel alone, dependencies borrowed from the project venv.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "project-deps.pth").write_text("\n".join([sysconfig.get_paths()["purelib"], *site.getsitepackages()]) + "\n")

    # 3. Import everything in isolated mode (-I: no cwd, no PYTHONPATH), from outside the tree.
    run = subprocess.run([str(python), "-I", "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    probe = json.loads(run.stdout.strip().splitlines()[-1])
    assert probe["failed"] == {}
    assert Path(probe["package"]).is_relative_to(purelib), probe["package"]
    sources = {ROOT, ROOT / "disrouter", *(ROOT / f for f in FOLDERS)}
    assert not [p for p in probe["path"] if p and Path(p).resolve() in sources], "source tree on sys.path"
    outside = {m: f for m, f in probe["modules"].items() if f and not Path(f).is_relative_to(purelib)}
    assert outside == {}, f"modules not from the wheel: {outside}"
    missing = source_modules() - set(probe["modules"]) - {"disrouter"}
    assert missing == set(), f"modules of the source tree missing from the wheel: {sorted(missing)}"

    # 4. Package data: every file the globs select in the tree is in the installed package.
    for folder, patterns in DATA.items():
        for pattern in patterns:
            for path in (ROOT / folder).glob(pattern):
                if path.is_file() and ROOT / path.relative_to(ROOT) in set(source_files()):
                    assert (purelib / "disrouter" / folder / path.relative_to(ROOT / folder)).is_file(), path

    # 5. The console script, and --help of every command and subcommand.
    script = env_dir / "bin" / "disrouter"
    assert probe["commands"], "no subcommands found"
    for command in [(), *map(tuple, probe["commands"])]:
        helped = subprocess.run([str(script), *command, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert helped.returncode == 0 and "usage:" in helped.stdout, (command, helped.stderr[-2000:])
