"""`helios aof-check` and `helios snapshot` run as an operator runs them: a real process, real exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helios_core.atlas.engine import Engine
from helios_core.config import AtlasConfig

HELIOS = str(Path(sys.executable).parent / "helios")


def helios(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HELIOS, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=60, check=False)


def make_data(d: Path) -> None:
    eng = Engine.open(d, AtlasConfig())
    try:
        for i in range(10):
            eng.execute([b"SET", b"k%d" % i, b"v"])
        eng.flush_sync()
    finally:
        eng.close()


def test_aof_check_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_data(data)
    aof = data / "appendonly.aof"
    good = aof.read_bytes()
    with open(aof, "ab") as f:
        f.write(b'{"seq":11,"cmd":"SET","key":"k1')

    assert helios("aof-check", "--data", str(data)).returncode == 1
    assert helios("aof-check").returncode == 2
    refused = helios("aof-check", "--fix", "--data", str(data))  # stdin is not a terminal
    assert refused.returncode == 1 and "--yes" in refused.stderr

    fixed = helios("aof-check", "--fix", "--yes", "--data", str(data))
    assert fixed.returncode == 0, fixed.stderr
    assert aof.read_bytes() == good
    checked = helios("aof-check", "--json", str(aof))
    assert checked.returncode == 0
    assert json.loads(checked.stdout)["records"] == 10


def test_snapshot_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_data(data)
    copy = tmp_path / "copy.rdb"

    done = helios("--log-level", "warn", "snapshot", "--data", str(data), "--output", str(copy), "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # quiet enough for cron
    assert json.loads(done.stdout)["keys"] == 10
    assert helios("snapshot", "--verify", str(copy)).returncode == 0

    copy.write_bytes(copy.read_bytes()[:-1])
    bad = helios("snapshot", "--verify", str(copy))
    assert bad.returncode == 1 and str(copy) in bad.stderr
    assert helios("snapshot", "--verify", str(copy), "--data", str(data)).returncode == 2
