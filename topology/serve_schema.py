"""A Serve config checked the way `serve deploy` reads it, but strict: unknown keys are errors.

Ray's own schema models (`ray.serve.schema.ServeDeploySchema`, pydantic) ignore keys they do
not know, so a misspelt `num_replica:` deploys silently with the default. On a cluster that
costs a rollout to notice, so the config embedded in a RayService is checked here first:
every key against the fields of the model that reads it (recursively, aliases included), then
the values by Ray's models themselves, then DiSRouter's own `args:` by `parse_topology`, and
each agent's `ray_actor_options` by Ray's actor-options model, strictly as well.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

import pydantic

from disrouter.topology.errors import TopologyError
from disrouter.topology.load import BUILDER, parse_topology


def _models(annotation: Any) -> tuple[list[type[pydantic.BaseModel]], list[Any], list[Any]]:
    """The pydantic models an annotation can hold directly, plus the item types of its lists
    and the value types of its dicts (to recurse into)."""
    models: list[type[pydantic.BaseModel]] = []
    items: list[Any] = []
    values: list[Any] = []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(annotation):
            m, i, v = _models(arm)
            models += m
            items += i
            values += v
        return models, items, values
    if origin in (list, tuple, set):
        items += typing.get_args(annotation)[:1]
    elif origin is dict:
        args = typing.get_args(annotation)
        values += args[1:2]
    elif isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        models.append(annotation)
    return models, items, values


def _unknown_keys(value: Any, annotation: Any, where: str, problems: list[str]) -> None:
    models, items, values = _models(annotation)
    if isinstance(value, dict) and models:
        # A Union[Dict, Model] (autoscaling_config, …) is still read as the model in the end.
        model = models[0]
        fields = model.model_fields
        if model.model_config.get("extra") == "allow":
            return
        names = {name: name for name in fields} | {f.alias: name for name, f in fields.items() if f.alias}
        for key, item in value.items():
            if key not in names:
                close = difflib.get_close_matches(str(key), list(names), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{where or '<root>'}: unknown key {key!r} in {model.__name__}{hint}")
                continue
            _unknown_keys(item, fields[names[key]].annotation, f"{where}.{key}" if where else str(key), problems)
    elif isinstance(value, list) and items:
        for i, item in enumerate(value):
            for inner in items:
                _unknown_keys(item, inner, f"{where}[{i}]", problems)
    elif isinstance(value, dict) and values:
        for key, item in value.items():
            for inner in values:
                _unknown_keys(item, inner, f"{where}.{key}", problems)


def _type_errors(model: type[pydantic.BaseModel], value: Any, where: str) -> list[str]:
    try:
        model.model_validate(value)
    except pydantic.ValidationError as exc:
        out = []
        for err in exc.errors():
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            out.append(f"{where}{loc}".lstrip(".") + f": {err['msg']} (got {err.get('input')!r})")
        return out
    return []


def _engine_problems(topology: Any, where: str) -> list[str]:
    """vLLM engine options against vLLM's own AsyncEngineArgs (the CPU and CUDA builds of one
    release share them): a misspelt `tensor_parallel_sise` fails here, not on a GPU node."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return []
    import vllm.engine.arg_utils  # noqa: F401  (imported, the engine checks its options against it)

    from disrouter.actors.engine import build_engine
    from disrouter.actors.errors import EngineError

    problems = []
    for j, agent in enumerate(topology.agents):
        if agent.engine.get("type") == "vllm":
            try:
                build_engine(agent.engine, agent=agent.name)
            except EngineError as exc:
                problems.append(f"{where}.agents[{j}] ({agent.name}).engine: {exc}")
    return problems


def check_serve_config(config: Any, check_engines: bool = False) -> list[str]:
    """Every problem of a Serve config, each naming its key path; [] when it is sound.
    `check_engines` also checks vLLM engine options (imports vLLM where installed: ~10 s)."""
    from ray.serve.schema import RayActorOptionsSchema, ServeDeploySchema

    if not isinstance(config, dict):
        return [f"<root>: a Serve config is a mapping with `applications:`, not {type(config).__name__}"]
    problems: list[str] = []
    _unknown_keys(config, ServeDeploySchema, "", problems)
    problems += _type_errors(ServeDeploySchema, config, "")
    for i, app in enumerate(config.get("applications") or []):
        if not isinstance(app, dict) or app.get("import_path") != BUILDER:
            continue
        where = f"applications[{i}].args"
        try:
            topology = parse_topology(dict(app.get("args") or {}))
        except TopologyError as exc:
            problems += [f"{where}.{field}: {message}" for field, message in exc.problems]
            continue
        for j, agent in enumerate(topology.agents):
            at = f"{where}.agents[{j}] ({agent.name}).ray_actor_options"
            _unknown_keys(agent.ray_actor_options, RayActorOptionsSchema, at, problems)
            problems += _type_errors(RayActorOptionsSchema, agent.ray_actor_options, at)
        if check_engines:
            problems += _engine_problems(topology, where)
    return problems
