"""Real processes for the live tests: brokers (`node bin/psimbols.js serve`), redis-server, the Node CLI,
and a TCP forwarder that stands in for a load balancer. Every process is killed by its own pid at exit."""
from __future__ import annotations

import asyncio
import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLI = os.path.join(ROOT, "bin", "psimbols.js")
_procs: list[subprocess.Popen[bytes]] = []


atexit.register(lambda: kill_all())


def temp_dir() -> str:
    d = tempfile.mkdtemp(prefix="psimbols-py-")
    atexit.register(shutil.rmtree, d, True)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    url: str
    port: int
    fingerprint: str
    data_dir: str
    proc: subprocess.Popen[bytes]
    out: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


async def start_broker(args: list[str] | None = None, env: dict[str, str] | None = None, data_dir: str | None = None) -> Broker:
    data_dir = data_dir or temp_dir()
    e = {**os.environ, "PSIMBOLS_HOME": data_dir, "PSIMBOLS_LOG_LEVEL": os.environ.get("PSIMBOLS_LOG_LEVEL", "warn"), **(env or {})}
    proc = subprocess.Popen(["node", CLI, "serve", "--port", "0", "--data-dir", data_dir, *(args or [])], env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _procs.append(proc)
    out: list[str] = []
    loop = asyncio.get_running_loop()
    listening: asyncio.Future[re.Match[str]] = loop.create_future()

    def settle(m: re.Match[str] | None) -> None:
        if not listening.done():
            listening.set_result(m) if m else listening.set_exception(RuntimeError("broker exited before listening:\n" + "".join(out)))

    def read() -> None:  # a daemon thread: never keeps the test process (or asyncio.run's shutdown) waiting
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            out.append(line)
            del out[:-200]
            m = re.search(r"listening on ws://([^/]+)/ fingerprint (SHA256:\S+)", line)
            if m:
                _call(loop, settle, m)
        _call(loop, settle, None)

    threading.Thread(target=read, daemon=True).start()
    try:
        m = await asyncio.wait_for(listening, 20)
    except asyncio.TimeoutError:
        proc.kill()
        raise RuntimeError("broker did not start in 20 s:\n" + "".join(out)) from None
    port = int(m.group(1).split(":")[-1])
    return Broker(f"ws://127.0.0.1:{port}/", port, m.group(2), data_dir, proc, out)


def _call(loop: asyncio.AbstractEventLoop, fn, arg) -> None:  # type: ignore[no-untyped-def]
    try:
        loop.call_soon_threadsafe(fn, arg)
    except RuntimeError:
        pass  # the test's event loop is gone: nobody waits for this broker any more


def kill_all() -> None:
    """Kills every process a test started and left running (by its own pid), e.g. after a failed assertion."""
    for p in _procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    _procs.clear()


@dataclass
class Redis:
    url: str
    port: int
    proc: subprocess.Popen[bytes]


async def start_redis() -> Redis:
    port = free_port()
    bin_ = shutil.which("redis-server")
    if bin_ is None:
        raise RuntimeError("redis-server not found on PATH (bin/test_psimbols.sh installs it)")
    proc = subprocess.Popen([bin_, "--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _procs.append(proc)
    for _ in range(200):
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"PING\r\n")
            await w.drain()
            ok = await asyncio.wait_for(r.readline(), 1)
            w.close()
            if ok.startswith(b"+PONG"):
                return Redis(f"redis://127.0.0.1:{port}", port, proc)
        except OSError:
            pass
        await asyncio.sleep(0.025)
    raise RuntimeError("redis-server did not start")


async def node_cli(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec("node", CLI, *args, env={**os.environ, **(env or {})}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await p.communicate()
    return p.returncode or 0, out.decode(), err.decode()


async def py_cli(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    e = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "python"), **(env or {})}
    import sys

    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "psimbols", *args, env=e, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await p.communicate()
    return p.returncode or 0, out.decode(), err.decode()


class Forwarder:
    """A TCP forwarder on a free port: each connection goes to the first backend that accepts it (a load balancer's failover)."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{self.port}/"

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for port in self.backends:
            try:
                br, bw = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            w.close()
            return

        async def pipe(a: asyncio.StreamReader, b: asyncio.StreamWriter) -> None:
            try:
                while data := await a.read(65536):
                    b.write(data)
                    await b.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                try:
                    b.close()
                except Exception:
                    pass

        await asyncio.gather(pipe(r, bw), pipe(br, w))

    def close(self) -> None:
        if self.server:
            self.server.close()


class Relay:
    """A WebSocket relay in front of a broker: each client socket gets its own socket to `upstream`.
    `intercept(ws, message)` sees each client frame first and returns True when it dealt with it
    (answered, dropped, or closed the socket); otherwise the frame goes on. `downstream` and
    `opened_at` list the client sockets and when each opened."""

    def __init__(self, upstream: str, intercept) -> None:  # type: ignore[no-untyped-def]
        self.upstream = upstream
        self.intercept = intercept
        self.downstream: list[Any] = []
        self.opened_at: list[float] = []
        self.server: Any = None

    async def start(self) -> str:
        import websockets.server

        self.server = await websockets.server.serve(self._relay, "127.0.0.1", 0, compression=None)
        return f"ws://127.0.0.1:{list(self.server.sockets)[0].getsockname()[1]}/"

    async def _relay(self, ws: Any) -> None:
        import websockets.client

        self.downstream.append(ws)
        self.opened_at.append(time.monotonic())
        async with websockets.client.connect(self.upstream, compression=None) as up:
            async def down() -> None:
                async for m in up:
                    await ws.send(m)

            t = asyncio.ensure_future(down())
            try:
                async for m in ws:
                    if not await self.intercept(ws, m):
                        await up.send(m)
            finally:
                t.cancel()

    def close(self) -> None:
        if self.server:
            self.server.close()


async def eventually(pred, timeout: float = 10.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
