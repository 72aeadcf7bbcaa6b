"""`disrouter eval`: utility against baselines and the oracle, on a replay trace or a live run.

Replay:  disrouter eval TRACE.jsonl --agents small:0.1,mid:0.5,large:0.9   (or --topology FILE)
Live:    disrouter eval --live --topology FILE --dataset gsm8k [--forced-alone] [--in-process]

Outputs under --out: results.json, analysis.json, calibration.json, PNG plots (evaluation/README.md).
"""

# Heavy imports (numpy, scikit-learn, aiokafka) happen inside `run`, so `disrouter --help`
# stays fast.

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _alphas(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--alphas {text!r}: a comma-separated list of numbers") from None
    if not values or any(not 0.0 <= a <= 1.0 for a in values):
        raise argparse.ArgumentTypeError("--alphas: each α must lie in [0, 1]")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="utility of DiSRouter vs baselines and the oracle (replay trace or live run)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("trace", nargs="?", help="replay trace (JSONL, the replay-trace format of actors/trace.py); omit with --live")
    chain = p.add_mutually_exclusive_group()
    chain.add_argument("--agents", help="the chain in order, last = terminal: name:cost,name:cost,…")
    chain.add_argument("--topology", help="topology YAML: chain order (entry, then next[0]) and costs")
    p.add_argument("--train-trace", help="a separate training trace (else the trace's `split`, else a hash split)")
    p.add_argument("--alphas", type=_alphas, default=[0.2, 0.5, 0.8], help="comma-separated α values (default 0.2,0.5,0.8)")
    p.add_argument("--gamma", type=float, default=None, help="γ of the reject threshold (1−α)^γ (default: topology's, else 0.5)")
    p.add_argument("--methods", help="comma-separated glob patterns of method names (default: all), e.g. 'disrouter*,router-knn'")
    p.add_argument("--reference", help="the method every other row is compared with on the same queries, with a paired "
                   "bootstrap 95%% interval (default: the recorded decisions: disrouter-recorded, disrouter-live in live mode)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hash split and every learner (default 0)")
    p.add_argument("--train-fraction", type=float, default=0.3, help="train share of a hash split (default 0.3)")
    p.add_argument("--embedder", choices=["minilm", "hashing"], default="minilm", help="prompt embedding (default minilm)")
    p.add_argument("--embed-cache", default=".disrouter/cache/embeddings", help="embedding cache folder ('' for none)")
    p.add_argument("--out", default="results/eval", help="output folder (default results/eval)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    live = p.add_argument_group("live mode")
    live.add_argument("--live", action="store_true", help="run a data set through a deployed topology")
    live.add_argument("--dataset", choices=["arith", "gsm8k", "mmlu"], default="gsm8k")
    live.add_argument("--limit", type=int, help="first N questions of the data set")
    live.add_argument("--split", choices=["test", "train", "all"], default="all",
                      help="which questions of the data set's seeded split to ask (default all; 'test' = held out from training)")
    live.add_argument("--skip", type=int, default=0,
                      help="skip the first N held-out (test-split) questions, e.g. those a training report already "
                           "used to choose an adapter; training-split questions stay (default 0)")
    live.add_argument("--bootstrap", help="Kafka bootstrap servers (default: the running local stack's, else the topology's)")
    live.add_argument("--run-dir", help="local stack run directory (default: the one `disrouter up` uses)")
    live.add_argument("--concurrency", type=int, default=16, help="queries in flight at once (default 16)")
    live.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for one answer (default 300)")
    live.add_argument("--forced-alone", action="store_true", help="also run every agent alone, forced to answer")
    live.add_argument("--in-process", action="store_true",
                      help="run the topology's agents in this process, one engine at a time, with no broker and no Ray: "
                           "the same hops, traces and report, to check an adapter or a topology before deploying it (implies --live)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from disrouter.actors.errors import TraceFormatError
    from disrouter.evaluation.evalset import EvalInputError
    from disrouter.training.data import DataError

    try:
        if args.live or args.in_process:
            from disrouter.evaluation.live import run_live_command

            return run_live_command(args)
        return _replay(args)
    except (TraceFormatError, EvalInputError, DataError, FileNotFoundError) as exc:
        print(f"disrouter eval: {exc}", file=sys.stderr)
        return 2


def build_embedder_factory(name: str, cache: str):
    from disrouter.evaluation.embed import make_embedder

    return lambda: make_embedder(name, Path(cache) if cache else None)


def _chain(args: argparse.Namespace):
    from disrouter.evaluation.evalset import Chain, EvalInputError

    if args.topology:
        chain, gamma = Chain.from_topology(args.topology)
        return chain, gamma if args.gamma is None else args.gamma
    if args.agents:
        return Chain.parse(args.agents), 0.5 if args.gamma is None else args.gamma
    raise EvalInputError("give the chain: --agents name:cost,… or --topology FILE")


def _replay(args: argparse.Namespace) -> int:
    from disrouter.actors.trace import read_trace
    from disrouter.evaluation import report
    from disrouter.evaluation.evalset import EvalInputError, split_records
    from disrouter.evaluation.harness import evaluate

    if not args.trace:
        raise EvalInputError("give a replay trace (or --live)")
    chain, gamma = _chain(args)
    if not Path(args.trace).is_file():
        raise FileNotFoundError(f"trace {args.trace} does not exist")
    records = read_trace(args.trace)
    train_records = read_trace(args.train_trace) if args.train_trace else None
    splits = split_records(records, chain, train_records=train_records, train_fraction=args.train_fraction, seed=args.seed)
    evaluation = evaluate(
        splits,
        alphas=args.alphas,
        gamma=gamma,
        seed=args.seed,
        methods=[m.strip() for m in args.methods.split(",")] if args.methods else None,
        embedder_factory=build_embedder_factory(args.embedder, args.embed_cache),
        extra_info={"trace": str(args.trace), "train_trace": args.train_trace},
        reference=args.reference,
    )
    print(report.table(evaluation))
    written = report.write(evaluation, Path(args.out), plots=not args.no_plots)
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0
