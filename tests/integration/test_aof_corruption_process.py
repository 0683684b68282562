"""A damaged data directory, as an operator meets it: `helios atlasd` refuses, aof-check names it, --fix repairs.

Real processes (the `helios` console script), real files written by a real
engine, exit codes and output as a shell sees them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from helios_core.atlas.engine import Engine
from helios_core.config import AtlasConfig
from tests.integration.test_atlasd_support import HELIOS, Daemon

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("restore_logging")]


def helios(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HELIOS, *args], capture_output=True, text=True, timeout=60)


def atlasd_refuses(data: Path) -> str:
    """Start atlasd on `data`; it must exit at once with status 1. Its output."""
    proc = subprocess.run([HELIOS, "atlasd", "--data", str(data), "--port", "0"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """appendonly.aof with k0..k4 (seq 1..5), written by a real engine."""
    d = tmp_path / "data"
    eng = Engine.open(d, AtlasConfig(save=()))
    try:
        for i in range(5):
            eng.execute([b"SET", b"k%d" % i, b"value-%d" % i])
        eng.flush_sync()
    finally:
        eng.close()
    return d


def socket_client(d: Daemon) -> redis.Redis:
    """Through the data dir's unix socket: file permissions are the authority, no password needed."""
    return redis.Redis(unix_socket_path=str(d.socket_path), socket_timeout=10)


def last_line_start(blob: bytes) -> int:
    return blob.rindex(b"\n", 0, len(blob) - 1) + 1


def test_bit_flip_in_the_last_record_stops_atlasd_until_repaired(data: Path) -> None:
    aof = data / "appendonly.aof"
    blob = bytearray(aof.read_bytes())
    last = last_line_start(bytes(blob))
    blob[blob.index(b"value-4") + 3] ^= 0x01
    aof.write_bytes(bytes(blob))

    out = atlasd_refuses(data)
    assert f"AOF {aof} is damaged at byte {last}" in out and "not a torn write" in out
    assert f"helios aof-check --fix --force --data {data}" in out
    assert aof.read_bytes() == bytes(blob), "a refused start must not touch the file"

    check = helios("aof-check", "--data", str(data))
    assert check.returncode == 1
    assert f"{aof} at byte {last}" in check.stdout and "damaged last record" in check.stdout

    refused = helios("aof-check", "--fix", "--yes", "--data", str(data))
    assert refused.returncode == 1 and "--force" in refused.stderr and aof.read_bytes() == bytes(blob)

    fixed = helios("aof-check", "--fix", "--yes", "--force", "--data", str(data))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    [backup] = data.glob("appendonly.aof.bak-*")
    assert f"backup     {backup}" in fixed.stdout and backup.read_bytes() == bytes(blob)

    d = Daemon(data).start()
    try:
        with socket_client(d) as r:
            assert sorted(r.keys()) == [b"k0", b"k1", b"k2", b"k3"]
    finally:
        assert d.stop() == 0


def test_torn_tail_is_cut_and_atlasd_starts(data: Path) -> None:
    aof = data / "appendonly.aof"
    good = aof.read_bytes()
    with open(aof, "ab") as f:
        f.write(b'{"seq":6,"cmd":"SET","key":"k5","val')
    d = Daemon(data).start()
    try:
        with socket_client(d) as r:
            assert r.dbsize() == 5 and r.get("k4") == b"value-4"
    finally:
        assert d.stop() == 0
    assert "cutting torn last AOF record" in d.log()
    assert aof.read_bytes().startswith(good)


def test_corrupt_snapshot_stops_atlasd_and_aof_check_reports_it(data: Path) -> None:
    eng = Engine.open(data, AtlasConfig(save=()))
    try:
        eng.snapshot_sync()
    finally:
        eng.close()
    snap = data / "dump.rdb"
    blob = bytearray(snap.read_bytes())
    blob[len(blob) // 2] ^= 0x04
    snap.write_bytes(bytes(blob))
    assert "dump.rdb is damaged" in atlasd_refuses(data)
    check = helios("aof-check", "--data", str(data))
    assert check.returncode == 1
    assert f"snapshot   DAMAGED: {snap}" in check.stdout and "status     DAMAGED: snapshot" in check.stdout
