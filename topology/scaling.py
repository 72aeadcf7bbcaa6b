"""Lag-based autoscaling of an agent: Serve scales on HTTP load, but agents consume Kafka.

Each replica reports its backlog — records behind its consumer's position on its partitions,
plus queries in work (`record_autoscaling_stats` in `actors/deployment.py`, sampled by
`actors/metrics.py`). Serve averages each replica's reports over `look_back_period_s`; this
policy sums them into the agent's backlog and asks for one replica per `target_backlog` of it.
Serve's wrapper then applies `min_replicas`/`max_replicas` and the up/down delays, so a short
burst does not add replicas and a drained backlog removes them only after `downscale_delay_s`.

Serve cloudpickles the policy by value into its controller: this module imports nothing of
DiSRouter, so the controller needs no DiSRouter install.
"""

from __future__ import annotations

import math
from typing import Any

BACKLOG_METRIC = "backlog"


class BacklogPolicy:
    """`autoscaling_config.policy`: replicas = ⌈agent backlog / target_backlog⌉ (≥ 1)."""

    def __init__(self, target_backlog: float) -> None:
        self.target_backlog = float(target_backlog)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        per_replica = (ctx.aggregated_metrics or {}).get(BACKLOG_METRIC, {})
        if not per_replica:  # no report yet (replicas starting): keep what Serve aims for
            return ctx.target_num_replicas, {}
        backlog = sum(per_replica.values())
        return max(1, math.ceil(backlog / self.target_backlog)), {"backlog": backlog}


def autoscaling_config(spec: Any, max_in_flight: int) -> dict[str, Any]:
    """Serve's `autoscaling_config` for an agent's `autoscaling:` (topology/schema.py)."""
    return {
        "min_replicas": spec.min_replicas,
        "initial_replicas": spec.min_replicas,
        "max_replicas": spec.max_replicas,
        "look_back_period_s": spec.look_back_period_s,
        "metrics_interval_s": spec.metrics_interval_s,
        "upscale_delay_s": spec.upscale_delay_s,
        "downscale_delay_s": spec.downscale_delay_s,
        "policy": {
            "policy_function": f"{__name__}:BacklogPolicy",
            "policy_kwargs": {"target_backlog": spec.target_backlog or max_in_flight},
        },
    }
