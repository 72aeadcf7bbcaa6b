"""CLI of the declaration: `validate` a topology file, create its Kafka `topics`, `render` it for
Kubernetes. (Running one locally, `up`/`down`/`status`, is `stack/commands.py`.)"""

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

    p = sub.add_parser("render", help="render a topology for a deployment target")
    rsub = p.add_subparsers(dest="render_target", metavar="TARGET", required=True)
    k = rsub.add_parser(
        "k8s",
        help="write a kustomize overlay's serveConfigV2, KafkaTopics and KafkaUsers from a topology, then validate the overlay",
        description="Writes serve-config.yaml, kafka-topics.yaml and kafka-users.yaml into the overlay, builds it "
        "with kustomize and validates every manifest offline (built-in kinds, the CRD schemas, the strict "
        "Serve config, the project's rules). With --check nothing is written: the overlay's files must "
        "already equal a fresh render.",
    )
    k.add_argument("topology")
    k.add_argument("--overlay", required=True, help="the kustomize overlay folder, e.g. k8s/overlays/h100")
    k.add_argument("--app", help="the Serve application holding the topology (default: the first DiSRouter one)")
    k.add_argument("--check", action="store_true", help="write nothing; fail when the overlay's rendered files are stale")
    k.add_argument("--no-validate", action="store_true", help="only write the files (no kustomize build, no validation)")
    k.add_argument("--kubectl", help="kubectl or kustomize binary (default: $DISROUTER_KUBECTL, .tools/bin/kubectl, PATH)")
    k.add_argument("--kube-version", default=None, help="Kubernetes version of the built-in schemas (default: 1.33)")
    k.set_defaults(func=_render_k8s)


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


def _render_k8s(args: argparse.Namespace) -> int:
    from disrouter.topology import k8s, manifests
    from disrouter.topology.k8s_rules import check_rules

    try:
        rendered = k8s.render(args.topology, args.app, check_engines=True)
        if args.check:
            stale = k8s.stale(rendered, args.overlay)
            if stale:
                return _fail(Exception(f"{args.overlay}: {', '.join(stale)} differ from a fresh render of {args.topology}: run `disrouter render k8s {args.topology} --overlay {args.overlay}`"))
            print(f"{args.overlay}: rendered files are up to date with {args.topology}")
        else:
            for path in k8s.write(rendered, args.overlay):
                print(f"wrote {path}")
    except TopologyError as exc:
        return _fail(exc)
    if args.no_validate:
        return 0
    try:
        docs = manifests.kustomize_build(args.overlay, manifests.find_kubectl(args.kubectl))
    except manifests.KustomizeError as exc:
        return _fail(exc)
    problems = manifests.validate_documents(docs, args.kube_version or manifests.DEFAULT_KUBE_VERSION)
    if not problems:  # the rules read fields whose types the schemas guarantee
        problems = check_rules(docs)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    kinds = ", ".join(sorted({f"{d['kind']}" for d in docs}))
    print(f"{args.overlay}: {len(docs)} manifests valid ({kinds})")
    return 0
