"""File references in topologies: a path, or `pkg:<package>/<file>` for a file shipped inside a
Python package (a bundled replay trace, a trained adapter), so a plain `serve deploy` finds it
wherever the package is installed."""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def resolve_path(ref: str) -> Path:
    if ref.startswith("pkg:"):
        package, _, name = ref[4:].partition("/")
        return Path(str(importlib.resources.files(package).joinpath(name)))
    return Path(ref).expanduser()
