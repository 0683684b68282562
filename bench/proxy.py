"""helios proxy under wrk, next to nginx, HAProxy and proxy.py proxying to the same nginx static backend.

Four reverse proxies, each with the same number of worker processes (1, then
2), forward ``GET /`` to one nginx serving a static file.  They all run at
once; the measurements alternate between them round by round (the machine is
small and shared: read the ratios taken within a round, not the absolute
numbers).  Each round, for each proxy:

1. **Throughput**: ``wrk -t1 -c64`` for ``--seconds``: requests/s, and the CPU
   time per request of the proxy's processes (every process of its process
   group, from /proc: steadier than requests/s on a busy machine, as it does
   not count time spent waiting for a CPU).
2. **Added latency at half load**: wrk again, paced to about half of the rate
   just measured (wrk's Lua ``delay()``: each connection waits a fixed time
   after each response before it sends the next request, so the rate is
   set by the connection count), then the same paced wrk run straight at the
   backend.  Added median latency = proxy p50 - direct p50.  wrk2 is not
   installed; this pacing is closed-loop per connection (a slow response
   delays that connection's next request), which is close enough at half
   load, where responses take a fraction of the pause; the achieved rate is
   printed next to the target.

Peers:
- nginx: ``proxy_pass`` to an ``upstream`` block with ``keepalive 64``,
  ``proxy_http_version 1.1`` and an empty ``Connection`` header;
  ``worker_processes N``; access log off.
- HAProxy (the Debian package): ``mode http``, ``http-reuse always``; one
  process with ``nbthread N`` (HAProxy 2.x has no worker processes; threads
  are its unit of parallelism); no logging.
- proxy.py (PyPI ``proxy.py``, in the ``bench`` extra): its reverse proxy
  (``--enable-reverse-proxy``) with a one-route plugin written to the temp
  dir, ``--num-acceptors N`` processes, ``--threaded`` (a thread per client
  connection); log level ERROR.  Its default ``--threadless`` mode cannot be
  measured with keep-alive clients: in proxy.py 2.4.10 the second request on
  a connection kills the process's event loop (``FileNotFoundError`` from
  ``selector.modify`` in ``Threadless._update_work_events``), and every
  later request hangs.
- helios: ``helios proxy --config FILE --port P --workers N --no-access-log``,
  one route ``/`` to a pool of the one backend (round robin; active health
  checks off, as none of the peers checks its backend here; the passive
  outlier ejection and the breaker are on, at their defaults).

Every server runs as the current user on an unused loopback port, its config,
pid file and error log in a fresh /tmp directory (removed afterwards), each in
its own process group (stopped on exit, whatever happens).  Needs ``wrk``,
``nginx``, ``haproxy`` (Debian packages) and proxy.py
(``.venv/bin/pip install proxy.py``; a missing peer is skipped with a note).

    .venv/bin/python bench/proxy.py                       # workers 1 then 2, 3 rounds, ~10 min
    .venv/bin/python bench/proxy.py --quick               # 1 round of 3 s runs, ~2 min
    .venv/bin/python bench/proxy.py --workers 1 --systems helios,nginx --json
    .venv/bin/python bench/proxy.py --scaling               # 1 -> 2 workers, slow backend, ~3 min

**Scaling mode** (``--scaling``): where a second worker can help.  With wrk,
the backend and the proxy on 2 cores, the box saturates (DESIGN.md section 5),
so here the backend is slow but cheap: a small uvloop protocol in this
process's temp dir that answers every request after a fixed delay
(``--backend-delay-ms``, default 2; its own CPU/request is printed), with more
connections (``--scaling-connections``, default 128).  helios and nginx run
with 1 and then 2 workers; for each run it prints requests/s, the proxy's CPU
per request, the cores the proxy used, and how busy the whole box was (from
/proc/stat: other work on the machine shows there), then the 1 -> 2 ratio.
A proxy that is CPU-bound with one worker can only scale as far as the box
has idle CPU left for its second one.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import emit_json, machine_note, print_table, scratch_dir, unused_port  # noqa: E402
from bench.jobs import Procs, cpu_seconds, processes  # noqa: E402

BIN = Path(sys.executable).parent
HELIOS = str(BIN / "helios")
WRK = shutil.which("wrk") or "/usr/bin/wrk"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
# proxy.py's console script, not `python -m proxy`: with bench/ as the cwd (Procs runs everything
# there) "proxy" would be this file.
PROXYPY = str(BIN / "proxy")
SYSTEMS = ("helios", "nginx", "haproxy", "proxy.py")
BODY_BYTES = 1024  # the static file (a small page: the proxies' per-request cost dominates)
# A paced connection's mean pause between a response and its next request (drawn uniformly from
# 0..2x, so connections do not fire in step): long beside a response's ~1 ms, so the rate is
# about connections / pause.
HALF_LOAD_PAUSE_MS = 20

# -- the servers -------------------------------------------------------------------------------


@dataclass
class Server:
    """One server under test: its port and the process whose group holds all of its processes."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    workers: int = 1
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def cpu(self) -> float:
        # Its process group (nginx's and haproxy's workers) and its direct children, which
        # `helios proxy --workers N` puts in process groups of their own (helios_core/supervise.py).
        return cpu_seconds(children_of(self.proc.pid), [self.proc.pid])


