"""The gateway under wrk: authenticated KV GETs against a bare Tornado handler, logins, PUT durability.

Three measurements, each a ratio taken in the same run (the machine is small
and shared: read ratios, not absolute numbers):

1. GET  ``wrk -c 64`` on ``GET /api/v1/kv/bench/key`` with a bearer token
   (JWT check + token record + user + roles + rate-limit bucket + RBAC + the
   read) against a bare Tornado handler (same event loop, uvloop) returning
   the same 100 bytes.  Rounds alternate bare / gateway.  Goal (issue 14):
   gateway >= 0.8x the bare handler's requests/s; the same comparison for a
   100-byte PUT of distinct keys, goal >= 0.6x.
2. p99 of those GETs while 20 clients log in as fast as they can (bcrypt at
   the configured cost, 12 by default) against the p99 without them, in
   alternating rounds.  Goal: with <= 2x without.
3. PUT of 100-byte values (wrk -c 64, distinct keys) under
   ``atlas.appendfsync always`` against ``everysec``, a fresh gateway each.
   Goal: always >= 0.5x everysec.

With ``--store URL`` (``redis`` starts a persistent redis-server) it measures
instead rate-limited GETs on a gateway over that store server against the
embedded store, alternating rounds; goal >= 0.8x and no non-2xx answer.

The gateway runs as `helios gateway` would (a subprocess, uvloop, access log
on, written to /dev/null), the rate limit raised out of the way.  Requires
``wrk`` (Debian: apt-get install wrk).

    .venv/bin/python bench/gateway.py [--seconds 10] [--rounds 3] [--connections 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import RedisServer, emit_json, print_table, scratch_dir, unused_port  # noqa: E402

HELIOS = str(Path(sys.executable).parent / "helios")
WRK = shutil.which("wrk") or "wrk"
VALUE = bytes(range(65, 91)) * 3 + b"0123456789" + b"abcdefghijklmnopqrstuvwx"  # 112 bytes
VALUE = VALUE[:100]
KEY = "bench/key"
LOGIN_CLIENTS = 20


# -- servers -------------------------------------------------------------------------

def bare_server(port: int) -> None:
    """The reference: one Tornado handler returning the value, on the same loop the gateway uses."""
    import asyncio

    import tornado.web

    from helios_cli.gateway import loop_factory

    class Bare(tornado.web.RequestHandler):
        def get(self, key: str) -> None:
            self.set_header("Content-Type", "application/octet-stream")
            self.finish(VALUE)

        def put(self, key: str) -> None:  # takes the body, answers as the gateway's PUT does (a JSON object)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"key": key, "size": len(self.request.body)}))

    async def main() -> None:
        app = tornado.web.Application([(r"/api/v1/kv/(.+)", Bare)])
        app.listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], port: int) -> None:
        self.port = port
        self.stdout = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, env=env, stdout=self.stdout, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                return
            except urllib.error.HTTPError:
                return  # the bare server answers 404 on /healthz: it is up
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{args[0]} exited with {self.proc.returncode}") from None
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_gateway(data: Path, appendfsync: str, store: str | None = None) -> Proc:
    """`store`: a store URL instead of the embedded one in `data` (a fresh keyspace: the admin's
    generated password is read from the gateway's output into data/initial_admin_password)."""
    port = unused_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    env.update({"HELIOS_ATLAS__APPENDFSYNC": appendfsync, "HELIOS_RATELIMIT__DEFAULT": "1000000000 1",
                "HELIOS_AUTH__ACCESS_TOKEN_SECONDS": "3600", "HELIOS_AUTH__LOGIN_FAILURES_PER_USER": "1000000 1",
                "HELIOS_AUTH__LOGIN_FAILURES_PER_CLIENT": "1000000 1"})
    if store is None:
        return Proc([HELIOS, "gateway", "--data", str(data), "--port", str(port)], env, port)
    env["HELIOS_AUTH__JWT_KEYS"] = "k1=" + "b" * 48
    gw = Proc([HELIOS, "gateway", "--store", store, "--port", str(port)], env, port)
    gw.stdout.seek(0)
    lines = gw.stdout.read().decode(errors="replace").splitlines()
    created = [i for i, line in enumerate(lines) if "created the user" in line]
    if not created:
        gw.stop()
        raise RuntimeError(f"the store at {store} already has users: give --store an empty one")
    data.mkdir(parents=True, exist_ok=True)
    (data / "initial_admin_password").write_text(lines[created[0] + 1].strip() + "\n")
    return gw


def start_bare() -> Proc:
    port = unused_port()
    return Proc([sys.executable, __file__, "--bare-server", str(port)], dict(os.environ), port)


def http(method: str, url: str, body: bytes | None = None, token: str | None = None) -> bytes:
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()  # type: ignore[no-any-return]


def admin_token(gw: Proc, data: Path) -> tuple[str, str]:
    password = (data / "initial_admin_password").read_text().strip()
    body = json.dumps({"username": "admin", "password": password}).encode()
    return json.loads(http("POST", gw.base + "/api/v1/auth/login", body))["access_token"], password


# -- wrk -------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, *, seconds: int, connections: int, threads: int, token: str | None = None,
        script: Path | None = None, server: Proc | None = None, tolerate_errors: bool = False) -> dict[str, Any]:
    """One wrk run; with `server`, also the server's CPU time per request (steadier than requests/s
    on a busy machine: it does not count the time the server waited for a CPU)."""
    args = [WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    if script:
        args += ["-s", str(script)]
    cpu0 = cpu_seconds(server.proc.pid) if server else 0.0
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 60).stdout
    cpu = cpu_seconds(server.proc.pid) - cpu0 if server else 0.0
    if "Requests/sec" not in out or not re.search(r"^\s+99%", out, re.M):
        raise RuntimeError(f"wrk said:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", out, re.M))  # ("1.46s " ends in a space)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if non2xx and int(non2xx.group(1)) > total // 100 and not tolerate_errors:
        raise RuntimeError(f"{non2xx.group(1)} of {total} responses were errors:\n{out}")
    return {"rps": rps, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "p50_ms": _ms(lat["50"]), "p90_ms": _ms(lat["90"]), "p99_ms": _ms(lat["99"]),
            "requests": total, "socket_errors": errors.group(1) if errors else "",
            "cpu_us_per_request": cpu / total * 1e6 if server else None}


