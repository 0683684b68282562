"""Disk full: the data directory on a small tmpfs that a ballast file fills.

For atlasd and for a gateway with its embedded store (appendfsync always):

- once the disk is full, writes are refused clearly (atlasd: ``MISCONF``;
  the gateway: 503 ``aof_write_failed`` / ``store_read_only``), never acknowledged and then lost;
- reads go on and return every acknowledged value;
- when the ballast is removed, writes succeed again without a restart;
- after a SIGKILL and a restart, every acknowledged write is there and
  ``helios aof-check --data`` finds the directory valid.

Mounting a tmpfs needs root (CAP_SYS_ADMIN); without it the tests skip and
say why.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.chaos.harness import HELIOS, Gateway, clean_env, iterations, record, wait_for
from tests.integration.test_atlasd_support import Daemon

pytestmark = pytest.mark.slow
VALUE = b"x" * 16384


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path) -> Path:
    """Write a ballast file until the disk is full (ENOSPC)."""
    ballast = mnt / "ballast"
    with open(ballast, "ab") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return ballast


def aof_check(data: Path) -> None:
    r = subprocess.run([HELIOS, "aof-check", "--data", str(data)], capture_output=True, text=True,
                       env=clean_env(), timeout=120)
    assert r.returncode == 0, f"aof-check after disk full: {r.stdout}\n{r.stderr}"


def test_atlasd_disk_full(small_disk: Path) -> None:
    data = small_disk / "data"
    daemon = Daemon(data, "--appendfsync", "always").start()
    acked: dict[str, bytes] = {}
    refused = 0
    rounds = iterations(1, 5)
    try:
        client = daemon.client()
        for i in range(20):
            client.set(f"before:{i}", VALUE)
            acked[f"before:{i}"] = VALUE
        for rnd in range(rounds):
            ballast = fill(small_disk)
            error = ""
            for i in range(2000):
                try:
                    client.set(f"full{rnd}:{i}", VALUE)
                    acked[f"full{rnd}:{i}"] = VALUE
                except redis.ResponseError as e:
                    error = str(e)
                    break
            assert error.startswith("MISCONF"), f"a full disk was not refused clearly: {error!r}"
            refused += 1
            for key, value in acked.items():  # reads go on
                assert client.get(key) == value, f"read of {key} after disk full"
            ballast.unlink()

            def writes_again(r: int = rnd) -> bool:
                try:
                    client.set(f"after{r}", b"ok")
                    return True
                except redis.ResponseError:
                    return False

            wait_for(writes_again, 60, "writes to resume once space returned", step=0.2)
            acked[f"after{rnd}"] = b"ok"
        daemon.kill()
        assert daemon.proc is not None
        daemon.proc.wait()
        daemon.start()
        client = daemon.client()
        lost = [k for k, v in acked.items() if client.get(k) != v]
        assert not lost, f"acknowledged writes lost after disk full and restart: {lost[:5]}"
    finally:
        daemon.stop()
    aof_check(data)
    record("atlasd, disk full (tmpfs + ballast), appendfsync always",
           "writes refused with MISCONF, reads go on, writes resume without restart, restart recovers every "
           "acknowledged write, aof-check clean", rounds, acked=len(acked), refusals=refused)


def test_gateway_embedded_disk_full(small_disk: Path) -> None:
    data = small_disk / "data"
    gw = Gateway(small_disk, data=data).start()
    acked: dict[str, bytes] = {}
    rounds = iterations(1, 5)
    try:
        gw.login()
        for rnd in range(rounds):
            ballast = fill(small_disk)
            status, body = 0, b""
            for i in range(2000):
                status, _, body = gw.api("PUT", f"/api/v1/kv/full{rnd}/{i}", raw=VALUE)
                if status not in (200, 201):
                    break
                acked[f"full{rnd}/{i}"] = VALUE
            # aof_write_failed: the write that met the full disk; store_read_only: those after it.
            assert status == 503 and json.loads(body)["error"]["code"] in ("aof_write_failed", "store_read_only"), \
                (status, body)
            for key, value in acked.items():
                code, _, got = gw.api("GET", f"/api/v1/kv/{key}")
                assert code == 200 and got == value, f"read of {key} after disk full: {code}"
            ballast.unlink()
            wait_for(lambda r=rnd: gw.api("PUT", f"/api/v1/kv/after{r}", raw=b"ok")[0] in (200, 201),  # type: ignore[misc]
                     60, "writes to resume once space returned", step=0.2)
            acked[f"after{rnd}"] = b"ok"
        gw.kill9()
        gw.start()
        gw.login()
        lost = [k for k, v in acked.items() if gw.api("GET", f"/api/v1/kv/{k}")[2] != v]
        assert not lost, f"acknowledged writes lost after disk full and restart: {lost[:5]}"
    finally:
        gw.stop()
    aof_check(data)
    record("gateway (embedded store), disk full (tmpfs + ballast), appendfsync always",
           "PUT answers 503 (aof_write_failed/store_read_only), GETs go on, PUTs resume without restart, "
           "restart recovers every "
           "acknowledged PUT, aof-check clean", rounds, acked=len(acked))