def children_of(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            if ppid == pid:
                kids.append(int(entry))
    return kids


def wait_serving(server: Server, procs: Procs, body: bytes, timeout: float = 60.0) -> None:
    """Poll GET / until it answers 200 with the backend's body (the proxy is up and reaches it)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        procs.check()
        try:
            with urllib.request.urlopen(server.url, timeout=2) as r:
                if r.status == 200 and r.read() == body:
                    return
                last = r.status
        except (OSError, urllib.error.URLError) as e:
            last = e
        time.sleep(0.1)
    log = procs.logs[procs.procs.index(server.proc)]
    raise RuntimeError(f"{server.name} did not serve GET / within {timeout:.0f}s (last: {last}); its log:\n"
                       + log.read_text(errors="replace")[-3000:])


def _nginx_common(d: Path, name: str, workers: int) -> str:
    # Every path nginx would write to is in the temp dir, and its workers run as this user (a master
    # started by root would otherwise switch them to "nobody", who cannot read the 0700 temp dir).
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"""
user {user} {group};
daemon off;
master_process on;
worker_processes {workers};
pid {d}/{name}.pid;
error_log {d}/{name}-error.log warn;
events {{ worker_connections 4096; }}
"""


def _nginx_http(d: Path, name: str) -> str:
    return f"""
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {d}/{name}-tmp/body;
    proxy_temp_path {d}/{name}-tmp/proxy;
    fastcgi_temp_path {d}/{name}-tmp/fastcgi;
    uwsgi_temp_path {d}/{name}-tmp/uwsgi;
    scgi_temp_path {d}/{name}-tmp/scgi;
"""


def start_nginx(procs: Procs, d: Path, name: str, workers: int, server_block: str, label: str = "nginx") -> Server:
    (d / f"{name}-tmp").mkdir(exist_ok=True)
    port = unused_port()
    conf = d / f"{name}.conf"
    conf.write_text(_nginx_common(d, name, workers) + "http {\n" + _nginx_http(d, name)
                    + server_block.replace("@PORT@", str(port)) + "\n}\n")
    proc = procs.spawn([NGINX, "-p", str(d), "-c", str(conf), "-e", str(d / f"{name}-error.log")], dict(os.environ),
                       d / f"{name}.log")
    return Server(label, port, proc, workers)


def start_backend(procs: Procs, d: Path, workers: int, body: bytes) -> Server:
    www = d / "www"
    www.mkdir()
    (www / "index.html").write_bytes(body)
    return start_nginx(procs, d, "backend", workers, label="backend", server_block=f"""
    open_file_cache max=16;
    server {{
        listen 127.0.0.1:@PORT@ backlog=4096;
        root {www};
    }}""")


def start_nginx_proxy(procs: Procs, d: Path, workers: int, backend: Server) -> Server:
    return start_nginx(procs, d, f"nginx-w{workers}", workers, f"""
    upstream backend {{
        server 127.0.0.1:{backend.port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:@PORT@ backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}""")


def start_haproxy(procs: Procs, d: Path, workers: int, backend: Server) -> Server:
    port = unused_port()
    name = f"haproxy-w{workers}"
    conf = d / f"{name}.cfg"
    conf.write_text(f"""global
    nbthread {workers}
    maxconn 4096
    pidfile {d}/{name}.pid

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    server b1 127.0.0.1:{backend.port}
""")
    proc = procs.spawn([HAPROXY, "-f", str(conf), "-db"], dict(os.environ), d / f"{name}.log")
    return Server("haproxy", port, proc, workers)


PROXYPY_PLUGIN = '''"""bench/proxy.py: proxy.py's reverse proxy, every path to the one backend."""
import os
import pwd

from proxy.http.server import ReverseProxyBasePlugin


class BenchReverseProxy(ReverseProxyBasePlugin):
    def routes(self):
        # A static route: the URL's path replaces the request's (so "/" here, as wrk asks for).
        return [(r"/.*$", [os.environ["BENCH_BACKEND_URL"].encode()])]
'''


def start_proxypy(procs: Procs, d: Path, workers: int, backend: Server) -> Server:
    (d / "bench_proxypy_plugin.py").write_text(PROXYPY_PLUGIN)
    port = unused_port()
    name = f"proxypy-w{workers}"
    # No empty PYTHONPATH entry: that would be the cwd (bench/), where "proxy" is this file.
    path = [str(d), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "BENCH_BACKEND_URL": backend.url}
    proc = procs.spawn([PROXYPY, "--hostname", "127.0.0.1", "--port", str(port),
                        "--num-acceptors", str(workers), "--num-workers", str(workers), "--backlog", "4096",
                        "--threaded", "--enable-reverse-proxy", "--plugins", "bench_proxypy_plugin.BenchReverseProxy",
                        "--log-level", "ERROR", "--pid-file", str(d / f"{name}.pid")], env, d / f"{name}.log")
    return Server("proxy.py", port, proc, workers)


def start_helios(procs: Procs, d: Path, workers: int, backend: Server, max_connections: int = 100) -> Server:
    port = unused_port()
    name = f"helios-w{workers}"
    conf = d / f"{name}.yaml"
    conf.write_text(f"""pools:
  web:
    balancer: round_robin
    max_connections: {max_connections}
    backends:
      - {{id: b1, url: "http://127.0.0.1:{backend.port}"}}
    health: {{enabled: false}}  # as for the peers, none of which checks its backend here
routes:
  - {{id: all, prefix: /, pool: web}}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    proc = procs.spawn([HELIOS, "proxy", "--config", str(conf), "--port", str(port), "--workers", str(workers),
                        "--no-access-log"], env, d / f"{name}.log")
    return Server("helios", port, proc, workers)


STARTERS: dict[str, Callable[[Procs, Path, int, Server], Server]] = {
    "helios": start_helios, "nginx": start_nginx_proxy, "haproxy": start_haproxy, "proxy.py": start_proxypy}


def missing(system: str) -> str | None:
    """Why `system` cannot run here, or None."""
    need = {"nginx": NGINX, "haproxy": HAPROXY}.get(system)
    if need and not os.access(need, os.X_OK):
        return f"{need} not found (apt-get install {system})"
    if system == "proxy.py" and not os.access(PROXYPY, os.X_OK):
        return "proxy.py is not installed in this venv (.venv/bin/pip install proxy.py)"
    if system == "helios":
        out = subprocess.run([HELIOS, "proxy", "--help"], capture_output=True, text=True)
        if out.returncode != 0:
            return f"`helios proxy` is not available: {out.stderr.strip()[-200:]}"
    return None


# -- wrk ------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, *, seconds: float, connections: int, script: Path | None = None,
        server: Server | None = None) -> dict[str, Any]:
    """One wrk run (1 thread: the machine has 2 cores); with `server`, its CPU time per request."""
    args = [WRK, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    if script is not None:
        args += ["-s", str(script)]
    cpu0 = server.cpu() if server else 0.0
    proc = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 60)
    cpu = server.cpu() - cpu0 if server else 0.0
    out = proc.stdout
    total_m = re.search(r"(\d+) requests in", out)
    if proc.returncode != 0 or not total_m:
        raise RuntimeError(f"wrk failed ({proc.returncode}) on {url}:\n{out}\n{proc.stderr}")
    total = int(total_m.group(1))
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    if "50" not in lat or "99" not in lat:
        raise RuntimeError(f"no latency percentiles in wrk's output on {url}:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if total == 0 or (non2xx and int(non2xx.group(1)) > total // 100):
        raise RuntimeError(f"{non2xx.group(1) if non2xx else '?'} of {total} responses were errors on {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50_ms": _ms(lat["50"]), "p99_ms": _ms(lat["99"]), "requests": total,
            "socket_errors": errors.group(1) if errors else "",
            "cpu_us_per_request": cpu / total * 1e6 if server else None}


def paced_script(d: Path, pause_ms: int) -> Path:
    path = d / f"paced-{pause_ms}ms.lua"
    path.write_text(f"-- bench/proxy.py: after each response a connection pauses 0..{2 * pause_ms} ms "
                    f"(mean {pause_ms})\nfunction delay()\n  return math.random(0, {2 * pause_ms})\nend\n")
    return path


def pacing(rate: float) -> tuple[int, int]:
    """(connections, mean pause in ms) for about `rate` requests/s (one request per pause plus ~1 ms)."""
    pause = HALF_LOAD_PAUSE_MS
    conns = max(2, min(1000, round(rate * (pause + 1) / 1000)))
    return conns, pause


# -- one run ----------------------------------------------------------------------------------------


def run_workers(args: argparse.Namespace, procs: Procs, d: Path, backend: Server, body: bytes,
                workers: int) -> dict[str, Any]:
    servers = [STARTERS[s](procs, d, workers, backend) for s in args.systems]
    for s in servers:
        wait_serving(s, procs, body)
    warm = min(2.0, args.seconds)
    for s in servers:
        wrk(s.url, seconds=warm, connections=args.connections)
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = servers[r % len(servers):] + servers[:r % len(servers)]  # who goes first rotates
        this: dict[str, Any] = {}
        for s in order:
            this[s.name] = {"max": wrk(s.url, seconds=args.seconds, connections=args.connections, server=s)}
        for s in order:
            target = this[s.name]["max"]["rps"] / 2
            conns, pause = pacing(target)
            script = paced_script(d, pause)
            half = wrk(s.url, seconds=args.latency_seconds, connections=conns, script=script, server=s)
            direct = wrk(backend.url, seconds=args.latency_seconds, connections=conns, script=script)
            this[s.name].update({"half": half, "direct": direct, "target_rps": target, "paced_connections": conns,
                                 "added_p50_ms": half["p50_ms"] - direct["p50_ms"]})
        rounds.append(this)
        procs.check()
        print(f"  workers={workers} round {r + 1}/{args.rounds}: "
              + ", ".join(f"{n} {v['max']['rps']:.0f} req/s" for n, v in this.items()), flush=True)
    for s in servers:  # SIGKILL: Procs.check() takes any other exit for a crash
        Procs.kill(s.proc)
        s.proc.wait()
    return summarize(rounds, [s.name for s in servers], workers)


def summarize(rounds: list[dict[str, Any]], names: Sequence[str], workers: int) -> dict[str, Any]:
    out: dict[str, Any] = {"workers": workers, "systems": {}, "ratios": {}, "rounds": rounds}
    for n in names:
        rps = [r[n]["max"]["rps"] for r in rounds]
        out["systems"][n] = {
            "rps": median(rps), "rps_min": min(rps), "rps_max": max(rps),
            "cpu_us_per_request": median(r[n]["max"]["cpu_us_per_request"] for r in rounds),
            "p50_ms_at_max": median(r[n]["max"]["p50_ms"] for r in rounds),
            "half_target_rps": median(r[n]["target_rps"] for r in rounds),
            "half_rps": median(r[n]["half"]["rps"] for r in rounds),
            "half_p50_ms": median(r[n]["half"]["p50_ms"] for r in rounds),
            "direct_p50_ms": median(r[n]["direct"]["p50_ms"] for r in rounds),
            "added_p50_ms": median(r[n]["added_p50_ms"] for r in rounds),
            "cpu_us_per_request_half": median(r[n]["half"]["cpu_us_per_request"] for r in rounds),
        }
    if "helios" in names:
        for peer in names:
            if peer != "helios":
                per_round = [r["helios"]["max"]["rps"] / r[peer]["max"]["rps"] for r in rounds]
                cpu = [r[peer]["max"]["cpu_us_per_request"] / r["helios"]["max"]["cpu_us_per_request"]
                       for r in rounds]
                out["ratios"][peer] = {"rps": median(per_round), "per_round": per_round, "cpu": median(cpu)}
    return out


# -- report -------------------------------------------------------------------------------------------

GOALS = {"nginx": 0.3, "proxy.py": 1.5}


def report(result: dict[str, Any]) -> None:
    for w in result["runs"]:
        rows = []
        for n, s in w["systems"].items():
            rows.append([n, f"{s['rps']:.0f}", f"{s['rps_min']:.0f}-{s['rps_max']:.0f}",
                         f"{s['cpu_us_per_request']:.0f} us", f"{s['p50_ms_at_max']:.2f} ms",
                         f"{s['half_rps']:.0f} / {s['half_target_rps']:.0f}", f"{s['half_p50_ms']:.3f} ms",
                         f"{s['direct_p50_ms']:.3f} ms", f"{s['added_p50_ms'] * 1000:+.0f} us"])
        print_table(f"{w['workers']} worker(s) each: wrk -c{result['connections']} GET / (median of "
                    f"{result['rounds']} rounds); half load paced (achieved / target req/s)",
                    ["proxy", "req/s", "range", "CPU/req", "p50 at max", "half load req/s", "p50 half",
                     "p50 direct", "added p50"], rows)
        if w["ratios"]:
            rows = []
            for peer, r in w["ratios"].items():
                goal = GOALS.get(peer) if w["workers"] == 1 else None
                verdict = "" if goal is None else ("met" if r["rps"] >= goal else "NOT met")
                rows.append([f"helios / {peer}", f"{r['rps']:.2f}x", " ".join(f"{x:.2f}" for x in r["per_round"]),
                             f"{r['cpu']:.2f}x", f">= {goal}x" if goal else "-", verdict])
            print_table(f"{w['workers']} worker(s): ratios (req/s: median of per-round ratios; CPU: peer's CPU/req "
                        f"over helios's, > 1 = helios cheaper)",
                        ["ratio", "req/s", "per round", "CPU/req", "goal", ""], rows)
    by_workers = {w["workers"]: w for w in result["runs"]}
    if len(by_workers) > 1:
        lo, hi = min(by_workers), max(by_workers)
        rows = []
        for n in by_workers[lo]["systems"]:
            if n in by_workers[hi]["systems"]:
                a, b = by_workers[lo]["systems"][n], by_workers[hi]["systems"][n]
                rows.append([n, f"{a['rps']:.0f}", f"{b['rps']:.0f}", f"{b['rps'] / a['rps']:.2f}x",
                             f"{a['cpu_us_per_request']:.0f} / {b['cpu_us_per_request']:.0f} us"])
        print_table(f"Scaling {lo} -> {hi} workers (req/s; the box has {os.cpu_count()} cores shared with wrk and "
                    "the backend)", ["proxy", f"{lo} w", f"{hi} w", "scaling", "CPU/req"], rows)
    if "helios" in by_workers.get(1, {}).get("systems", {}):
        added = by_workers[1]["systems"]["helios"]["added_p50_ms"]
        print(f"\nhelios added median latency at half load, 1 worker: {added * 1000:.0f} us "
              f"(goal < 1 ms: {'met' if added < 1 else 'NOT met'})")
    for n, why in result["skipped"].items():
        print(f"skipped {n}: {why}")


# -- scaling mode ------------------------------------------------------------------------------------

DELAY_BACKEND = '''"""bench/proxy.py --scaling: a backend that answers GET after a fixed delay, cheaply."""
import asyncio
import sys

port, delay, body_path = int(sys.argv[1]), float(sys.argv[2]) / 1000, sys.argv[3]
body = open(body_path, "rb").read()
RESPONSE = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/html\\r\\nContent-Length: %d\\r\\n\\r\\n%b" % (len(body), body)


class Slow(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        n = self.buf.count(b"\\r\\n\\r\\n")  # requests without bodies (wrk's GET, a proxy's)
        if n:
            self.buf = self.buf[self.buf.rindex(b"\\r\\n\\r\\n") + 4:]
            loop.call_later(delay, self.answer, n)

    def answer(self, n):
        if not self.transport.is_closing():
            self.transport.write(RESPONSE * n)


try:
    import uvloop
    loop = uvloop.new_event_loop()
except ImportError:
    loop = asyncio.new_event_loop()
server = loop.run_until_complete(loop.create_server(Slow, "127.0.0.1", port, backlog=4096))
loop.run_forever()
'''


def start_delay_backend(procs: Procs, d: Path, body: bytes, delay_ms: float) -> Server:
    script, body_file = d / "delay_backend.py", d / "delay_body.html"
    script.write_text(DELAY_BACKEND)
    body_file.write_bytes(body)
    port = unused_port()
    proc = procs.spawn([sys.executable, str(script), str(port), str(delay_ms), str(body_file)], dict(os.environ),
                       d / "delay_backend.log")
    return Server("backend", port, proc, 1)


def box_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return float(sum(fields) - idle), float(sum(fields))


def run_scaling(args: argparse.Namespace, procs: Procs, d: Path, body: bytes) -> dict[str, Any]:
    backend = start_delay_backend(procs, d, body, args.backend_delay_ms)
    wait_serving(backend, procs, body)
    conns = args.scaling_connections
    systems = [s for s in args.systems if s in ("helios", "nginx")]
    out: dict[str, Any] = {"mode": "scaling", "backend_delay_ms": args.backend_delay_ms, "connections": conns,
                           "runs": []}
    for workers in (1, 2):
        servers = []
        for name in systems:
            if name == "helios":
                servers.append(start_helios(procs, d, workers, backend, max_connections=4 * conns))
            else:
                servers.append(start_nginx_proxy(procs, d, workers, backend))
        for s in servers:
            wait_serving(s, procs, body)
            wrk(s.url, seconds=min(2.0, args.seconds), connections=conns)
        for r in range(args.rounds):
            for s in (servers if r % 2 == 0 else servers[::-1]):
                b0, busy0, total0 = backend.cpu(), *box_busy()
                res = wrk(s.url, seconds=args.seconds, connections=conns, server=s)
                busy1, total1 = box_busy()
                cpus = os.cpu_count() or 1
                res.update({"system": s.name, "workers": workers, "round": r,
                            "proxy_cores": res["cpu_us_per_request"] * res["rps"] / 1e6,
                            "box_busy": (busy1 - busy0) / max(1.0, total1 - total0), "box_cores": cpus,
                            "backend_cpu_us_per_request": (backend.cpu() - b0) / res["requests"] * 1e6})
                out["runs"].append(res)
                print(f"  scaling {s.name} w{workers} round {r + 1}/{args.rounds}: {res['rps']:.0f} req/s, "
                      f"{res['cpu_us_per_request']:.0f} us CPU/req, box {res['box_busy']:.0%} busy", flush=True)
        for s in servers:
            Procs.kill(s.proc)
            s.proc.wait()
    return out


def report_scaling(result: dict[str, Any]) -> None:
    runs = result["runs"]
    rows, by = [], {}
    for (name, workers) in dict.fromkeys((r["system"], r["workers"]) for r in runs):
        mine = [r for r in runs if r["system"] == name and r["workers"] == workers]
        row = {k: median(r[k] for r in mine) for k in ("rps", "cpu_us_per_request", "proxy_cores", "box_busy",
                                                       "p50_ms", "backend_cpu_us_per_request")}
        by[(name, workers)] = row
        rows.append([name, workers, f"{row['rps']:.0f}", f"{row['cpu_us_per_request']:.0f} us",
                     f"{row['proxy_cores']:.2f}", f"{row['box_busy']:.0%}", f"{row['p50_ms']:.2f} ms",
                     f"{row['backend_cpu_us_per_request']:.0f} us"])
    print_table(f"Scaling: wrk -c{result['connections']} through each proxy to a backend answering after "
                f"{result['backend_delay_ms']:g} ms (median of rounds)",
                ["proxy", "workers", "req/s", "CPU/req", "proxy cores", "box busy", "p50", "backend CPU/req"], rows)
    ratio_rows = []
    for name in dict.fromkeys(r["system"] for r in runs):
        a, b = by.get((name, 1)), by.get((name, 2))
        if a and b:
            ratio_rows.append([name, f"{a['rps']:.0f}", f"{b['rps']:.0f}", f"{b['rps'] / a['rps']:.2f}x",
                               f"{a['proxy_cores']:.2f} -> {b['proxy_cores']:.2f}",
                               f"{a['box_busy']:.0%} -> {b['box_busy']:.0%}"])
    print_table(f"Scaling 1 -> 2 workers ({os.cpu_count()} cores, shared with wrk, the backend and anything else "
                "running)", ["proxy", "1 w req/s", "2 w req/s", "scaling", "proxy cores", "box busy"], ratio_rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=10, help="length of each throughput run (default 10)")
    p.add_argument("--latency-seconds", type=int, default=5, help="length of each half-load run (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each running every proxy (default 3)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections at full load (default 64)")
    p.add_argument("--workers", default="1,2", help="worker counts, in order (default 1,2)")
    p.add_argument("--backend-workers", type=int, default=1, help="nginx backend worker processes (default 1)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"proxies to run (default {','.join(SYSTEMS)})")
    p.add_argument("--quick", action="store_true", help="one round of 3 s runs (2 s at half load)")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    p.add_argument("--scaling", action="store_true",
                   help="1 -> 2 workers of helios and nginx through a slow, cheap backend (see the docstring)")
    p.add_argument("--backend-delay-ms", type=float, default=2.0, help="--scaling: the backend's delay (default 2)")
    p.add_argument("--scaling-connections", type=int, default=128, help="--scaling: wrk connections (default 128)")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.latency_seconds, args.rounds = 3, 2, 1
    if not os.access(WRK, os.X_OK):
        sys.exit("wrk not found: apt-get install wrk")
    if not os.access(NGINX, os.X_OK):
        sys.exit("nginx not found (the backend): apt-get install nginx")
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(wanted) - set(SYSTEMS)
    if unknown:
        sys.exit(f"unknown system(s) {', '.join(sorted(unknown))}; choose from {', '.join(SYSTEMS)}")
    skipped = {s: why for s in wanted if (why := missing(s))}
    args.systems = [s for s in wanted if s not in skipped]
    for s, why in skipped.items():
        print(f"skipping {s}: {why}", flush=True)
    if not args.systems:
        sys.exit("nothing to run")
    body = (b"<!doctype html><title>helios bench</title>\n" + b"x" * BODY_BYTES)[:BODY_BYTES - 1] + b"\n"
    result: dict[str, Any] = {**machine_note(), "seconds": args.seconds, "latency_seconds": args.latency_seconds,
                              "rounds": args.rounds, "connections": args.connections, "body_bytes": len(body),
                              "backend_workers": args.backend_workers, "skipped": skipped, "runs": []}
    if args.scaling:
        if not args.quick and "--rounds" not in sys.argv:
            args.rounds = 2
        with scratch_dir("proxy") as d, processes() as procs:
            scaling = {**machine_note(), "seconds": args.seconds, "rounds": args.rounds,
                       **run_scaling(args, procs, d, body)}
        report_scaling(scaling)
        if args.json:
            emit_json(scaling)
        return
    with scratch_dir("proxy") as d, processes() as procs:
        backend = start_backend(procs, d, args.backend_workers, body)
        wait_serving(backend, procs, body)
        for workers in (int(w) for w in args.workers.split(",")):
            result["runs"].append(run_workers(args, procs, d, backend, body, workers))
    report(result)
    if args.json:
        emit_json(result)


if __name__ == "__main__":
    main()