PUT_SCRIPT = """
wrk.method = "PUT"
wrk.body = string.rep("v", 100)
local n = 0
local id = tostring(math.random(1, 1000000000))
request = function()
  n = n + 1
  return wrk.format(nil, "/api/v1/kv/bench/put/" .. id .. "/" .. n)
end
"""


# -- login load ------------------------------------------------------------------------

class Logins:
    """LOGIN_CLIENTS threads logging in back to back until stopped."""

    def __init__(self, base: str, password: str) -> None:
        self.body = json.dumps({"username": "admin", "password": password}).encode()
        self.url = base + "/api/v1/auth/login"
        self.stop_flag = threading.Event()
        self.count = 0
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(LOGIN_CLIENTS)]

    def loop(self) -> None:
        while not self.stop_flag.is_set():
            http("POST", self.url, self.body)
            self.count += 1

    def __enter__(self) -> Logins:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)


# -- the measurements --------------------------------------------------------------------

def get_vs_bare(args: argparse.Namespace, data: Path, appendfsync: str) -> dict[str, Any]:
    gw = start_gateway(data, appendfsync)
    bare = start_bare()
    try:
        token, _ = admin_token(gw, data)
        http("PUT", f"{gw.base}/api/v1/kv/{KEY}", VALUE, token)
        assert http("GET", f"{gw.base}/api/v1/kv/{KEY}", token=token) == http("GET", f"{bare.base}/api/v1/kv/{KEY}")
        kw = {"seconds": args.seconds, "connections": args.connections, "threads": args.threads}
        wrk(f"{gw.base}/api/v1/kv/{KEY}", token=token, **{**kw, "seconds": 2})  # warm up
        runs: dict[str, list[dict[str, float]]] = {"bare": [], "gateway": []}
        for _ in range(args.rounds):
            runs["bare"].append(wrk(f"{bare.base}/api/v1/kv/{KEY}", server=bare, **kw))
            runs["gateway"].append(wrk(f"{gw.base}/api/v1/kv/{KEY}", token=token, server=gw, **kw))
        bare_rps = median(r["rps"] for r in runs["bare"])
        gw_rps = median(r["rps"] for r in runs["gateway"])
        bare_cpu = median(r["cpu_us_per_request"] for r in runs["bare"])
        gw_cpu = median(r["cpu_us_per_request"] for r in runs["gateway"])
        out = {"appendfsync": appendfsync, "bare_rps": bare_rps, "gateway_rps": gw_rps, "ratio": gw_rps / bare_rps,
               "bare_cpu_us": bare_cpu, "gateway_cpu_us": gw_cpu, "cpu_ratio": bare_cpu / gw_cpu, "runs": runs}
        # 100-byte PUTs of distinct keys, the same way round (issue 14 §3: gateway >= 0.6x the bare handler).
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(PUT_SCRIPT)
            script = Path(f.name)
        try:
            puts: dict[str, list[dict[str, Any]]] = {"bare": [], "gateway": []}
            for _ in range(args.rounds):
                puts["bare"].append(wrk(f"{bare.base}/api/v1/kv/x", server=bare, script=script, **kw))
                puts["gateway"].append(wrk(f"{gw.base}/api/v1/kv/x", token=token, server=gw, script=script, **kw))
        finally:
            script.unlink()
        bare_put = median(r["rps"] for r in puts["bare"])
        gw_put = median(r["rps"] for r in puts["gateway"])
        out.update({"put_bare_rps": bare_put, "put_gateway_rps": gw_put, "put_ratio": gw_put / bare_put,
                    "put_bare_cpu_us": median(r["cpu_us_per_request"] for r in puts["bare"]),
                    "put_gateway_cpu_us": median(r["cpu_us_per_request"] for r in puts["gateway"]),
                    "put_runs": puts})
        return out
    finally:
        bare.stop()
        gw.stop()


