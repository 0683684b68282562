"""atlasd over the network: redis-benchmark SET/GET against atlasd, redis-server and fakeredis.

Every system is a real server on an unused loopback port, driven by the same
`redis-benchmark -c 50 -d 100 -r KEYS -t set,get` (SETs first, so the GETs
find their keys), both without pipelining and with `-P 16`:

  atlasd        `helios atlasd --appendfsync P`, automatic snapshots off
  redis-server  `appendonly yes`, `appendfsync P`, RDB saves and AOF rewrites off
  fakeredis     `fakeredis.TcpFakeServer` in its own interpreter (no persistence)
  python floor  the least a Python server on uvloop can do per request: an
                asyncio Protocol that splits RESP arrays and keeps SET values in
                a dict (no AUTH, no persistence, no command table); it joins the
                everysec rounds without pipelining, as the ceiling any
                interpreted request path here can reach (--no-floor skips it)

Under everysec atlasd and redis-server alternate run by run (which one goes
first alternates too), for --rounds rounds; under `always` the same without
pipelining.  fakeredis joins the everysec rounds with fewer requests
(--fake-requests: it is much slower) and is compared with the atlasd run of
the same round.  fakeredis's TCP server sometimes stops answering one of the
50 clients (redis-benchmark then waits forever): such a run is cut off after
--fake-timeout seconds, counted and repeated (three tries per round).

Each cell is the median requests/s over the rounds.  The ratio against
redis-server is the median over rounds of atlasd / redis-server within the
round (the two runs of a round are seconds apart, while the shared machine's
load drifts between rounds); the ratio of the medians is shown next to it.
The same goes for fakeredis.  Goals (issue 3):

    >= 0.9x redis-server without pipelining, >= 0.35x with -P 16 (everysec)
    >= 0.5x redis-server under appendfsync always (no pipelining)
    >= 3x fakeredis

The machine is small (2 cores, shared): redis-benchmark itself takes one
core, the server the other.  Read the ratios, not the absolute numbers.

    .venv/bin/python bench/atlasd.py [--rounds 5] [--requests 100000] [--json]
"""

from __future__ import annotations

import csv
import io
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PYTHON,
    REDIS_BENCHMARK,
    ROOT,
    PythonFloor,
    RedisServer,
    emit_json,
    machine_note,
    make_parser,
    parse_count,
    print_table,
    scratch_dir,
    unused_port,
    wait_ping,
)

HELIOS = str(Path(PYTHON).with_name("helios"))
CLIENTS = 50
PIPELINES = (1, 16)
GOALS = {("everysec", 1): 0.9, ("everysec", 16): 0.35, ("always", 1): 0.5}
FAKE_GOAL = 3.0

_FAKE_SERVER = """
import sys
from fakeredis import TcpFakeServer
server = TcpFakeServer(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
server.serve_forever()
"""


# -- servers --------------------------------------------------------------------------

