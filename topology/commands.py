"""CLI of the declaration: `validate` a topology file, create its Kafka `topics`. (Running one
locally, `up`/`down`/`status`, is `stack/commands.py`.)"""

from __future__ import annotations

import argparse
import asyncio
import sys

from disrouter.topology.errors import TopologyError


def register(sub: argparse._SubParsersAction) -> None:
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