def store_vs_embedded(args: argparse.Namespace) -> dict[str, Any]:
    """Rate-limited authenticated GETs: the gateway on a store server (--store) against the embedded
    store, both appendfsync everysec, alternating rounds; every non-2xx answer counted (goal: none)."""
    with scratch_dir("gw-store") as scratch:
        server: RedisServer | None = None
        url = args.store
        if url == "redis":  # a persistent redis-server of our own, as Redis is run for data that matters
            server = RedisServer(scratch / "redis", appendonly="yes", appendfsync="everysec")
            server.start()
            url = f"redis://127.0.0.1:{server.port}/0"
        gws = {"embedded": start_gateway(scratch / "embedded", "everysec"),
               "store": start_gateway(scratch / "remote", "everysec", store=url)}
        try:
            kw = {"seconds": args.seconds, "connections": args.connections, "threads": args.threads,
                  "tolerate_errors": True}
            runs: dict[str, list[dict[str, Any]]] = {"embedded": [], "store": []}
            tokens = {}
            for name, gw in gws.items():
                tokens[name], _ = admin_token(gw, scratch / ("embedded" if name == "embedded" else "remote"))
                http("PUT", f"{gw.base}/api/v1/kv/{KEY}", VALUE, tokens[name])
                wrk(f"{gw.base}/api/v1/kv/{KEY}", token=tokens[name], **{**kw, "seconds": 2})  # warm up
            for _ in range(args.rounds):
                for name, gw in gws.items():
                    runs[name].append(wrk(f"{gw.base}/api/v1/kv/{KEY}", token=tokens[name], server=gw, **kw))
        finally:
            for gw in gws.values():
                gw.stop()
            if server is not None:
                server.stop()
    emb = median(r["rps"] for r in runs["embedded"])
    rem = median(r["rps"] for r in runs["store"])
    return {"store": args.store, "embedded_rps": emb, "store_rps": rem, "ratio": rem / emb,
            "store_non2xx": sum(r["non2xx"] for r in runs["store"]),
            "embedded_non2xx": sum(r["non2xx"] for r in runs["embedded"]), "runs": runs}


