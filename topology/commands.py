"""CLI for declaring and deploying topologies: validate, topics, up, down, status."""

from __future__ import annotations

import argparse
import asyncio
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

    p = sub.add_parser("validate", help="check a topology file; errors name the field and agent")
    p.add_argument("topology")
    p.set_defaults(func=_validate)

    p = sub.add_parser("topics", help="manage the Kafka topics of a topology")
    tsub = p.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    c = tsub.add_parser("create", help="create every topic of the topology (idempotent)")
    c.add_argument("topology")
    c.add_argument("--partitions", type=int, help="partitions per topic (default: the topology's)")
    c.add_argument("--bootstrap", help="Kafka bootstrap servers (default: the topology's)")
    c.set_defaults(func=_topics_create)


def _run_dir(args: argparse.Namespace) -> Path:
    from disrouter.topology.stack import DEFAULT_RUN_DIR

    return args.run_dir or DEFAULT_RUN_DIR


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1


def _validate(args: argparse.Namespace) -> int:
    from disrouter.topology.load import load_topology

    try:
        _, topology = load_topology(args.topology)
    except TopologyError as exc:
        return _fail(exc)
    kinds = {a.name: ("terminal" if a.is_terminal else f"→ {', '.join(a.next)} ({a.policy})") for a in topology.agents}
    print(f"{args.topology}: valid — namespace {topology.namespace!r}, entry {topology.entry_agent!r}")
    for name, kind in kinds.items():
        print(f"  {name}: {kind}")
    return 0


def _topics_create(args: argparse.Namespace) -> int:
    import msgspec

    from disrouter.actors import topics
    from disrouter.actors.kafka import ensure_topics
    from disrouter.topology.load import load_topology

    try:
        _, topology = load_topology(args.topology)
    except TopologyError as exc:
        return _fail(exc)
    spec = topology.kafka
    if args.bootstrap:
        spec = msgspec.structs.replace(spec, bootstrap_servers=args.bootstrap)
    names = topics.all_topics(topology.namespace, [a.name for a in topology.agents])
    created = asyncio.run(ensure_topics(spec, names, args.partitions))
    for name in names:
        print(f"{name}: {'created' if name in created else 'exists'}")
    return 0


def _up(args: argparse.Namespace) -> int:
    from disrouter.topology import stack

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
        f"  status: disrouter status        stop: disrouter down"
    )
    return 0


def _down(args: argparse.Namespace) -> int:
    from disrouter.topology import stack

    stack.down(_run_dir(args))
    return 0


def _status(args: argparse.Namespace) -> int:
    import urllib.request

    from disrouter.topology.stack import read_state, serve_status

    state = read_state(_run_dir(args))
    if state is None:
        print("nothing is up")
        return 1
    print(json.dumps({"bootstrap": state.bootstrap, "namespace": state.namespace, "topology": state.topology,
                      "ray": state.ray_address, "dashboard_port": state.dashboard_port}, indent=2))
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
