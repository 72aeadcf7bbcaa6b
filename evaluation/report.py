"""What an evaluation leaves behind: a terminal table, JSON files and PNG plots.

    <out>/results.json      list of Result rows (method, scenario, alpha, accuracy, cost, utility,
                            pct_of_oracle, n, cumulative view, routing, answer rates, params)
    <out>/analysis.json     run info (chain, split, sizes, seeds), skipped methods and why,
                            recorded self-awareness F1, easy/hard by method
    <out>/calibration.json  fitted per-agent calibrations as the runtime's structs (paste one
                            into an agent's `calibration:` with `awareness: confidence`)
    <out>/utility_vs_alpha.png, cost_accuracy.png, routing.png, answer_rate.png
"""

from __future__ import annotations

import math
from pathlib import Path

import msgspec

from disrouter.evaluation.harness import Evaluation
from disrouter.evaluation.metrics import Result

_FAMILY_ORDER = {"oracle": 0, "disrouter": 1, "cascade": 2, "router": 3, "baseline": 4}


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _ordered(rows: list[Result]) -> list[Result]:
    return sorted(rows, key=lambda r: (_FAMILY_ORDER.get(r.family, 9), -r.utility, r.method))


def table(evaluation: Evaluation) -> str:
    info = evaluation.info
    agents = [c["agent"] for c in info["chain"]]
    lines = [
        "chain: " + " → ".join(f"{c['agent']} ({c['cost']:g})" for c in info["chain"]),
        f"split: {info['split']}; train {info['n_train']} / test {info['n_test']} queries; "
        f"seed {info['seed']}; γ {info['gamma']}; embedder {info.get('embedder') or '-'}",
    ]
    width = max([len(r.method) for r in evaluation.results] + [6])
    header = (
        f"{'method':<{width}}  {'acc':>6} {'cost':>6} {'utility':>8} {'%oracle':>8} "
        f"{'cum.cost':>8} {'lat.ms':>8} {'easy.cost':>9} {'hard.cost':>9}  routing % ({'/'.join(agents)})"
    )
    alphas = sorted({r.alpha for r in evaluation.results})
    for alpha in alphas:
        rows = _ordered([r for r in evaluation.results if r.alpha == alpha])
        lines += ["", f"α = {alpha:g} ({rows[0].scenario}), n = {rows[0].n} test queries", header, "-" * len(header)]
        for r in rows:
            routing = "/".join(f"{100 * r.routing[a]:.0f}" for a in agents)
            lines.append(
                f"{r.method:<{width}}  {r.accuracy:6.3f} {r.cost:6.3f} {r.utility:8.3f} "
                f"{_fmt(r.pct_of_oracle, '.1f'):>8} {r.cumulative_cost:8.3f} {_fmt(r.latency_ms, '.0f'):>8} "
                f"{_fmt(r.easy.cost):>9} {_fmt(r.hard.cost):>9}  {routing}"
            )
        lines += versus_lines(rows)
    if evaluation.recorded_self_awareness:
        lines += ["", "self-awareness of the recorded decisions (answer = 'I am right'):"]
        for agent, f in evaluation.recorded_self_awareness.items():
            lines.append(
                f"  {agent}: F1 {_fmt(f.f1)}  precision {_fmt(f.precision)}  recall {_fmt(f.recall)}  "
                f"answer rate {_fmt(f.answer_rate)}  (n {f.n})"
            )
    if evaluation.skipped:
        lines += ["", "not run on this trace:"]
        lines += [f"  {why}" if why.startswith(name) else f"  {name}: {why}" for name, why in evaluation.skipped.items()]
    return "\n".join(lines)


def versus_lines(rows: list[Result]) -> list[str]:
    """The reference against every row that sees no test labels, with its paired 95 % interval
    (significance.py): what a difference of a few hundredths is worth on this many queries."""
    compared = [r for r in rows if r.versus is not None and not r.uses_test_labels]
    if not compared:
        return []
    ref = compared[0].versus.reference
    out = [f"{ref} − each method, utility, paired bootstrap 95 % interval over the test queries:"]
    for r in sorted(compared, key=lambda r: r.versus.delta):
        v = r.versus
        assert v is not None
        word = {"ahead": "ahead", "behind": "BEHIND", "tie": "not told apart"}[v.verdict]
        out.append(f"  vs {r.method:<28} {v.delta:+.3f}  [{v.low:+.3f}, {v.high:+.3f}]  {word}")
    return out