def get_p99_with_logins(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    gw = start_gateway(data, "always")
    try:
        token, password = admin_token(gw, data)
        http("PUT", f"{gw.base}/api/v1/kv/{KEY}", VALUE, token)
        kw = {"seconds": args.seconds, "connections": args.connections, "threads": args.threads, "token": token}
        url = f"{gw.base}/api/v1/kv/{KEY}"
        without, with_logins, logins_per_s = [], [], []
        for _ in range(args.rounds):
            without.append(wrk(url, **kw))
            with Logins(gw.base, password) as logins:
                time.sleep(1)  # let the logins get going
                c0, t0 = logins.count, time.monotonic()
                with_logins.append(wrk(url, **kw))
                logins_per_s.append((logins.count - c0) / (time.monotonic() - t0))
        p99_without = sorted(r["p99_ms"] for r in without)[len(without) // 2]
        p99_with = sorted(r["p99_ms"] for r in with_logins)[len(with_logins) // 2]
        return {"p99_without_ms": p99_without, "p99_with_ms": p99_with, "ratio": p99_with / p99_without,
                "logins_per_s": sum(logins_per_s) / len(logins_per_s), "runs": {"without": without,
                                                                                 "with": with_logins}}
    finally:
        gw.stop()


def put_policies(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(PUT_SCRIPT)
        script = Path(f.name)
    try:
        for policy in ("everysec", "always"):
            with scratch_dir(f"gw-put-{policy}") as data:
                gw = start_gateway(data, policy)
                try:
                    token, _ = admin_token(gw, data)
                    runs = [wrk(f"{gw.base}/api/v1/kv/x", seconds=args.seconds, connections=args.connections,
                                threads=args.threads, token=token, script=script) for _ in range(args.rounds)]
                finally:
                    gw.stop()
            out[policy] = {"rps": median(r["rps"] for r in runs), "runs": runs}
    finally:
        script.unlink()
    out["ratio"] = out["always"]["rps"] / out["everysec"]["rps"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=10, help="length of one wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per comparison (default 3)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: the machine has 2 cores)")
    p.add_argument("--only", choices=("get", "logins", "put"), help="run one measurement")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    p.add_argument("--store", metavar="URL", help="instead: rate-limited GETs on a gateway using the store at "
                   "URL (an empty one; 'redis' starts a persistent redis-server) against the embedded store")
    p.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.bare_server:
        bare_server(args.bare_server)
        return
    if not shutil.which(WRK):
        sys.exit("wrk not found: apt-get install wrk")
    result: dict[str, Any] = {"cpus": os.cpu_count(), "seconds": args.seconds, "rounds": args.rounds,
                              "connections": args.connections}
    if args.store:
        r = result["store_vs_embedded"] = store_vs_embedded(args)
        print_table(f"rate-limited GET /api/v1/kv/{{key}}, wrk -c{args.connections}, median of {args.rounds} "
                    f"rounds (goal: store >= 0.8x embedded, no non-2xx)",
                    ["store", "embedded req/s", "store req/s", "ratio", "non-2xx (store)", "non-2xx (embedded)"],
                    [[r["store"], f"{r['embedded_rps']:.0f}", f"{r['store_rps']:.0f}", f"{r['ratio']:.2f}x",
                      str(r["store_non2xx"]), str(r["embedded_non2xx"])]])
        if args.json:
            emit_json(result)
        return
    if args.only in (None, "get"):
        result["get"] = []
        for policy in ("always", "everysec"):
            with scratch_dir("gw-get") as data:
                result["get"].append(get_vs_bare(args, data, policy))
        print_table(f"GET /api/v1/kv/{{key}}, wrk -c{args.connections}, median of {args.rounds} rounds "
                    f"(goal: gateway >= 0.8x bare requests/s)",
                    ["appendfsync", "bare req/s", "gateway req/s", "ratio", "bare CPU/req", "gateway CPU/req",
                     "CPU ratio"],
                    [[g["appendfsync"], f"{g['bare_rps']:.0f}", f"{g['gateway_rps']:.0f}", f"{g['ratio']:.2f}x",
                      f"{g['bare_cpu_us']:.0f} us", f"{g['gateway_cpu_us']:.0f} us", f"{g['cpu_ratio']:.2f}x"]
                     for g in result["get"]])
        print_table(f"PUT /api/v1/kv/{{key}} (100 B, distinct keys), wrk -c{args.connections}, median of "
                    f"{args.rounds} rounds (goal: gateway >= 0.6x bare requests/s)",
                    ["appendfsync", "bare req/s", "gateway req/s", "ratio", "bare CPU/req", "gateway CPU/req"],
                    [[g["appendfsync"], f"{g['put_bare_rps']:.0f}", f"{g['put_gateway_rps']:.0f}",
                      f"{g['put_ratio']:.2f}x", f"{g['put_bare_cpu_us']:.0f} us", f"{g['put_gateway_cpu_us']:.0f} us"]
                     for g in result["get"]])
    if args.only in (None, "logins"):
        with scratch_dir("gw-logins") as data:
            r = result["logins"] = get_p99_with_logins(args, data)
        print_table(f"GET p99 with {LOGIN_CLIENTS} clients logging in (goal: <= 2x without)",
                    ["without", "with logins", "ratio", "logins/s"],
                    [[f"{r['p99_without_ms']:.2f} ms", f"{r['p99_with_ms']:.2f} ms", f"{r['ratio']:.2f}x",
                      f"{r['logins_per_s']:.1f}"]])
    if args.only in (None, "put"):
        r = result["put"] = put_policies(args)
        print_table("PUT /api/v1/kv/{key} (100 B), requests/s (goal: always >= 0.5x everysec)",
                    ["everysec", "always", "ratio"],
                    [[f"{r['everysec']['rps']:.0f}", f"{r['always']['rps']:.0f}", f"{r['ratio']:.2f}x"]])
    if args.json:
        emit_json(result)


if __name__ == "__main__":
    main()
