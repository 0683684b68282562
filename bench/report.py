"""`make bench`: run the bench/ scripts at a short setting and write what they found, where people look.

Each script runs HELIOS and its peers in the same run and prints its own
tables; this runs them in turn with `--json`, takes the JSON object each
prints last, and writes into bench/results/:

  latest.md     one markdown table per benchmark: each comparison, HELIOS's
                number, the peer's, the ratio HELIOS / peer, its goal
  latest.json   every script's full JSON (the numbers behind the tables)
  *.png         one chart per benchmark (and summary.png): HELIOS's standing
                against each peer, > 1 where HELIOS does better
  logs/*.txt    each script's own output

The short setting ("quick", the default) takes a few minutes on a 2-core box:
small key counts, one round, short wrk runs. Its ratios are noisier than a
full run's (bench/README.md has those); `--full` runs the scripts' defaults
(~30 min). A peer that is not installed is left out with a note
(Dramatiq and RQ come with `pip install -e '.[bench]'`, as do proxy.py and
matplotlib).

    .venv/bin/python bench/report.py                    # all, quick
    .venv/bin/python bench/report.py --only proxy,jobs  # some
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

__all__ = ["Comparison", "Suite", "SUITES", "parse_json_tail", "main"]


@dataclass
class Comparison:
    """One row: HELIOS's number against one peer's on one measure."""

    measure: str
    peer: str
    helios: float
    peer_value: float
    unit: str
    higher_is_better: bool
    goal: str = "-"  # as the script states it, e.g. "<= 3x", ">= 0.3x"
    met: bool | None = None

    @property
    def ratio(self) -> float:
        return self.helios / self.peer_value if self.peer_value else math.inf

    @property
    def standing(self) -> float:
        """> 1 where HELIOS does better, whichever way the measure runs (the charts' axis)."""
        r = self.ratio
        return r if self.higher_is_better else (1 / r if r else math.inf)


Extract = Callable[[dict[str, Any]], list[Comparison]]


@dataclass
class Suite:
    name: str
    title: str
    script: str
    quick: list[str]
    full: list[str]
    extract: Extract
    peers: str  # for the notes
    alone: Callable[[dict[str, Any]], list[str]] | None = None  # HELIOS's own numbers when no peer ran


# -- what each script's JSON holds --------------------------------------------------------------

def _recovery(res: dict[str, Any]) -> list[Comparison]:
    goal = res.get("goal_ratio", 3)
    out = []
    for name, s in res["scenarios"].items():
        reference = name == "snapshot"
        out.append(Comparison(f"start-up, {name} ({s['keys']:,} keys)", "redis-server", s["helios_seconds"],
                              s["redis_seconds"], "s", False, "-" if reference else f"<= {goal:g}x",
                              None if reference else s["ratio"] <= goal))
    return out


def _memory(res: dict[str, Any]) -> list[Comparison]:
    goal = res.get("goal_ratio", 2)
    return [Comparison(f"memory per key, {name} ({res['keys']:,} keys)", "redis-server (used_memory)",
                       s["helios_rss_per_key"], s["redis_used_per_key"], "B", False, f"<= {goal:g}x",
                       s["ratio"] <= goal) for name, s in res["scenarios"].items()]


def _atlasd(res: dict[str, Any]) -> list[Comparison]:
    out = []
    for s in res.get("summary", []):
        fake = s["policy"] == "everysec-vs-fakeredis"
        peer, value = ("fakeredis", s["fakeredis_rps"]) if fake else ("redis-server", s["redis_rps"])
        policy = "everysec" if fake else s["policy"]
        c = Comparison(f"{s['test']} -P {s['pipeline']}, appendfsync {policy}", peer, s["atlasd_rps"], value,
                       "req/s", True, f">= {s['goal']:g}x", bool(s["met"]))
        out.append(c)
    return out


def _jobs(res: dict[str, Any]) -> list[Comparison]:
    per_system: dict[str, list[float]] = {}
    for r in res["runs"]:
        per_system.setdefault(r["system"], []).append(r["jobs_per_s"])
    out = []
    for r in res.get("ratios", []):
        ours, peer = (x.strip() for x in r["pair"].split(" / "))
        c = Comparison(f"{res['n']:,} no-op jobs, {res['workers']} workers ({ours})", peer,
                       statistics.median(per_system[ours]), statistics.median(per_system[peer]), "jobs/s", True,
                       f">= {r['goal']:g}x", bool(r["met"]))
        out.append(c)
    return out


def _jobs_alone(res: dict[str, Any]) -> list[str]:
    per_system: dict[str, list[float]] = {}
    for r in res["runs"]:
        per_system.setdefault(r["system"], []).append(r["jobs_per_s"])
    return [f"{name}: {statistics.median(v):,.0f} jobs/s ({res['n']:,} no-op jobs, {res['workers']} workers)"
            for name, v in per_system.items()]


_PROXY_GOALS = {"nginx": 0.3, "proxy.py": 1.5}


def _proxy(res: dict[str, Any]) -> list[Comparison]:
    out = []
    for w in res["runs"]:
        systems = w["systems"]
        if "helios" not in systems:
            continue
        h = systems["helios"]
        for peer, s in systems.items():
            if peer == "helios":
                continue
            goal = _PROXY_GOALS.get(peer) if w["workers"] == 1 else None
            out.append(Comparison(f"req/s, {w['workers']} worker(s), wrk -c{res['connections']}", peer, h["rps"],
                                  s["rps"], "req/s", True, f">= {goal:g}x" if goal else "-",
                                  None if goal is None else h["rps"] / s["rps"] >= goal))
            out.append(Comparison(f"CPU per request, {w['workers']} worker(s)", peer, h["cpu_us_per_request"],
                                  s["cpu_us_per_request"], "µs", False))
    return out


SUITES = [
    Suite("recovery", "Recovery: start-up time on the same data", "recovery.py",
          ["--keys", "50000", "--repeat", "1"], [], _recovery, "redis-server"),
    Suite("memory", "Memory per key", "memory.py", ["--keys", "50000"], [], _memory, "redis-server"),
    Suite("atlasd", "atlasd over the network (redis-benchmark -c 50 -d 100)", "atlasd.py",
          ["--keys", "10000", "--requests", "20000", "--rounds", "1", "--fake-requests", "2000",
           "--fake-timeout", "20"], [], _atlasd, "redis-server, fakeredis"),
    Suite("jobs", "Job queue: enqueue to done, end to end", "jobs.py", ["--quick", "--no-kill"], [], _jobs,
          "Dramatiq, RQ", _jobs_alone),
    Suite("proxy", "Reverse proxy: wrk through each proxy to one nginx", "proxy.py", ["--quick", "--workers", "1"],
          [], _proxy, "nginx, HAProxy, proxy.py"),
]


# -- running ---------------------------------------------------------------------------------------

def parse_json_tail(out: str) -> dict[str, Any]:
    """The JSON object a script prints last (`emit_json`: indented, starting with a line "{")."""
    at = out.rfind("\n{\n")
    start = 0 if out.startswith("{\n") and at < 0 else at + 1
    if at < 0 and not out.startswith("{\n"):
        raise ValueError("no JSON object in the output")
    return dict(json.loads(out[start:]))


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _jobs_args(args: list[str], notes: list[str]) -> list[str]:
    systems = ["helios"] + [m for m in ("dramatiq", "rq") if _available(m)]
    missing = [m for m in ("dramatiq", "rq") if m not in systems]
    if missing:
        notes.append(f"jobs: {', '.join(missing)} not installed (pip install -e '.[bench]'): left out")
    return [*args, "--systems", ",".join(systems)]


def run_suite(suite: Suite, full: bool, logs: Path, notes: list[str]) -> dict[str, Any] | None:
    args = list(suite.full if full else suite.quick)
    if suite.name == "jobs":
        args = _jobs_args(args, notes)
    cmd = [sys.executable, str(ROOT / "bench" / suite.script), *args, "--json"]
    print(f"=== {' '.join(['bench/' + suite.script, *args, '--json'])}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.monotonic() - t0
    (logs / f"{suite.name}.txt").write_text(f"$ {' '.join(cmd[1:])}\n{proc.stdout}\n{proc.stderr}")
    print(f"    {seconds:.0f} s, exit {proc.returncode}", flush=True)
    try:
        result = parse_json_tail(proc.stdout)
    except ValueError:
        notes.append(f"{suite.name}: failed (exit {proc.returncode}); see bench/results/logs/{suite.name}.txt")
        return None
    if proc.returncode != 0:
        notes.append(f"{suite.name}: exit {proc.returncode} (results kept; see its log)")
    result["_seconds"] = round(seconds, 1)
    result["_args"] = args
    return result


# -- writing ---------------------------------------------------------------------------------------

def _num(x: float, unit: str) -> str:
    if unit == "s":
        return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"
    if x >= 100:
        return f"{x:,.0f} {unit}"
    return f"{x:.2f} {unit}" if x < 10 else f"{x:.1f} {unit}"


def write_markdown(path: Path, rows: dict[str, list[Comparison]], results: dict[str, Any], notes: list[str],
                   started: str, full: bool) -> None:
    setting = "the scripts' own defaults (--full)" if full else "the short setting"
    lines = [
        "# HELIOS benchmarks: latest `make bench`",
        "",
        f"Run {started} on {platform.node() or 'this machine'}: {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {setting} "
        "of `bench/report.py`. Each benchmark runs HELIOS and the peer in the same run, on the same data; "
        "the machine is shared, so read the **ratios**, not the absolute numbers. How each is measured: "
        "[bench/README.md](../README.md).",
        "",
        "**ratio** = HELIOS / peer, in the measure's own unit. **standing** is > 1 where HELIOS does better "
        "(the ratio where higher is better, its inverse where lower is better); the charts plot it.",
        "",
    ]
    by_name = {s.name: s for s in SUITES}
    for name, comps in rows.items():
        suite = by_name[name]
        res = results.get(name) or {}
        lines += [f"## {suite.title}", "",
                  f"`bench/{suite.script} {' '.join(res.get('_args', []))}` ({res.get('_seconds', '?')} s)"
                  + (f"; chart: [{name}.png]({name}.png)" if comps else ""), ""]
        if not comps:
            alone = suite.alone(res) if suite.alone is not None and res else []
            lines += ["No peer ran (see the notes below)" + (": HELIOS alone, for reference." if alone else "."), ""]
            lines += [f"- {x}" for x in alone] + ([""] if alone else [])
            continue
        lines += ["| measure | peer | HELIOS | peer | ratio | better | standing | goal | |",
                  "| --- | --- | ---: | ---: | ---: | --- | ---: | --- | --- |"]
        for c in comps:
            verdict = "" if c.met is None else ("met" if c.met else "**NOT met**")
            lines.append(f"| {c.measure} | {c.peer} | {_num(c.helios, c.unit)} | {_num(c.peer_value, c.unit)} | "
                         f"{c.ratio:.2f}x | {'higher' if c.higher_is_better else 'lower'} | {c.standing:.2f} | "
                         f"{c.goal} | {verdict} |")
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    path.write_text("\n".join(lines))


def _goal_standing(c: Comparison) -> float | None:
    """The goal ("<= 3x", ">= 0.3x", a ratio) on the charts' axis."""
    for op in ("<=", ">="):
        if c.goal.startswith(op):
            ratio = float(c.goal[len(op):].strip().rstrip("x"))
            return ratio if c.higher_is_better else 1 / ratio
    return None


def write_charts(rows: dict[str, list[Comparison]]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return ["charts: matplotlib is not installed (pip install -e '.[bench]'): no PNG written"]
    titles = {s.name: s.title for s in SUITES}

    def chart(comps: list[Comparison], title: str, path: Path, suite_label: bool = False) -> None:
        labels = [f"{c.measure}\nvs {c.peer}" for c in comps]
        values = [min(max(c.standing, 1e-3), 1e3) for c in comps]
        fig, ax = plt.subplots(figsize=(12 if suite_label else 10, 1.3 + 0.55 * len(comps)))
        # Bars grow from 1 (even), right where HELIOS does better, left where it does worse.
        ax.barh(range(len(comps)), [v - 1 for v in values], left=1,
                color=["#2e7d32" if v >= 1 else "#c62828" for v in values])
        ax.set_yticks(range(len(comps)), labels, fontsize=7 if suite_label else 8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        span = max(max(abs(math.log10(v)) for v in values), math.log10(2)) * 1.35
        ax.set_xlim(10 ** -span, 10 ** span)
        ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if abs(math.log10(t)) <= span]
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.axvline(1.0, color="black", linewidth=0.8)
        for i, (c, v) in enumerate(zip(comps, values, strict=True)):
            goal = _goal_standing(c)
            if goal is not None:
                ax.plot([goal, goal], [i - 0.4, i + 0.4], color="black", linewidth=1.5)
            # The ratio beside the axis line, on the side the bar leaves empty.
            ax.text(1, i, f" HELIOS/peer {c.ratio:.2f}x ", va="center", ha="right" if v >= 1 else "left", fontsize=7)
        ax.set_xlabel("HELIOS against the peer (log scale): > 1 HELIOS better, < 1 worse; black tick: the goal")
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    everything: list[Comparison] = []
    for name, comps in rows.items():
        if comps:
            chart(comps, titles[name], RESULTS / f"{name}.png")
            everything += [Comparison(f"{name}: {c.measure}", c.peer, c.helios, c.peer_value, c.unit,
                                      c.higher_is_better, c.goal, c.met) for c in comps]
    if everything:
        chart(everything, "HELIOS against its peers, latest make bench", RESULTS / "summary.png", suite_label=True)
    return []


def render_again() -> None:
    saved = json.loads((RESULTS / "latest.json").read_text())
    fields = ("measure", "peer", "helios", "peer_value", "unit", "higher_is_better", "goal", "met")
    got = saved["comparisons"]
    rows = {s.name: [Comparison(**{f: c[f] for f in fields}) for c in got[s.name]] for s in SUITES if s.name in got}
    notes = saved.get("notes", [])
    write_charts(rows)
    write_markdown(RESULTS / "latest.md", rows, saved["results"], notes, saved["started"], saved.get("full", False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help=f"comma-separated benchmarks (default all: {','.join(s.name for s in SUITES)})")
    p.add_argument("--full", action="store_true", help="the scripts' own defaults instead of the short setting")
    p.add_argument("--render", action="store_true",
                   help="run nothing: write latest.md and the charts again from latest.json")
    args = p.parse_args()
    if args.render:
        render_again()
        return
    wanted = [s for s in SUITES if not args.only or s.name in args.only.split(",")]
    if not wanted:
        sys.exit(f"nothing to run: choose from {', '.join(s.name for s in SUITES)}")
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    notes: list[str] = []
    results: dict[str, Any] = {}
    rows: dict[str, list[Comparison]] = {}
    for suite in wanted:
        res = run_suite(suite, args.full, logs, notes)
        results[suite.name] = res
        try:
            rows[suite.name] = suite.extract(res) if res is not None else []
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            notes.append(f"{suite.name}: its JSON did not have the expected shape ({e!r})")
            rows[suite.name] = []
    notes += write_charts(rows)
    write_markdown(RESULTS / "latest.md", rows, results, notes, started, args.full)
    (RESULTS / "latest.json").write_text(json.dumps(
        {"started": started, "full": args.full, "notes": notes, "results": results,
         "comparisons": {k: [{**asdict(c), "ratio": c.ratio, "standing": c.standing} for c in v]
                         for k, v in rows.items()}}, indent=1, sort_keys=True, default=str))
    print(f"wrote {RESULTS / 'latest.md'}")


if __name__ == "__main__":
    main()
