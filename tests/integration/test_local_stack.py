"""`disrouter up` → `ask` → `down`: the README's first command path, with real processes."""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import msgspec
import openai

from disrouter.actors.contracts import Answer
from disrouter.stack.supervisor import _ray_pids, read_state

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "disrouter.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_up_ask_down_owns_its_processes(tmp_path):
    run_dir = Path("/tmp") / f"dr-up-{os.getpid()}"  # short: Ray socket paths have a length limit
    # No trust key in the shell, as on a fresh laptop: `up` makes one for its stack.
    env = {**{k: v for k, v in os.environ.items() if k != "DISROUTER_TRUST_KEY"}, "DISROUTER_LOG_LEVEL": "WARNING"}
    up = _cli("up", str(ROOT / "examples" / "chain.yaml"), "--run-dir", str(run_dir), env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        key = run_dir / "trust.key"
        assert key.stat().st_mode & 0o777 == 0o600
        assert f"key_file: {key}" in (run_dir / "topology.yaml").read_text()
        state = read_state(run_dir)
        assert state is not None and state.namespace == "chain"
        assert state.bootstrap.startswith("127.0.0.1:")
        pids = _ray_pids(Path(state.ray_temp_dir))
        assert pids and all(Path(f"/proc/{p}").exists() for p in pids)
        # Including the agents the raylet starts without the stack's environment marker.
        names = {Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].strip() for p in pids}
        assert {b"ray::DashboardAgent", b"ray::RuntimeEnvAgent"} <= names, names

        # demo-1 ("What is 43 * 21?"): small rejects it, medium answers (see the replay trace).
        ask = _cli("ask", "What is 43 * 21?", "--run-dir", str(run_dir), "--json", env=env, timeout=120)
        assert ask.returncode == 0, ask.stdout + ask.stderr
        answer = msgspec.json.decode(ask.stdout.strip().splitlines()[-1], type=Answer)
        assert answer.status == "answered" and answer.answer == "903"
        assert [h.agent for h in answer.trail] == ["small", "medium"]
        assert [h.decision for h in answer.trail] == ["reject", "answer"]

        # The same question through the OpenAI-compatible gateway `up` put on 127.0.0.1/v1.
        assert state.gateway_app == "chain-gateway" and f"base_url http://127.0.0.1:{state.http_port}/v1" in up.stdout
        base_url = f"http://127.0.0.1:{state.http_port}/v1"
        with urllib.request.urlopen(f"{base_url}/models", timeout=30) as resp:  # the README's curl
            assert "disrouter-balance" in {m["id"] for m in json.loads(resp.read())["data"]}
        reply = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120).chat.completions.create(
            model="disrouter", messages=[{"role": "user", "content": "What is 43 * 21?"}])
        assert reply.choices[0].message.content == "903"
        assert [h["agent"] for h in reply.model_extra["disrouter"]["trail"]] == ["small", "medium"]
    finally:
        down = _cli("down", "--run-dir", str(run_dir), env=env, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert read_state(run_dir) is None
    assert not any(Path(f"/proc/{p}").exists() and not _zombie(p) for p in pids + [state.broker_pid])


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return False
