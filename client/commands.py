"""`disrouter ask`: one query to a deployed topology, its answer and its trail."""

from __future__ import annotations

import argparse
import asyncio
import sys

from disrouter.actors.contracts import Answer, Query, Scenario


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="ask a question and wait for the answer with its trail")
    p.add_argument("prompt")
    p.add_argument("--scenario", choices=[s.value for s in Scenario])
    p.add_argument("--alpha", type=float, help="a raw cost weight α in [0, 1] (overrides --scenario)")
    p.add_argument("--tag", action="append", default=[], dest="tags")
    p.add_argument("--id", help="query id (default: generated)")
    p.add_argument("--max-hops", type=int)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: the local stack's)")
    p.add_argument("--namespace", help="topology namespace (default: the local stack's)")
    p.add_argument("--run-dir", help="local stack run directory")
    p.add_argument("--json", action="store_true", help="print the Answer as JSON")
    p.set_defaults(func=_ask)


def _target(args: argparse.Namespace) -> tuple[str, str]:
    if args.bootstrap and args.namespace:
        return args.bootstrap, args.namespace
    from pathlib import Path

    from disrouter.stack.supervisor import DEFAULT_RUN_DIR, read_state

    state = read_state(Path(args.run_dir) if args.run_dir else DEFAULT_RUN_DIR)
    if state is None:
        raise SystemExit("no local stack is up: run `disrouter up` first, or pass --bootstrap and --namespace")
    return args.bootstrap or state.bootstrap, args.namespace or state.namespace or ""


def render(answer: Answer) -> str:
    lines = []
    if answer.status == "answered":
        lines.append(f"answer ({answer.agent}{', forced' if answer.forced else ''}): {answer.answer}")
    else:
        lines.append(f"unanswered: {answer.reason}")
    lines.append(f"alpha={answer.alpha}  cost={answer.cost}  id={answer.id}")
    lines.append(f"{'hop':>3}  {'agent':<16} {'decision':<8} {'latency_ms':>10} {'tok_in':>6} {'tok_out':>7} {'cost':>6}  conf")
    for i, hop in enumerate(answer.trail, 1):
        conf = "" if hop.confidence is None else f"{hop.confidence:.3f}"
        note = " (forced)" if hop.forced else (f" error: {hop.error}" if hop.error else "")
        lines.append(
            f"{i:>3}  {hop.agent:<16} {hop.decision:<8} {hop.latency_ms:>10.1f} {hop.tokens_in:>6} "
            f"{hop.tokens_out:>7} {hop.cost:>6.2f}  {conf}{note}"
        )
    t = answer.totals
    lines.append(
        f"total: {t.hops} hops, {t.latency_ms:.1f} ms, {t.tokens_in} tokens in, {t.tokens_out} out, cost {t.cost:.2f}"
        + (f", ${t.cost_usd:.6f}" if t.cost_usd is not None else "")
    )
    return "\n".join(lines)


def _ask(args: argparse.Namespace) -> int:
    import msgspec

    from disrouter.client.sdk import Client

    bootstrap, namespace = _target(args)
    query = Query(
        prompt=args.prompt,
        id=args.id,
        scenario=Scenario(args.scenario) if args.scenario else None,
        alpha=args.alpha,
        tags=args.tags,
        max_hops=args.max_hops,
    )

    async def run() -> Answer:
        async with Client(bootstrap, namespace) as client:
            return await client.ask(query, args.timeout)

    try:
        answer = asyncio.run(run())
    except TimeoutError:
        print(f"no answer within {args.timeout}s (is the topology deployed on {bootstrap}?)", file=sys.stderr)
        return 1
    print(msgspec.json.encode(answer).decode() if args.json else render(answer))
    return 0 if answer.status == "answered" else 1
