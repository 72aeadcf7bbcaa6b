"""Live mode: run a data set through a deployed topology, grade, record a trace, report.

Phases, each with bounded concurrency, a per-query timeout and a progress bar:

1. deployed (one run per α): every question the report scores (`deployed_items`) is produced
   to `<ns>.ingress` as a `Query` (Kafka key = id, `alpha` set) and its `Answer` read back from
   `<ns>.answers`, matched by id; copies of an answer (at-least-once delivery) are counted and
   dropped.
2. forced alone (`--forced-alone`, once): every question is produced straight to each agent's
   own topic `<ns>.agent.<name>` with `force_answer: true`. The runtime treats such a query as
   if that agent were terminal: it answers (never passes it on), marks the hop `forced` when its
   own rule said reject, and publishes the Answer as usual. This gives every agent's
   answer (and confidence) on every question, which the baselines and the oracle need. An answer
   from any other agent means the runtime ignored the flag; the run stops with that error.

Query ids on the wire are `<item id>@<run>-<phase>`, unique per phase, so a late copy from one
phase is never taken for an answer of another; the traces use the item id (the data set's id,
e.g. GSM8K's `gsm8k-main-test-#17`, the id of the shared ZeroEval trace).

Traces written (the replay-trace format of actors/trace.py, one line per (query, agent)):

- `deployed-alpha<α>.jsonl`: what happened, one line per hop of each answered query. The
  answering hop: its graded answer. A reject hop: `decision: "reject"`, `answer` = the reject
  phrase, `correct: false`. Its counterfactual correctness is unknown (the agent gave no
  answer); the harness reads that combination as *unknown*, not wrong (see evalset.py).
- `forced.jsonl`: each agent alone, forced: graded answer, confidence, latency; `decision` is
  left empty (a forced run's decision is not the deployed one).
- `trace-alpha<α>.jsonl`: the two merged, for offline re-analysis: every (query, agent) from
  the forced run, with the deployed run's decision on the agents the query visited, and the
  deployed answer on the agent that answered it (so replaying the recorded decisions gives
  exactly the live result). Queries unanswered or timed out are left out and counted.

`--in-process` (inprocess.py) runs the same phases with the agents in this process instead of
deployed, and writes the same traces.

The report is the replay harness run on `trace-alpha<α>.jsonl` (the deployed trace when there
is no forced run), at that α; the recorded-decision row is labelled `disrouter-live`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from tqdm import tqdm

from disrouter.actors import topics
from disrouter.actors.contracts import Answer, Query
from disrouter.actors.decision import REJECT_PHRASE, scenario_for_alpha
from disrouter.actors.trace import TraceRecord, write_trace
from disrouter.actors.trust import TrustKeys
from disrouter.client.sdk import Client
from disrouter.evaluation.evalset import Chain, EvalInputError
from disrouter.training.data import Item
from disrouter.training.grading import is_correct

if TYPE_CHECKING:
    from disrouter.topology.schema import Topology

# What the recorded-decision method (`disrouter-recorded`) is called in a live run's report.
LIVE_NAME = "disrouter-live"

log = structlog.get_logger("disrouter.evaluation")


class LiveError(RuntimeError):
    """The deployed topology did not behave as the live contract requires."""


class PhaseStats(msgspec.Struct):
    phase: str
    sent: int
    answered: int = 0
    unanswered: int = 0  # an Answer with status "unanswered"
    timeouts: int = 0
    duplicates: int = 0  # extra copies of answers (or answers after their timeout), dropped
    wall_s: float = 0.0
    forwarded: int = 0  # in-process mode's per-agent phases: queries this agent handed on


async def run_phase(
    client: Client,
    jobs: list[tuple[str, str, Query]],
    *,
    phase: str,
    concurrency: int,
    timeout_s: float,
) -> tuple[dict[str, Answer], PhaseStats]:
    """Ask every (key, topic, query) job; returns answers by key (timeouts absent)."""
    semaphore = asyncio.Semaphore(concurrency)
    answers: dict[str, Answer] = {}
    stats = PhaseStats(phase, len(jobs))
    started = time.perf_counter()
    duplicates_before = client.duplicates
    bar = tqdm(total=len(jobs), desc=phase, unit="q")

    async def one(key: str, topic: str, query: Query) -> None:
        async with semaphore:
            try:
                answer = await client.ask(query, timeout_s, topic)
            except TimeoutError:
                answer = None
        if answer is None:
            stats.timeouts += 1
            log.warning("live_timeout", phase=phase, query_id=query.id, timeout_s=timeout_s)
        elif answer.status != "answered":
            stats.unanswered += 1
            answers[key] = answer
        else:
            stats.answered += 1
            answers[key] = answer
        bar.update(1)

    try:
        await asyncio.gather(*(one(*job) for job in jobs))
    finally:
        bar.close()
    await asyncio.sleep(0.3)  # let late copies arrive so they are counted, not mistaken
    stats.duplicates = client.duplicates - duplicates_before
    stats.wall_s = round(time.perf_counter() - started, 3)
    return answers, stats


def deployed_items(items: list[Item], forced_alone: bool) -> list[Item]:
    """The questions the deployed phases ask. With a forced-alone phase, only the held-out ones:
    the report scores every method on those alone, and the learned baselines fit on the
    training split's forced answers, so asking the deployed chain the training questions too
    would only cost time (56 % of a phase on the default's `--split all` run). Without one, the
    deployed trace is all there is, so every question is asked."""
    held_out = [item for item in items if item.split == "test"]
    return held_out if forced_alone and held_out else items


def deployed_query(item: Item, run_id: str, alpha: float) -> Query:
    """The query the deployed phase at α asks (id `<item>@<run>-a<α>`)."""
    return _query(item, f"{item.id}@{run_id}-a{alpha:g}", alpha)


def forced_query(item: Item, run_id: str, agent: str, alpha: float) -> Query:
    """The copy the forced-alone phase gives `agent` (id `<item>@<run>-forced-<agent>`)."""
    return _query(item, f"{item.id}@{run_id}-forced-{agent}", alpha, force_answer=True)


def forced_key(item_id: str, agent: str) -> str:
    """How the forced phase files `agent`'s answer to an item (`forced_records` reads them so)."""
    return f"{item_id}|{agent}"


def _query(item: Item, qid: str, alpha: float, *, force_answer: bool = False) -> Query:
    scenario = scenario_for_alpha(alpha)
    return Query(
        id=qid,
        prompt=item.prompt,
        alpha=alpha,
        scenario=scenario if abs(scenario.alpha - alpha) < 1e-9 else None,
        tags=[item.task],
        metadata={"eval_item": item.id},
        force_answer=force_answer,
    )


def _row(item: Item, agent: str, hop, *, answer: str | None, correct: bool, decision) -> TraceRecord:
    return TraceRecord(
        query_id=item.id,
        agent=agent,
        correct=correct,
        answer=answer,
        cost_usd=getattr(hop, "cost_usd", None),
        latency_ms=getattr(hop, "latency_ms", None),
        tokens_in=getattr(hop, "tokens_in", None),
        tokens_out=getattr(hop, "tokens_out", None),
        confidence=getattr(hop, "confidence", None),
        decision=decision,
        prompt=item.prompt,
        task=item.task,
        split=item.split,
    )


def deployed_records(items: list[Item], answers: dict[str, Answer], chain: Chain) -> list[TraceRecord]:
    """One line per hop of each query (see the module doc for reject hops).

    A query with no answer is not dropped: an `unanswered` Answer marks its hops with
    `status: unanswered`; a query whose answer never came gets one line on the entry agent with
    `status: timeout`. The evaluation counts both as failures (wrong) of the live run.
    """
    rows = []
    for item in items:
        answer = answers.get(item.id)
        if answer is None:
            rows.append(TraceRecord(query_id=item.id, agent=chain.agents[0], correct=False, prompt=item.prompt,
                                    task=item.task, split=item.split, status="timeout"))
            continue
        failed = "unanswered" if answer.status != "answered" else None
        for k, hop in enumerate(answer.trail):
            final = not failed and k == len(answer.trail) - 1 and hop.agent == answer.agent and hop.decision == "answer"
            if final:
                rows.append(
                    _row(item, hop.agent, hop, answer=answer.answer, correct=is_correct(item.kind, answer.answer, item.gold), decision="answer")
                )
            else:
                row = _row(item, hop.agent, hop, answer=REJECT_PHRASE, correct=False, decision=hop.decision)
                rows.append(msgspec.structs.replace(row, status=failed) if failed else row)
        if failed and not answer.trail:
            rows.append(TraceRecord(query_id=item.id, agent=chain.agents[0], correct=False, prompt=item.prompt,
                                    task=item.task, split=item.split, status="unanswered"))
    return rows


def forced_records(items: list[Item], chain: Chain, answers: dict[str, Answer]) -> list[TraceRecord]:
    """Every agent's forced answer per question; a question some agent never answered is left
    out whole (the baselines and the oracle need every agent's answer to it)."""
    rows = []
    for item in items:
        lines = []
        for agent in chain.agents:
            answer = answers.get(forced_key(item.id, agent))
            if answer is None or answer.status != "answered":
                continue
            if answer.agent != agent:
                raise LiveError(
                    f"a query forced onto {agent!r} was answered by {answer.agent!r}: the runtime does not "
                    "honour Query.force_answer (see evaluation/live.py for the contract)"
                )
            hop = answer.trail[-1] if answer.trail else None
            lines.append(
                _row(item, agent, hop, answer=answer.answer, correct=is_correct(item.kind, answer.answer, item.gold), decision=None)
            )
        if len(lines) == chain.m:
            rows += lines
        else:
            log.warning("forced_incomplete", item=item.id, answered_by=[r.agent for r in lines])
    return rows


def merge(deployed: list[TraceRecord], forced: list[TraceRecord]) -> list[TraceRecord]:
    """Forced lines for every (query, agent), overlaid with what the deployed run did.

    A query the deployed run failed keeps its forced lines (the baselines re-route it on them)
    with the failure's `status`, so the recorded run counts it as wrong.
    """
    visited = {(r.query_id, r.agent): r for r in deployed}
    failed = {r.query_id: r.status for r in deployed if r.status is not None}
    merged = []
    for row in forced:
        seen = visited.get((row.query_id, row.agent))
        if seen is None:
            merged.append(row)
        elif seen.decision == "answer":
            merged.append(seen)  # the agent that answered: its deployed answer is the outcome
        else:
            merged.append(msgspec.structs.replace(row, decision=seen.decision, latency_ms=seen.latency_ms, confidence=seen.confidence))
        if row.query_id in failed:
            merged[-1] = msgspec.structs.replace(merged[-1], status=failed[row.query_id])
    return merged


class LiveRun(msgspec.Struct):
    out: str
    traces: dict[str, str]  # name → path
    phases: list[PhaseStats]


async def collect(
    *,
    items: list[Item],
    chain: Chain,
    namespace: str,
    bootstrap: str,
    alphas: list[float],
    out: Path,
    concurrency: int = 16,
    timeout_s: float = 300.0,
    forced_alone: bool = False,
    run_id: str | None = None,
    trust_keys: TrustKeys | None = None,
) -> LiveRun:
    """Run the phases against a deployed topology and write the traces; returns where they are."""
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
    run_id = run_id or uuid.uuid4().hex[:8]
    traces: dict[str, str] = {}
    phases: list[PhaseStats] = []
    # The forced phase writes the agents' own topics: signed with the topology's trust key
    # (`trust_keys`, else $DISROUTER_TRUST_KEY), as agents sign their hand-offs.
    async with Client(bootstrap, namespace, trust_keys=trust_keys) as client:
        forced_rows: list[TraceRecord] | None = None
        if forced_alone:
            jobs = [
                (forced_key(item.id, agent), topics.agent(namespace, agent), forced_query(item, run_id, agent, alphas[0]))
                for agent in chain.agents
                for item in items
            ]
            answers, stats = await run_phase(client, jobs, phase="forced alone", concurrency=concurrency, timeout_s=timeout_s)
            phases.append(stats)
            # A forced answer that failed (engine error, timeout) is asked once more: the
            # baselines need every agent's answer, and one transient error must not cost a query.
            again = [(key, topic, msgspec.structs.replace(q, id=f"{q.id}-again"))
                     for key, topic, q in jobs if key not in answers or answers[key].status != "answered"]
            if again:
                more, stats = await run_phase(client, again, phase="forced alone (again)", concurrency=concurrency, timeout_s=timeout_s)
                phases.append(stats)
                answers.update({k: v for k, v in more.items() if v.status == "answered"})
            forced_rows = write_forced(out, items, chain, answers, traces)
        asked = deployed_items(items, forced_alone)
        for alpha in alphas:
            jobs = [(item.id, topics.ingress(namespace), deployed_query(item, run_id, alpha)) for item in asked]
            answers, stats = await run_phase(client, jobs, phase=f"deployed α={alpha:g}", concurrency=concurrency, timeout_s=timeout_s)
            phases.append(stats)
            write_deployed(out, alpha, asked, chain, answers, forced_rows, traces)
    return save_run(LiveRun(str(out), traces, phases))


def write_forced(out: Path, items: list[Item], chain: Chain, answers: dict[str, Answer], traces: dict[str, str]) -> list[TraceRecord]:
    """`forced.jsonl` from the forced answers (keyed `<item id>|<agent>`); returns its rows."""
    rows = forced_records(items, chain, answers)
    path = out / "forced.jsonl"
    write_trace(path, rows)
    traces["forced"] = str(path)
    return rows


def write_deployed(out: Path, alpha: float, items: list[Item], chain: Chain, answers: dict[str, Answer],
                   forced_rows: list[TraceRecord] | None, traces: dict[str, str]) -> None:
    """One α's `deployed-alpha<α>.jsonl` (answers keyed by item id), and merged with the forced
    rows (when there are any) its `trace-alpha<α>.jsonl`."""
    rows = deployed_records(items, answers, chain)
    path = out / f"deployed-alpha{alpha:g}.jsonl"
    write_trace(path, rows)
    traces[f"deployed-alpha{alpha:g}"] = str(path)
    if forced_rows is not None:
        path = out / f"trace-alpha{alpha:g}.jsonl"
        write_trace(path, merge(rows, forced_rows))
        traces[f"trace-alpha{alpha:g}"] = str(path)


def save_run(run: LiveRun) -> LiveRun:
    (Path(run.out) / "live-summary.json").write_bytes(msgspec.json.format(msgspec.json.encode(run), indent=2) + b"\n")
    return run


def evaluate_run(run: LiveRun, chain: Chain, alphas: list[float], *, gamma: float, seed: int, embedder_factory: Callable[[], Any] | None, methods: list[str] | None = None, reference: str | None = None):
    """The replay harness on each α's trace; the recorded-decision row becomes `disrouter-live`."""
    from disrouter.actors.trace import read_trace
    from disrouter.evaluation.evalset import split_records
    from disrouter.evaluation.harness import DEFAULT_REFERENCE as RECORDED
    from disrouter.evaluation.harness import Evaluation, evaluate

    # In live mode the recorded-decision method goes by its live name: the user's names go in
    # translated, the harness's come out translated back.
    def to_replay(name: str) -> str:
        return RECORDED if name == LIVE_NAME else name

    def to_live(name: str) -> str:
        return LIVE_NAME if name == RECORDED else name

    methods = [to_replay(m) for m in methods] if methods else methods
    reference = to_replay(reference) if reference else reference
    combined: Evaluation | None = None
    for alpha in alphas:
        key = f"trace-alpha{alpha:g}" if f"trace-alpha{alpha:g}" in run.traces else f"deployed-alpha{alpha:g}"
        records = read_trace(run.traces[key])
        if not records:
            raise LiveError(f"no query was answered at α={alpha:g}; see {run.out}/live-summary.json")
        splits = split_records(records, chain, seed=seed)
        part = evaluate(splits, alphas=[alpha], gamma=gamma, seed=seed, methods=methods, embedder_factory=embedder_factory,
                        extra_info={"live": run.out}, reference=reference)
        for r in part.results:
            r.method = to_live(r.method)
            if r.versus is not None:
                r.versus.reference = to_live(r.versus.reference)
        part.skipped = {to_live(k): v for k, v in part.skipped.items()}
        part.info["reference"] = to_live(part.info["reference"])
        if combined is None:
            combined = part
            combined.info["traces"] = {}
        else:
            combined.results += part.results
            combined.skipped.update(part.skipped)
            combined.calibrations.update(part.calibrations)
        combined.info["traces"][f"{alpha:g}"] = run.traces[key]
    assert combined is not None
    combined.info["alphas"] = list(alphas)
    combined.info["phases"] = [msgspec.to_builtins(p) for p in run.phases]
    return combined


def find_bootstrap(args: argparse.Namespace, namespace: str, declared: str) -> str:
    """The broker to use: --bootstrap, else the local stack `disrouter up` started for this
    namespace (as `disrouter ask` finds it), else the topology's; checked to be reachable."""
    from disrouter.stack.supervisor import DEFAULT_RUN_DIR, read_state

    bootstrap = args.bootstrap
    if not bootstrap:
        state = read_state(Path(args.run_dir) if args.run_dir else DEFAULT_RUN_DIR)
        if state is not None and state.namespace == namespace:
            bootstrap = state.bootstrap
    bootstrap = bootstrap or declared
    if not broker_reachable(bootstrap):
        raise EvalInputError(
            f"cannot reach a Kafka broker at {bootstrap}: start the stack (`disrouter up TOPOLOGY`) or pass --bootstrap"
        )
    return bootstrap


def broker_reachable(bootstrap: str, timeout_s: float = 3.0) -> bool:
    import socket

    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout_s).close()
            return True
        except (OSError, ValueError):
            continue
    return False


