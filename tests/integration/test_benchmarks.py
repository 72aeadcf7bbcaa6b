"""The transport benchmark still runs end to end (its own broker, its own Ray, signed
hand-offs): a smoke run with few queries. Its numbers are printed, never asserted."""

from __future__ import annotations

import os
import subprocess
import sys


def test_the_transport_benchmark_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISROUTER_TRUST_KEY", "RAY_ADDRESS")}
    run = subprocess.run(
        [sys.executable, "-m", "disrouter.bench.transport", "--queries", "30", "--concurrency", "4", "--timeout", "120"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    print(run.stdout[-600:])
    assert run.returncode == 0, run.stderr[-3000:]
    assert "over Kafka + Ray Serve:" in run.stdout and "queries=30" in run.stdout
