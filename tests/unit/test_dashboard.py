"""The Grafana dashboard (k8s/base/grafana/disrouter.json) is valid and asks only for metrics that
the agents and the gateway export, so a renamed metric cannot leave a panel silently empty."""

from __future__ import annotations

import json
import re
from pathlib import Path

from disrouter.actors.metrics import COUNTED

ROOT = Path(__file__).resolve().parents[2]


def exported() -> set[str]:
    names = {f"disrouter_agent_{name}" for name in COUNTED}
    for source in ("actors/metrics.py", "gateway/metrics.py"):
        names |= set(re.findall(r'\(\s*"(disrouter_\w+)"', (ROOT / source).read_text()))
    return names


def test_every_panel_queries_exported_metrics():
    dashboard = json.loads((ROOT / "k8s" / "base" / "grafana" / "disrouter.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    used = {re.sub(r"_(total|bucket|count|sum)$", "", m) for e in exprs for m in re.findall(r"ray_(disrouter_\w+)", e)}
    known = exported()
    assert used - known == set(), f"panels query metrics nobody exports: {sorted(used - known)}"
    # Routing at a glance: the panels are all there.
    titles = " | ".join(p["title"] for p in dashboard["panels"]).lower()
    for words in ("answered by each agent", "reject rate", "hops per query", "latency", "tokens per answer",
                  "dollars per answer", "consumer lag"):
        assert words in titles, words
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