def select_items(items: list[Item], split: str, skip: int = 0) -> list[Item]:
    """The questions a live run asks: those of `split` ("all" keeps both), less the first `skip`
    held-out ones (used elsewhere, e.g. by a training report); training-split questions stay, so
    the learned baselines have something to fit on."""

    if skip < 0:
        raise EvalInputError(f"--skip must be ≥ 0, not {skip}")
    if split != "all":
        items = [item for item in items if item.split == split]
    skipped = {item.id for item in [item for item in items if item.split == "test"][:skip]}
    return [item for item in items if item.id not in skipped]


def run_live_command(args: argparse.Namespace) -> int:
    """`disrouter eval --live`: collect, evaluate, print and write the report."""
    from disrouter.evaluation import report
    from disrouter.evaluation.commands import build_embedder_factory
    from disrouter.topology.load import load_topology
    from disrouter.training.data import load

    if not args.topology:
        raise EvalInputError("--live needs --topology (the deployed topology file)")
    _, topology = load_topology(args.topology)
    chain, gamma = Chain.from_topology(args.topology)
    gamma = gamma if args.gamma is None else args.gamma
    items = load(args.dataset, limit=args.limit, train_fraction=args.train_fraction, seed=args.seed).items
    items = select_items(items, args.split, args.skip)
    if not items:
        raise EvalInputError(
            f"{args.dataset}: no {args.split} question in the first {args.limit} after skipping {args.skip} (raise --limit)")
    out = Path(args.out)
    if args.in_process:
        from disrouter.evaluation.inprocess import Stopped, collect_in_process, stop_on_sigterm

        try:
            run = asyncio.run(stop_on_sigterm(collect_in_process(
                items=items, topology=topology, chain=chain, alphas=args.alphas, out=out / "live",
                concurrency=args.concurrency, forced_alone=args.forced_alone)))
        except Stopped as exc:
            print(f"disrouter eval: {exc}", file=sys.stderr)
            return 128 + signal.SIGTERM
    else:
        run = _collect_deployed(args, topology, chain, items, out)
    for stats in run.phases:
        handed = f", {stats.forwarded} handed on" if stats.forwarded else ""
        print(
            f"{stats.phase}: {stats.answered}/{stats.sent} answered{handed}, {stats.unanswered} unanswered, "
            f"{stats.timeouts} timed out, {stats.duplicates} duplicate answers dropped, {stats.wall_s:.1f} s"
        )
    evaluation = evaluate_run(
        run,
        chain,
        args.alphas,
        gamma=gamma,
        seed=args.seed,
        embedder_factory=build_embedder_factory(args.embedder, args.embed_cache),
        methods=[m.strip() for m in args.methods.split(",")] if args.methods else None,
        reference=args.reference,
    )
    print(report.table(evaluation))
    written = report.write(evaluation, out, plots=not args.no_plots)
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


def _collect_deployed(args: argparse.Namespace, topology: Topology, chain: Chain, items: list[Item], out: Path) -> LiveRun:
    """The phases through the deployed topology's broker (the running stack's, else --bootstrap)."""
    bootstrap = find_bootstrap(args, topology.namespace, topology.kafka.bootstrap_servers)
    trust_keys = None
    if args.forced_alone:
        from disrouter.actors.trust import TrustKeyError
        from disrouter.stack.supervisor import DEFAULT_RUN_DIR, tool_trust_keys

        try:
            trust_keys = tool_trust_keys(topology, Path(args.run_dir) if args.run_dir else DEFAULT_RUN_DIR)
        except TrustKeyError as exc:
            raise EvalInputError(f"--forced-alone writes to the agents' own topics, signed: {exc}") from None
    return asyncio.run(
        collect(
            items=items,
            chain=chain,
            namespace=topology.namespace,
            bootstrap=bootstrap,
            alphas=args.alphas,
            out=out / "live",
            concurrency=args.concurrency,
            timeout_s=args.timeout,
            forced_alone=args.forced_alone,
            trust_keys=trust_keys,
        )
    )