class Atlasd:
    """`helios atlasd` as an operator starts it, with automatic snapshots off (as redis's saves are)."""

    def __init__(self, data_dir: Path, policy: str) -> None:
        self.dir = data_dir
        self.policy = policy
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Atlasd:
        self.port = unused_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
        env.update(HELIOS_ATLAS__SAVE="", HELIOS_ATLAS__SNAPSHOT_ON_AOF_BYTES="0")
        _PASSWORDS[self.port] = env["HELIOS_ATLASD__REQUIREPASS"] = secrets.token_hex(24)
        self.log = open(self.dir.parent / f"atlasd-{self.policy}.log", "ab")
        self.proc = subprocess.Popen([HELIOS, "--log-level", "warn", "atlasd", "--data", str(self.dir),
                                      "--port", str(self.port), "--appendfsync", self.policy],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        wait_ping(self.port, self.proc, "atlasd")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class FakeRedis:
    """fakeredis's threaded TCP server in a fresh interpreter."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> FakeRedis:
        self.port = unused_port()
        self.proc = subprocess.Popen([PYTHON, "-c", _FAKE_SERVER, str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_ping(self.port, self.proc, "fakeredis")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def fakeredis_available() -> str | None:
    """None when fakeredis.TcpFakeServer can be imported, else why not."""
    proc = subprocess.run([PYTHON, "-c", "from fakeredis import TcpFakeServer"], capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "import failed"


# -- redis-benchmark ---------------------------------------------------------------------

_PASSWORDS: dict[int, str] = {}  # port -> the password an atlasd started here requires


class Hung(Exception):
    """redis-benchmark waited past its timeout for a reply (seen with fakeredis, which loses some)."""


def redis_benchmark(port: int, requests: int, pipeline: int, keys: int,
                    timeout: float = 900.0) -> dict[str, dict[str, float]]:
    """{"SET": {"rps": .., "p50": .. ms}, "GET": {...}} from one redis-benchmark run."""
    args = [REDIS_BENCHMARK, "-h", "127.0.0.1", "-p", str(port), "-c", str(CLIENTS), "-n", str(requests),
            "-d", "100", "-r", str(keys), "-t", "set,get", "--csv"]
    if port in _PASSWORDS:  # atlasd requires a password on TCP (one AUTH per connection)
        args += ["-a", _PASSWORDS[port]]
    if pipeline > 1:
        args += ["-P", str(pipeline)]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Hung(f"no result after {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed ({proc.returncode}): {proc.stderr[-2000:]}")
    out: dict[str, dict[str, float]] = {}
    for row in csv.DictReader(io.StringIO(proc.stdout)):
        out[row["test"]] = {"rps": float(row["rps"]), "p50": float(row["p50_latency_ms"])}
    if set(out) != {"SET", "GET"}:
        raise RuntimeError(f"redis-benchmark printed no SET/GET rows:\n{proc.stdout}\n{proc.stderr[-2000:]}")
    return out


# (system, policy, pipeline, test) -> one result per round (None: that round's run hung)
Samples = dict[tuple[str, str, int, str], list[dict[str, float] | None]]


def _record(samples: Samples, system: str, policy: str, pipeline: int,
            result: dict[str, dict[str, float]] | None) -> None:
    for test in ("SET", "GET"):
        samples.setdefault((system, policy, pipeline, test), []).append(result[test] if result else None)


def _alternate(rounds: int, runners: dict[str, Callable[[], None]], label: str) -> None:
    names = list(runners)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            print(f"  round {r + 1}/{rounds} {label} {name}", file=sys.stderr, flush=True)
            runners[name]()


def run(args: Any) -> dict[str, Any]:
    samples: Samples = {}
    keys = args.keys

    hung: list[str] = []

    def bench(system: str, policy: str, port: int, pipeline: int, requests: int) -> Callable[[], None]:
        return lambda: _record(samples, system, policy, pipeline, redis_benchmark(port, requests, pipeline, keys))

    def bench_fake(port: int, pipeline: int, requests: int) -> Callable[[], None]:
        # fakeredis's TCP server now and then never answers a request under 50 clients, and
        # redis-benchmark waits forever: such a run is cut off, noted, and tried again.
        def run_once() -> None:
            for _attempt in range(3):
                try:
                    result = redis_benchmark(port, requests, pipeline, keys, timeout=args.fake_timeout)
                except Hung as e:
                    hung.append(f"-P {pipeline}: {e}")
                    print(f"    fakeredis hung ({e}); trying again", file=sys.stderr, flush=True)
                    continue
                _record(samples, "fakeredis", "none", pipeline, result)
                return
            _record(samples, "fakeredis", "none", pipeline, None)

        return run_once

    fake_missing = None if args.no_fakeredis else fakeredis_available()
    for policy in ("everysec", "always"):
        pipelines = PIPELINES if policy == "everysec" else (1,)
        with scratch_dir(f"atlasd-{policy}") as tmp:
            atlas = Atlasd(tmp / "atlas", policy).start()
            # fakeredis joins the everysec rounds, so each of its runs has an atlasd run beside it.
            fake = FakeRedis().start() if policy == "everysec" and not args.no_fakeredis and not fake_missing else None
            floor = PythonFloor().start() if policy == "everysec" and not args.no_floor else None
            try:
                with RedisServer(tmp / "redis", appendonly="yes", appendfsync=policy) as redis_srv:
                    redis_srv.start()
                    for p in pipelines:
                        n = args.requests * (args.pipeline_factor if p > 1 else 1)
                        runners = {"atlasd": bench("atlasd", policy, atlas.port, p, n),
                                   "redis-server": bench("redis-server", policy, redis_srv.port, p, n)}
                        if floor is not None and p == 1:
                            runners["python floor"] = bench("python floor", policy, floor.port, p, n)
                        if fake is not None:
                            n_fake = args.fake_requests * (args.pipeline_factor if p > 1 else 1)
                            runners["fakeredis"] = bench_fake(fake.port, p, n_fake)
                        _alternate(args.rounds, runners, f"{policy} -P {p}")
            finally:
                atlas.stop()
                for other in (fake, floor):
                    if other is not None:
                        other.stop()
    return {"samples": {"|".join(map(str, k)): v for k, v in samples.items()}, "fakeredis_missing": fake_missing,
            "fakeredis_hung": hung, "_samples": samples}


def _runs(runs: list[dict[str, float] | None]) -> str:
    return " ".join(f"{x['rps'] / 1000:.0f}k" if x else "hung" for x in runs)


def _median(runs: list[dict[str, float] | None], field: str = "rps") -> float:
    return statistics.median(r[field] for r in runs if r)


def _paired_ratio(a: list[dict[str, float] | None], b: list[dict[str, float] | None]) -> float:
    """Median over rounds of a / b within the round (the two runs are seconds apart; the shared
    machine's load drifts between rounds far more than that)."""
    return statistics.median(x["rps"] / y["rps"] for x, y in zip(a, b, strict=True) if x and y)


def report(args: Any, result: dict[str, Any]) -> dict[str, Any]:
    samples: Samples = result.pop("_samples")
    rows, summary = [], []
    for policy, pipeline in GOALS:
        for test in ("SET", "GET"):
            a = samples.get(("atlasd", policy, pipeline, test))
            r = samples.get(("redis-server", policy, pipeline, test))
            if not a or not r:
                continue
            ratio = _paired_ratio(a, r)
            goal = GOALS[(policy, pipeline)]
            rows.append([f"{policy} -P {pipeline} {test}", f"{_median(a):,.0f}", f"{_median(r):,.0f}",
                         f"{ratio:.2f}x", f"{_median(a) / _median(r):.2f}x", f">= {goal}x",
                         "met" if ratio >= goal else "NOT met",
                         f"{_median(a, 'p50'):.3f} / {_median(r, 'p50'):.3f}",
                         _runs(a), _runs(r)])
            summary.append({"policy": policy, "pipeline": pipeline, "test": test, "atlasd_rps": _median(a),
                            "redis_rps": _median(r), "ratio": ratio, "ratio_of_medians": _median(a) / _median(r),
                            "goal": goal, "met": ratio >= goal})
    print_table(f"atlasd / redis-server, redis-benchmark -c {CLIENTS} -d 100 -r {args.keys}, median of "
                f"{args.rounds} alternating rounds (requests/s)",
                ["workload", "atlasd", "redis-server", "ratio", "of medians", "goal", "", "p50 ms (atlasd / redis)",
                 "atlasd runs", "redis runs"], rows)
    floor_rows = []
    for test in ("SET", "GET"):
        a = samples.get(("atlasd", "everysec", 1, test))
        r = samples.get(("redis-server", "everysec", 1, test))
        f = samples.get(("python floor", "everysec", 1, test))
        if not a or not r or not f:
            continue
        floor_rows.append([test, f"{_median(f):,.0f}", f"{_paired_ratio(f, r):.2f}x", f"{_paired_ratio(a, f):.2f}x",
                           _runs(f)])
        result.setdefault("python_floor", []).append({"test": test, "floor_rps": _median(f),
                                                      "floor_vs_redis": _paired_ratio(f, r),
                                                      "atlasd_vs_floor": _paired_ratio(a, f)})
    if floor_rows:
        print_table("the python floor (a bare RESP Protocol on uvloop: no AUTH, persistence or command table) "
                    "in the same everysec rounds, without pipelining",
                    ["workload", "floor", "floor / redis-server", "atlasd / floor", "floor runs"], floor_rows)
    fake_rows = []
    for pipeline in PIPELINES:
        for test in ("SET", "GET"):
            a = samples.get(("atlasd", "everysec", pipeline, test))
            f = samples.get(("fakeredis", "none", pipeline, test))
            if not a or not f:
                continue
            if not any(f):
                continue
            ratio = _paired_ratio(a, f)
            fake_rows.append([f"-P {pipeline} {test}", f"{_median(a):,.0f}", f"{_median(f):,.0f}", f"{ratio:.1f}x",
                              f"{_median(a) / _median(f):.1f}x", f">= {FAKE_GOAL}x",
                              "met" if ratio >= FAKE_GOAL else "NOT met", _runs(f)])
            summary.append({"policy": "everysec-vs-fakeredis", "pipeline": pipeline, "test": test,
                            "atlasd_rps": _median(a), "fakeredis_rps": _median(f), "ratio": ratio,
                            "ratio_of_medians": _median(a) / _median(f), "goal": FAKE_GOAL, "met": ratio >= FAKE_GOAL})
    if fake_rows:
        print_table(f"atlasd (everysec) / fakeredis TcpFakeServer (no persistence) in the same rounds, "
                    f"fakeredis runs of {args.fake_requests:,} requests (x{args.pipeline_factor} with -P 16)",
                    ["workload", "atlasd", "fakeredis", "ratio", "of medians", "goal", "", "fakeredis runs"],
                    fake_rows)
        if result["fakeredis_hung"]:
            print(f"  fakeredis runs cut off after --fake-timeout and repeated: {len(result['fakeredis_hung'])}")
    elif result.get("fakeredis_missing"):
        print(f"\nfakeredis: not measured ({result['fakeredis_missing']})")
    result["summary"] = summary
    return result


def main() -> None:
    p = make_parser(__doc__.split("\n", 1)[0])
    p.set_defaults(keys=100_000)
    p.add_argument("--rounds", type=parse_count, default=5, help="alternating rounds per workload (default 5)")
    p.add_argument("--requests", type=parse_count, default=100_000,
                   help="requests per redis-benchmark test without pipelining (default 100_000)")
    p.add_argument("--pipeline-factor", type=parse_count, default=4,
                   help="with -P 16, this many times --requests (default 4)")
    p.add_argument("--fake-requests", type=parse_count, default=5_000,
                   help="requests per test against fakeredis without pipelining (default 5_000)")
    p.add_argument("--fake-timeout", type=float, default=60.0,
                   help="seconds before a fakeredis run counts as hung and is repeated (default 60)")
    p.add_argument("--no-fakeredis", action="store_true", help="skip fakeredis")
    p.add_argument("--no-floor", action="store_true", help="skip the python floor (a bare RESP server on uvloop)")
    args = p.parse_args()
    t0 = time.monotonic()
    result = report(args, run(args))
    result["machine"] = machine_note()
    result["seconds"] = round(time.monotonic() - t0, 1)
    print(f"\n{result['machine']}, {result['seconds']} s")
    if args.json:
        emit_json(result)


if __name__ == "__main__":
    main()