def write(evaluation: Evaluation, out: Path, plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    enc = msgspec.json.Encoder()

    def dump(name: str, obj) -> None:
        path = out / name
        path.write_bytes(msgspec.json.format(enc.encode(obj), indent=2) + b"\n")
        written.append(path)

    dump("results.json", evaluation.results)
    dump(
        "analysis.json",
        {
            "info": evaluation.info,
            "skipped": evaluation.skipped,
            "recorded_self_awareness": evaluation.recorded_self_awareness,
            "easy_vs_hard": [
                {"method": r.method, "alpha": r.alpha, "easy": r.easy, "hard": r.hard} for r in evaluation.results
            ],
        },
    )
    if evaluation.calibrations:
        dump("calibration.json", evaluation.calibrations)
    if plots:
        written += plot(evaluation, out)
    return written


def _style(family: str, method: str) -> dict:
    if family == "oracle":
        return {"color": "black", "linestyle": "--" if method == "oracle" else ":", "linewidth": 1.6}
    if family == "disrouter":
        return {"linewidth": 2.2}
    if family in ("cascade", "router"):
        return {"linewidth": 1.6, "linestyle": "-."}
    return {"linewidth": 1.0, "alpha": 0.6}


def plot(evaluation: Evaluation, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # `smallest` / `largest` are aliases of single agents: in a plot they only hide those.
    results = [r for r in evaluation.results if r.method not in ("smallest", "largest")]
    if not results:
        return []
    alphas = sorted({r.alpha for r in results})
    methods = list(dict.fromkeys(r.method for r in _ordered(results)))
    family = {r.method: r.family for r in results}
    agents = [c["agent"] for c in evaluation.info["chain"]]
    # One hue per family, shades within it, so a family reads as a group at a glance.
    maps = {"oracle": "Greys", "disrouter": "Oranges", "cascade": "Blues", "router": "Greens", "baseline": "Purples"}
    colour = {}
    for fam, cmap_name in maps.items():
        members = [m for m in methods if family[m] == fam]
        cmap = plt.get_cmap(cmap_name)
        for i, m in enumerate(members):
            colour[m] = cmap(0.9 - 0.55 * i / max(1, len(members) - 1)) if len(members) > 1 else cmap(0.75)
    for m in methods:
        colour.setdefault(m, "tab:gray")
    paths = []

    # 1. utility vs α, one line per method.
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for m in methods:
        rows = sorted((r for r in results if r.method == m), key=lambda r: r.alpha)
        style = {"color": colour[m], **_style(family[m], m)}
        ax.plot([r.alpha for r in rows], [r.utility for r in rows], marker="o", markersize=4, label=m, **style)
    ax.set_xlabel("α (cost weight)")
    ax.set_ylabel("utility = accuracy − α·cost")
    ax.set_title("Utility vs α (test split)")
    ax.set_xticks(alphas)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    paths.append(out / "utility_vs_alpha.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    # 2. The cost–accuracy plane, one panel per α, with the oracle's iso-utility line.
    fig, axes = plt.subplots(1, len(alphas), figsize=(5.2 * len(alphas), 5), squeeze=False)
    for ax, alpha in zip(axes[0], alphas):
        rows = [r for r in _ordered(results) if r.alpha == alpha]
        for r in rows:
            marker = "*" if r.method == "oracle" else ("D" if r.family == "disrouter" else ("s" if r.family in ("router", "cascade") else "o"))
            ax.scatter(r.cost, r.accuracy, color=colour[r.method], marker=marker, s=160 if marker == "*" else 45,
                       zorder=3, edgecolors="black", linewidths=0.4, label=r.method)
        xmax = max(r.cost for r in rows) * 1.05 + 0.02
        oracle = next((r for r in rows if r.method == "oracle"), None)
        if oracle is not None:
            # Points on this line have the oracle's utility; parallel lines below it, less.
            xs = [0.0, xmax]
            ax.plot(xs, [oracle.utility + alpha * x for x in xs], color="black", linestyle=":", linewidth=0.8, label="oracle iso-utility")
        accs = [r.accuracy for r in rows]
        ax.set_xlim(0, xmax)
        ax.set_ylim(min(accs) - 0.03, min(1.0, max(accs)) + 0.03)
        ax.set_title(f"α = {alpha:g}")
        ax.set_xlabel("mean cost of the answering agent")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    axes[0][-1].legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("Cost–accuracy plane (◆ DiSRouter, ■ router / cascade, ★ oracle)")
    fig.tight_layout()
    paths.append(out / "cost_accuracy.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    # 3. Routing distribution: share of queries answered by each agent.
    fig, axes = plt.subplots(1, len(alphas), figsize=(5.2 * len(alphas), 0.32 * len(methods) + 1.8), squeeze=False)
    agent_colours = plt.get_cmap("viridis")
    for ax, alpha in zip(axes[0], alphas):
        rows = _ordered([r for r in results if r.alpha == alpha])[::-1]
        left = [0.0] * len(rows)
        for j, agent in enumerate(agents):
            widths = [r.routing[agent] for r in rows]
            ax.barh([r.method for r in rows], widths, left=left, color=agent_colours(j / max(1, len(agents) - 1)), label=agent)
            left = [a + b for a, b in zip(left, widths)]
        ax.set_xlim(0, 1)
        ax.set_title(f"α = {alpha:g}")
        ax.set_xlabel("share of queries answered")
        ax.tick_params(axis="y", labelsize=7)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("Routing distribution")
    fig.tight_layout()
    paths.append(out / "routing.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    # 4. Answer rate per agent vs α, for the methods that walk the chain (not the terminal's:
    # it answers whatever reaches it).
    chained = [m for m in methods if any(r.answer_rate for r in results if r.method == m) and family[m] != "oracle"]
    if chained and len(agents) > 1:
        shown = agents[:-1]
        ncols = min(4, len(shown))
        nrows = math.ceil(len(shown) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols + 2.0, 3.4 * nrows), squeeze=False, sharey=True)
        flat = [ax for row in axes for ax in row]
        for ax in flat[len(shown):]:
            ax.set_visible(False)
        for ax, agent in zip(flat, shown):
            for m in chained:
                rows = sorted((r for r in results if r.method == m), key=lambda r: r.alpha)
                ys = [r.answer_rate.get(agent) for r in rows]
                ys = [math.nan if y is None else y for y in ys]
                ax.plot([r.alpha for r in rows], ys, marker="o", markersize=3, color=colour[m], label=m, **_style(family[m], m))
            ax.set_title(agent, fontsize=9)
            ax.set_xlabel("α")
            ax.set_xticks(alphas)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        for row in axes:
            row[0].set_ylabel("answered / reached")
        axes[0][ncols - 1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.suptitle("Answer rate per agent vs α")
        fig.tight_layout()
        paths.append(out / "answer_rate.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths
