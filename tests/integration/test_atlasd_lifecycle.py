"""atlasd's life: start, graceful stop (signals, SHUTDOWN), crash safety, the lock, metrics, the CLI."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from helios_cli.main import cli
from helios_core.atlas.engine import Engine
from tests.integration.test_atlasd_support import Daemon, unused_port

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("restore_logging")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_gracefully_and_data_survives(tmp_path: Path, sig: int) -> None:
    data = tmp_path / "data"
    d = Daemon(data, "--appendfsync", "everysec").start()
    with d.client() as r:
        for i in range(300):
            r.set(f"k{i}", i)
        r.zadd("z", {"a": 1})
    owner = json.loads((data / "helios.lock").read_text())
    assert owner["pid"] == d.proc.pid and owner["socket"] == str(d.socket_path) and owner["port"] == d.port
    assert d.stop(sig) == 0
    assert not d.socket_path.exists()
    assert "atlasd stopped" in d.log()
    d2 = Daemon(data, port=d.port).start()
    try:
        with d2.client() as r:
            assert r.dbsize() == 301 and r.get("k299") == b"299" and r.zscore("z", "a") == 1.0
    finally:
        assert d2.stop() == 0


def test_shutdown_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = Daemon(data).start()
    with d.client() as r:
        r.set("a", 1)
        r.shutdown(save=True)  # no reply: the connection closes, as with Redis (redis-py expects that)
    assert d.proc is not None and d.proc.wait(20) == 0
    assert (data / "dump.rdb").exists()
    assert "snapshot before shutdown written" in d.log()
    d2 = Daemon(data).start()
    try:
        with d2.client() as r:
            assert r.get("a") == b"1"
            r.shutdown(nosave=True)
        assert d2.proc is not None and d2.proc.wait(20) == 0
    finally:
        d2.kill()


def test_in_flight_writers_at_sigterm_keep_every_acknowledged_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = Daemon(data, "--appendfsync", "always").start()
    acked: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        try:
            with d.client() as r:
                i = 0
                while not stop.is_set():
                    r.set(f"w{i}", i)
                    acked.append(i)
                    i += 1
        except (redis.ConnectionError, redis.TimeoutError):
            pass

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.5)
    assert d.stop(signal.SIGTERM) == 0
    stop.set()
    t.join(10)
    assert acked
    d2 = Daemon(data).start()
    try:
        with d2.client() as r:
            got = r.mget([f"w{i}" for i in acked])
            assert all(v == str(i).encode() for i, v in zip(acked, got, strict=True))
    finally:
        d2.kill()


def test_sigkill_under_always_loses_no_acknowledged_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = Daemon(data, "--appendfsync", "always").start()
    acked: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        i = 0
        try:
            with d.client() as r:
                while not stop.is_set():
                    key = f"c{n}:{i % 50}"
                    if i % 3 == 0:
                        pipe = r.pipeline(transaction=True)
                        pipe.set(key, i).incr(f"count{n}")
                        pipe.execute()
                        with lock:
                            acked[key] = i
                            acked[f"count{n}"] = acked.get(f"count{n}", 0) + 1
                    else:
                        r.set(key, i)
                        with lock:
                            acked[key] = i
                    i += 1
        except (redis.ConnectionError, redis.TimeoutError):
            pass

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    d.kill()  # SIGKILL mid-stream
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acked) > 20
    d2 = Daemon(data, port=d.port).start()
    try:
        with d2.client() as r:
            for key, value in acked.items():
                got = r.get(key)
                if key.startswith("count"):
                    # The last EXEC may have been applied without its reply arriving: never fewer.
                    assert int(got) >= value, key
                else:
                    # A later write to the same key may have landed unacknowledged: at least as new.
                    assert got is not None and int(got) >= value, key
    finally:
        d2.kill()


def test_second_daemon_on_the_same_dir_names_the_owner(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = Daemon(data).start()
    try:
        d2 = Daemon(data).start(wait=False)
        assert d2.proc is not None and d2.proc.wait(20) == 1
        text = d2.log()
        assert f"process {d.proc.pid}" in text and "atlas.sock" in text
        with d.client() as r:
            assert r.ping()  # the owner is untouched
    finally:
        d.kill()


def test_requirepass_option_and_metrics(tmp_path: Path) -> None:
    mport = unused_port()
    d = Daemon(tmp_path / "data", "--requirepass", "pw", "--metrics-port", str(mport)).start()
    try:
        with d.client(password=None) as r:
            with pytest.raises(redis.AuthenticationError):
                r.set("a", 1)
        with d.client(password="pw") as r:
            r.set("a", 1)
            r.get("a")
            body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
        for name in ("atlas_aof_bytes_total", "atlas_snapshot_duration_seconds", "atlas_keys 1.0",
                     'atlas_commands_total{cmd="set"} 1.0', "atlas_connected_clients", "atlas_aof_fsync_seconds_count",
                     "atlas_snapshot_last_status_ok 1.0", "atlas_snapshot_failures_total 0.0",
                     "atlas_snapshot_last_cow_bytes", "atlas_aof_delayed_fsync_total 0.0"):
            assert name in body, name
    finally:
        d.kill()


def test_cli_in_process_reports_a_locked_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    engine = Engine.open(data, component="test")
    try:
        result = CliRunner().invoke(cli, ["atlasd", "--data", str(data), "--port", "0"])
    finally:
        engine.close()
    assert result.exit_code == 1
    assert "in use by" in result.output


def test_cli_rejects_bad_options() -> None:
    result = CliRunner().invoke(cli, ["atlasd", "--data", "/tmp/x", "--port", "70000"])
    assert result.exit_code == 1 and "atlasd.port" in result.output
    result = CliRunner().invoke(cli, ["atlasd", "--data", "/tmp/x", "--appendfsync", "sometimes"])
    assert result.exit_code == 2
