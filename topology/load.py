"""Reading a topology: YAML file → Serve config → typed, validated Topology.

A topology file is a Ray Serve config; the topology lives in the `args:` of the application
whose `import_path` is DiSRouter's builder. Decoding is strict (unknown fields are errors) and
every error names its field, with the agent's name where there is one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from disrouter.topology.errors import TopologyError
from disrouter.topology.schema import Topology
from disrouter.topology.validate import validate

BUILDER = "disrouter.topology.app:build_app"
# Engine options that name files: relative values are resolved against the topology file's
# folder, because replicas run with another working directory (so are adapters' paths, below).
PATH_OPTIONS = ("trace", "model", "tokenizer", "api_key_file")
# Engine options that name an adapter, `{name, path}`: their `path` is a path option too.
ADAPTER_OPTIONS = ("lora", "gate_lora")


def engine_paths(engine: dict[str, Any]) -> dict[str, Any]:
    """The engine's path-valued options by their dotted field name (`model`, `lora.path`, …);
    values as the topology gives them (any type: validation names a wrong one)."""
    paths = {key: engine.get(key) for key in PATH_OPTIONS}
    for key in ADAPTER_OPTIONS:
        adapter = engine.get(key)
        if isinstance(adapter, dict):
            paths[f"{key}.path"] = adapter.get("path")
    return paths


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TopologyError([("file", f"{path} does not exist")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "file"
        raise TopologyError([(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")], str(path)) from None
    if not isinstance(data, dict):
        raise TopologyError([("file", "must be a mapping (a Ray Serve config with `applications:`)")], str(path))
    return data


def find_application(config: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    apps = config.get("applications")
    if not isinstance(apps, list) or not apps:
        raise TopologyError([("applications", "a Serve config needs a non-empty `applications:` list")])
    ours = [a for a in apps if isinstance(a, dict) and a.get("import_path") == BUILDER]
    if name is not None:
        ours = [a for a in ours if a.get("name") == name]
    if not ours:
        raise TopologyError([("applications[].import_path", f"no application with import_path {BUILDER!r}" + (f" and name {name!r}" if name else ""))])
    return ours[0]


_AT = re.compile(r"`\$(?P<path>[^`]*)`")


def _field_path(raw: dict[str, Any], error: str) -> tuple[str, str]:
    """Turn msgspec's "... - at `$.agents[1].cost`" into ("agents[1] (small).cost", "...")."""
    match = _AT.search(error)
    message = error.split(" - at ")[0]
    if not match:
        return "args", message
    path = match.group("path").lstrip(".")
    agent = re.match(r"agents\[(\d+)\]", path)
    if agent:
        index = int(agent.group(1))
        agents = raw.get("agents") or []
        if index < len(agents) and isinstance(agents[index], dict) and "name" in agents[index]:
            path = path.replace(f"agents[{index}]", f"agents[{index}] ({agents[index]['name']})", 1)
    return path or "args", message


def parse_topology(args: dict[str, Any], base_dir: Path | None = None, source: str | None = None) -> Topology:
    """Decode and validate a topology from a Serve application's `args:` mapping."""
    try:
        topology = msgspec.convert(args, Topology)
    except msgspec.ValidationError as exc:
        raise TopologyError([_field_path(args, str(exc))], source) from None
    if base_dir is not None:
        key_file = topology.trust.key_file
        if key_file and key_file.startswith(("./", "../")):
            topology.trust = msgspec.structs.replace(topology.trust, key_file=str((base_dir / key_file).resolve()))
        for agent in topology.agents:
            for field, value in engine_paths(agent.engine).items():
                if isinstance(value, str) and value.startswith(("./", "../")):
                    key, _, sub = field.partition(".")
                    resolved = str((base_dir / value).resolve())
                    agent.engine[key] = {**agent.engine[key], sub: resolved} if sub else resolved
    validate(topology, source)
    return topology


def read_application(path: Path, app_name: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A topology file's Serve config and its DiSRouter application; errors name the file."""
    config = read_yaml(path)
    try:
        return config, find_application(config, app_name)
    except TopologyError as exc:
        raise TopologyError(exc.problems, str(path)) from None


def load_topology(path: str | Path, app_name: str | None = None) -> tuple[dict[str, Any], Topology]:
    """Read a topology file; returns the Serve config (paths resolved) and the Topology."""
    path = Path(path)
    config, app = read_application(path, app_name)
    topology = parse_topology(app.get("args") or {}, path.parent.resolve(), str(path))
    app["args"] = msgspec.to_builtins(topology)
    return config, topology
