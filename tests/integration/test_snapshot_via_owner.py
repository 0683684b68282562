"""`helios snapshot --data DIR` while atlasd owns DIR: the daemon is asked over its socket and waited for."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from helios_cli.main import cli
from helios_core.atlas.snapshot import read_header
from tests.integration.test_atlasd_support import HELIOS, Daemon, running_daemon

pytestmark = pytest.mark.usefixtures("restore_logging")


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["snapshot", *args], env=env)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path, "--appendfsync", "always") as d:
        yield d


def fill(d: Daemon, n: int, prefix: str = "k") -> None:
    with d.client() as r:
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            pipe.set(f"{prefix}:{i}", i)
        pipe.execute()


def test_snapshot_asks_the_owner_and_reports_the_new_file(daemon: Daemon) -> None:
    fill(daemon, 50)
    with daemon.client() as r:
        r.zadd("z", {"a": 1})
        seq = int(r.info("persistence")["aof_last_seq"])
    result = run("--data", str(daemon.data), "--json")
    assert result.exit_code == 0, result.output
    out = orjson.loads(result.stdout)
    snap = daemon.data / "dump.rdb"
    assert out["path"] == str(snap)
    assert (out["seq"], out["keys"], out["bytes"], out["output"]) == (seq, 51, snap.stat().st_size, None)
    assert read_header(snap).seq == seq
    assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon keeps running and owning DIR"
    with daemon.client() as r:
        assert r.info("persistence")["rdb_last_bgsave_status"] == "ok"
        assert r.get("k:7") == b"7"


def test_output_is_a_verified_atomic_copy(daemon: Daemon, tmp_path: Path) -> None:
    fill(daemon, 10)
    copy = tmp_path / "backups" / "nightly.rdb"
    copy.parent.mkdir()
    copy.write_bytes(b"yesterday's copy")
    result = run("--data", str(daemon.data), "--output", str(copy))
    assert result.exit_code == 0, result.output
    assert f"output   {copy}" in result.stdout and "keys     10" in result.stdout
    assert copy.read_bytes() == (daemon.data / "dump.rdb").read_bytes()
    assert os.listdir(copy.parent) == ["nightly.rdb"]
    assert read_header(copy).keys == 10


def test_a_snapshot_already_running_is_waited_out_and_a_newer_one_taken(daemon: Daemon) -> None:
    fill(daemon, 100_000)  # big enough that BGSAVE is still writing when the CLI asks
    with daemon.client() as r:
        r.bgsave()
        r.set("after-bgsave", "1")  # the running snapshot predates this write; ours must not
        seq = int(r.info("persistence")["aof_last_seq"])
    result = run("--data", str(daemon.data), "--json")
    assert result.exit_code == 0, result.output
    out = orjson.loads(result.stdout)
    assert (out["seq"], out["keys"]) == (seq, 100_001)


def test_a_failed_snapshot_exits_1_with_the_reason(daemon: Daemon) -> None:
    fill(daemon, 5)
    (daemon.data / "dump.rdb").mkdir()  # the snapshot's final rename cannot replace a directory
    result = run("--data", str(daemon.data))
    assert result.exit_code == 1
    assert daemon.proc is not None
    assert f"process {daemon.proc.pid} could not snapshot" in result.stderr
    assert "dump.rdb" in result.stderr
    assert result.stdout == ""


def test_the_socket_needs_no_password(tmp_path: Path) -> None:
    """The socket's mode is its password (issue 10, item 3); a wrong password given is still refused."""
    with running_daemon(tmp_path, "--appendfsync", "always", "--requirepass", "s3cret") as d:
        with d.client(password="s3cret") as r:
            r.set("a", "1")
        plain = run("--data", str(d.data), "--json")
        assert plain.exit_code == 0, plain.output
        wrong = run("--data", str(d.data), env={"HELIOS_ATLASD__REQUIREPASS": "nope"})
        assert wrong.exit_code == 1 and "password" in wrong.stderr
        ok = run("--data", str(d.data), "--json", env={"HELIOS_ATLASD__REQUIREPASS": "s3cret"})
        assert ok.exit_code == 0, ok.output
        assert orjson.loads(ok.stdout)["keys"] == 1


def test_timeout_is_only_for_data(tmp_path: Path) -> None:
    assert run("--verify", str(tmp_path / "x.rdb"), "--timeout", "5").exit_code == 2
    assert run("--data", str(tmp_path), "--timeout", "0").exit_code == 2


def test_cron_style_subprocess_run(daemon: Daemon) -> None:
    fill(daemon, 3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    done = subprocess.run([HELIOS, "snapshot", "--data", str(daemon.data)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "keys     3" in done.stdout
