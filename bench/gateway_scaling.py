"""`helios gateway --workers N` for N = 1 and 2, next to nginx with 1 and 2 worker processes.

What is measured, in alternating rounds (the machine is small and shared:
read the ratios, taken seconds apart, rather than absolute numbers):

- gateway: ``wrk -c 64`` on ``GET /api/v1/kv/bench/key`` with a bearer token
  (JWT, token record, user, roles, rate-limit bucket, RBAC, the read), the
  gateway processes on one atlasd (``--store unix://DIR/atlas.sock``, the
  topology ``--workers N --data DIR`` sets up), so 1 and 2 processes differ
  only in the process count.  A ``--data`` gateway (one process, embedded
  store) is shown as a reference.
- nginx: the same wrk on a 100-byte static file, ``worker_processes`` 1 and 2.

Besides requests/s, each row has the servers' CPU time per request (every
process of the server: the gateways, their supervisor and the atlasd they
share; nginx's master and workers), steadier than requests/s when wrk and the servers share
two cores: there a second worker can only help as far as a core is idle.

    .venv/bin/python bench/gateway_scaling.py [--seconds 10] [--rounds 3] [--connections 64] [--json]

Requires ``wrk`` and ``nginx`` (Debian packages).
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import emit_json, print_table, scratch_dir, unused_port  # noqa: E402
from bench.gateway import KEY, VALUE, WRK, http, wrk  # noqa: E402

HELIOS = str(Path(sys.executable).parent / "helios")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
JWT_KEYS = "k1=" + "b" * 48
ENV = {"HELIOS_RATELIMIT__DEFAULT": "1000000000 1", "HELIOS_AUTH__ACCESS_TOKEN_SECONDS": "3600",
       "HELIOS_AUTH__JWT_KEYS": JWT_KEYS, "HELIOS_LOG__LEVEL": "warn", "HELIOS_GATEWAY__ACCESS_LOG": "false"}


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with_children = Path(f"/proc/{p}/task/{p}/children")
        if with_children.exists():
            todo.extend(int(c) for c in with_children.read_text().split())
    return out


def cpu_of_tree(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class Server:
    """A server under test: a process (and its children), the URL wrk hits, the token it needs."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], port: int, path: str,
                 log: Path) -> None:
        self.name, self.port, self.path = name, port, path
        self.token: str | None = None
        self.also: list[int] = []  # processes outside its tree whose CPU it uses (a shared atlasd)
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {log.read_text(errors='replace')[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path if name.startswith('nginx') else '/healthz'}",
                                       timeout=2)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise RuntimeError(f"{name} did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def run(self, args: argparse.Namespace) -> dict[str, Any]:
        cpu0 = sum(cpu_of_tree(p) for p in [self.proc.pid, *self.also])
        result = wrk(self.url, seconds=args.seconds, connections=args.connections, threads=args.threads,
                     token=self.token, tolerate_errors=True)
        cpu = sum(cpu_of_tree(p) for p in [self.proc.pid, *self.also]) - cpu0
        result["cpu_us_per_request"] = cpu / max(1, result["requests"]) * 1e6
        return result

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_gateway(name: str, d: Path, store_args: list[str], workers: int) -> Server:
    port = unused_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")} | ENV
    gw = Server(name, [HELIOS, "gateway", *store_args, "--port", str(port), "--workers", str(workers)], env, port,
                f"/api/v1/kv/{KEY}", d / f"{name}.log")
    text = gw.log.read_text(errors="replace").splitlines()
    created = [i for i, line in enumerate(text) if "created the user" in line]
    password = text[created[0] + 1].strip() if created else (d / "password").read_text().strip()
    (d / "password").write_text(password)
    body = json.dumps({"username": "admin", "password": password}).encode()
    gw.token = json.loads(http("POST", f"http://127.0.0.1:{port}/api/v1/auth/login", body))["access_token"]
    http("PUT", gw.url, VALUE, gw.token)
    return gw


def start_nginx(d: Path, workers: int) -> Server:
    name = f"nginx-w{workers}"
    www = d / "www"
    www.mkdir(exist_ok=True)
    (www / "value").write_bytes(VALUE)
    (d / f"{name}-tmp").mkdir(exist_ok=True)
    port = unused_port()
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    conf = d / f"{name}.conf"
    conf.write_text(f"""
user {user} {group};
daemon off;
master_process on;
worker_processes {workers};
pid {d}/{name}.pid;
error_log {d}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    open_file_cache max=16;
    client_body_temp_path {d}/{name}-tmp/body;
    proxy_temp_path {d}/{name}-tmp/proxy;
    fastcgi_temp_path {d}/{name}-tmp/fastcgi;
    uwsgi_temp_path {d}/{name}-tmp/uwsgi;
    scgi_temp_path {d}/{name}-tmp/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096 reuseport;
        root {www};
    }}
}}
""")
    return Server(name, [NGINX, "-p", str(d), "-c", str(conf), "-e", str(d / f"{name}-error.log")],
                  dict(os.environ), port, "/value", d / f"{name}.log")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    servers: list[Server] = []
    atlasd: subprocess.Popen[bytes] | None = None
    with scratch_dir("gw-scaling") as d:
        try:
            store = d / "atlas"
            env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")} | ENV
            with (d / "atlasd.log").open("wb") as out:
                atlasd = subprocess.Popen([HELIOS, "atlasd", "--data", str(store), "--port", "0"], env=env,
                                          stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 60
            while not (store / "atlas.sock").exists():
                if atlasd.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("atlasd did not start: " + (d / "atlasd.log").read_text()[-2000:])
                time.sleep(0.1)
            url = f"unix://{store}/atlas.sock"
            servers = [start_gateway("gateway-w1", d, ["--store", url], 1),
                       start_gateway("gateway-w2", d, ["--store", url], 2),
                       start_nginx(d, 1), start_nginx(d, 2)]
            for s in servers[:2]:
                s.also = [atlasd.pid]
            if not args.no_embedded:
                (d / "embedded").mkdir()
                servers.append(start_gateway("gateway-w1-embedded", d / "embedded", ["--data", str(d / "embedded")],
                                             1))
            for s in servers:  # warm up
                wrk(s.url, seconds=2, connections=args.connections, threads=args.threads, token=s.token,
                    tolerate_errors=True)
            runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
            for _ in range(args.rounds):
                for s in servers:
                    runs[s.name].append(s.run(args))
        finally:
            for s in reversed(servers):
                s.stop()
            if atlasd is not None:
                atlasd.terminate()
                atlasd.wait(60)
    summary = {name: {"rps": median(r["rps"] for r in rs),
                      "cpu_us_per_request": median(r["cpu_us_per_request"] for r in rs),
                      "p99_ms": median(r["p99_ms"] for r in rs),
                      "non2xx": sum(r["non2xx"] for r in rs)} for name, rs in runs.items()}
    g1, g2 = summary["gateway-w1"]["rps"], summary["gateway-w2"]["rps"]
    n1, n2 = summary["nginx-w1"]["rps"], summary["nginx-w2"]["rps"]
    ratios = {"gateway_w2_over_w1": g2 / g1, "nginx_w2_over_w1": n2 / n1,
              "gateway_w1_over_nginx_w1": g1 / n1, "gateway_w2_over_nginx_w2": g2 / n2}
    return {"summary": summary, "ratios": ratios, "runs": runs, "cpus": os.cpu_count(),
            "wrk": {"connections": args.connections, "threads": args.threads, "seconds": args.seconds,
                    "rounds": args.rounds}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=10, help="length of one wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported (default 3)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: the machine has 2 cores)")
    p.add_argument("--no-embedded", action="store_true", help="skip the one-process --data reference row")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()
    for tool in (WRK, NGINX):
        if not shutil.which(tool) and not Path(tool).exists():
            sys.exit(f"{tool} not found: apt-get install wrk nginx")
    result = measure(args)
    if args.json:
        emit_json(result)
        return
    rows = [(name, f"{s['rps']:.0f}", f"{s['cpu_us_per_request']:.0f}", f"{s['p99_ms']:.1f}", s["non2xx"])
            for name, s in result["summary"].items()]
    print_table(f"wrk -t{args.threads} -c{args.connections}, {args.seconds}s x {args.rounds} alternating rounds, "
                f"medians ({result['cpus']} CPUs shared with wrk)",
                ["server", "req/s", "CPU us/req", "p99 ms", "non-2xx"], rows)
    print()
    for name, value in result["ratios"].items():
        print(f"  {name:28s} {value:.2f}x")


if __name__ == "__main__":
    main()
