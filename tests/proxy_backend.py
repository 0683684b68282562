"""A small real HTTP backend for the proxy's tests, run as a subprocess.

    python -m tests.proxy_backend --port 0 --name web1 [--delay S] [--fail STATUS] [--unhealthy]

prints ``PORT <n>`` once listening.  Endpoints (any method):

- ``/echo...`` and any unlisted path: JSON ``{name, method, path, headers, body_bytes}`` (the body is
  read in chunks and counted, never held);
- ``/stream?n=BYTES[&chunked=1][&body_after=S]``: N bytes, with Content-Length or chunked;
- ``/sink``: reads the body in chunks, answers ``{"bytes": n}``;
- ``/slow?delay=S``: answers after S seconds;
- ``/status/CODE``: answers CODE;
- ``/close``: promises 1000 bytes, sends 100, closes the connection;
- ``/bad``: writes a garbage status line and closes;
- ``/healthz``: 200, or 503 while unhealthy;
- ``/ws``: WebSocket echo (the text message ``bye`` makes the backend close);
- ``POST /_control`` JSON ``{"delay": S, "fail": STATUS|null, "healthy": bool}``: change the
  behaviour of every later request (``/healthz`` and ``/_control*`` excepted from delay/fail);
- ``GET /_control/stats``: ``{"requests": n, "connections": n}`` (TCP connections seen).

Kill it (SIGKILL) to make it vanish; `BackendProcess` starts and stops one from a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["BackendProcess"]

ROOT = Path(__file__).resolve().parent.parent


class BackendProcess:
    """A running backend subprocess; `url`, `control(...)`, `stats()`, `kill()`, `restart()`."""

    def __init__(self, name: str = "b", *, port: int = 0, args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.args = args
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.proxy_backend", "--port", str(self.port), "--name", self.name,
             *self.args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.kill()
            raise RuntimeError(f"backend {self.name} did not start: {line!r}")
        self.port = int(line.split()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"Content-Type": "application/json"})
            return json.loads(conn.getresponse().read() or b"{}")
        finally:
            conn.close()

    def control(self, **settings: Any) -> None:
        self._request("POST", "/_control", settings)

    def stats(self) -> dict[str, Any]:
        return self._request("GET", "/_control/stats")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> None:
        """Start again on the same port (a backend coming back)."""
        self.kill()
        deadline = time.monotonic() + 5
        while True:
            try:
                self.start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __enter__(self) -> BackendProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


# --- the server (runs in the subprocess) ---


def _serve(port: int, name: str, delay: float, fail: int | None, healthy: bool) -> None:
    from aiohttp import WSMsgType, web

    state: dict[str, Any] = {"delay": delay, "fail": fail, "healthy": healthy, "requests": 0}
    transports: set[int] = set()

    async def control(request: web.Request) -> web.Response:
        if request.method == "POST":
            state.update(await request.json())
            return web.json_response({"ok": True})
        return web.json_response({"requests": state["requests"], "connections": len(transports)})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": state["healthy"]}, status=200 if state["healthy"] else 503)

    async def any_path(request: web.Request) -> web.StreamResponse:
        state["requests"] += 1
        if request.transport is not None:
            transports.add(id(request.transport))
        path = request.path
        if state["delay"]:
            await asyncio.sleep(state["delay"])
        if state["fail"]:
            return web.json_response({"name": name, "failed": True}, status=int(state["fail"]))
        if path == "/slow":
            await asyncio.sleep(float(request.query.get("delay", "1")))
            return web.json_response({"name": name, "slow": True})
        if path.startswith("/status/"):
            return web.json_response({"name": name}, status=int(path.rsplit("/", 1)[1]))
        if path == "/stream":
            n = int(request.query.get("n", "0"))
            resp = web.StreamResponse()
            if request.query.get("chunked"):
                resp.enable_chunked_encoding()
            else:
                resp.content_length = n
            resp.content_type = "application/octet-stream"
            await resp.prepare(request)
            # body_after=S: wait S seconds between the head and the body (a HEAD gets the body
            # too: aiohttp's StreamResponse writes it, as careless backends do).
            await asyncio.sleep(float(request.query.get("body_after", "0")))
            block = b"x" * 65536
            left = n
            while left > 0:
                await resp.write(block[:left] if left < len(block) else block)
                left -= len(block)
            await resp.write_eof()
            return resp
        if path == "/close":
            resp = web.StreamResponse()
            resp.content_length = 1000
            await resp.prepare(request)
            await resp.write(b"y" * 100)
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.close()
            return resp
        if path == "/bad":
            assert request.transport is not None
            request.transport.write(b"HTTP/1.1 abc nonsense\r\n\x00\x01garbage\r\n\r\n")
            request.transport.close()
            await asyncio.sleep(0.05)
            return web.Response()
        if path == "/ws":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and msg.data == "bye":
                    await ws.close()  # the backend ends the conversation (a test's close from that side)
                elif msg.type == WSMsgType.TEXT:
                    await ws.send_str(f"{name}:{msg.data}")
                elif msg.type == WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
            return ws
        count = 0
        async for chunk in request.content.iter_any():
            count += len(chunk)
        if path == "/sink":
            return web.json_response({"name": name, "bytes": count})
        return web.json_response({"name": name, "method": request.method, "path": request.path_qs,
                                  "headers": [[k, v] for k, v in request.headers.items()], "body_bytes": count})

    app = web.Application(client_max_size=1 << 40)
    app.router.add_route("*", "/_control", control)
    app.router.add_route("*", "/_control/stats", control)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", any_path)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        sys.stdout.write(f"PORT {bound}\n")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description="HTTP backend for the proxy tests")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="b")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--fail", type=int, default=None)
    parser.add_argument("--unhealthy", action="store_true")
    a = parser.parse_args()
    # The parent test process may die without killing us: exit when it does.
    parent = os.getppid()

    def watch_parent() -> None:
        import threading

        def loop() -> None:
            while True:
                time.sleep(1)
                if os.getppid() != parent:
                    os._exit(0)

        threading.Thread(target=loop, daemon=True).start()

    watch_parent()
    _serve(a.port, a.name, a.delay, a.fail, not a.unhealthy)


if __name__ == "__main__":
    main()
