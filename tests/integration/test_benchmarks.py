"""The fabric benchmarks still run end to end (`bench.fabric`: its own broker, its own Ray,
signed hand-offs, the floor, one scaling run; `bench.chain_cpu`: the chain in one process): smoke
runs with few queries. Their numbers are printed, never asserted."""

from __future__ import annotations

import os
import subprocess
import sys


def test_the_fabric_benchmark_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISROUTER_TRUST_KEY", "RAY_ADDRESS")}
    run = subprocess.run(
        [sys.executable, "-m", "disrouter.bench.fabric", "--queries", "30", "--concurrency", "4", "--hop-samples", "5",
         "--pings", "10", "--floor-messages", "200", "--scale-replicas", "2", "--scale-partitions", "", "--timeout", "120"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    print(run.stdout[-2000:])
    assert run.returncode == 0, run.stderr[-3000:]
    for row in ("floor: produce→consume round trip", "per reject hop", "chain throughput", "entry replicas=2 partitions=4"):
        assert row in run.stdout, row
    assert "answered 30/30" in run.stdout


def test_the_chain_cpu_benchmark_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISROUTER_TRUST_KEY", "RAY_ADDRESS")}
    run = subprocess.run(
        [sys.executable, "-m", "disrouter.bench.chain_cpu", "--queries", "30", "--concurrency", "4",
         "--profile", str(tmp_path / "chain.prof")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    print(run.stdout[-2000:])
    assert run.returncode == 0, run.stderr[-3000:]
    assert "CPU per query" in run.stdout and (tmp_path / "chain.prof").is_file()
