"""kill -9 at random moments under appendfsync always: every acknowledged write survives.

A real writer process (tests/chaos/writer.py) reports each write after the
engine says it is durable; we SIGKILL it at random times, many of them while
a background snapshot or an AOF rotation is under way, restart, and check.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from helios_core.atlas.engine import Engine
from helios_core.config import AtlasConfig

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 24


def run_and_kill(data_dir: Path, run: str, rng: random.Random) -> tuple[list[str], bool]:
    """Start the writer, kill -9 it after a random time; returns its lines and whether a snapshot was running."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.chaos.writer", str(data_dir), run],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("READY"):
                ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    assert ready.wait(30), "writer did not start"
    time.sleep(rng.uniform(0.05, 0.8))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(10)
    snaps = [ln for ln in lines if ln.startswith("SNAP ")]
    return lines, bool(snaps) and snaps[-1] == "SNAP START"


def check(data_dir: Path, lines: list[str]) -> int:
    engine = Engine.open(data_dir, AtlasConfig(appendfsync="always", save=()))
    try:
        acked = 0
        tx_per_writer: dict[str, int] = {}
        for ln in lines:
            parts = ln.split()
            if parts[0] in ("ACK", "ACKTX"):
                key, value = parts[1].encode(), parts[2].encode()
                assert engine.execute([b"GET", key]) == value, f"acknowledged {key!r} lost"
                acked += 1
            if parts[0] == "ACKTX":
                run = parts[1].split(":")[0]
                assert engine.execute([b"ZSCORE", f"{run}:z".encode(), key]) is not None
                tx_per_writer[f"{run}:count:{parts[3]}"] = tx_per_writer.get(f"{run}:count:{parts[3]}", 0) + 1
        for counter, n in tx_per_writer.items():
            got = int(engine.execute([b"GET", counter.encode()]))
            assert got >= n, f"{counter}: {got} < {n} acknowledged increments"
        return acked
    finally:
        engine.close()


def test_kill9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("HELIOS_CHAOS_SEED", "1234")))
    data_dir = tmp_path / "data"
    total = during_snapshot = 0
    everything: list[str] = []
    for round_no in range(ROUNDS):
        lines, in_snapshot = run_and_kill(data_dir, f"r{round_no}", rng)
        during_snapshot += in_snapshot
        total += check(data_dir, lines)
        everything += lines
    assert total > ROUNDS * 10, "the writer acknowledged too little for the test to mean anything"
    assert during_snapshot >= 1, "no kill landed during a snapshot; the test did not cover rotation"
    # Later rounds' snapshots and AOF pruning kept every earlier round's writes too.
    assert check(data_dir, everything) == total
