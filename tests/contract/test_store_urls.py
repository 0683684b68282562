"""Store URLs, and `open_store`: the one way a command turns `--data DIR` or a URL into a Store."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from helios_core.atlas.datadir import DataDir
from helios_core.config import AtlasConfig, AtlasdConfig, HeliosConfig
from helios_core.errors import DataDirLockedError, HeliosError
from helios_core.store import EmbeddedStore, RemoteStore, open_store, parse_store_url
from tests.integration.test_atlasd_support import Daemon, unused_port

# -- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize("url, kind, where, db", [
    ("atlas://localhost", "tcp", "localhost:6380", 0),
    ("atlas://10.0.0.5:7000", "tcp", "10.0.0.5:7000", 0),
    ("atlas://[::1]:7000/0", "tcp", "::1:7000", 0),
    ("redis://cache.internal", "tcp", "cache.internal:6379", 0),
    ("redis://cache.internal:6400/3", "tcp", "cache.internal:6400", 3),
    ("redis://h?db=2", "tcp", "h:6379", 2),
    ("rediss://secure.example:6380", "tls", "secure.example:6380", 0),
    ("unix:///var/lib/helios/atlas.sock", "unix", "/var/lib/helios/atlas.sock", 0),
])
def test_accepted_forms(url: str, kind: str, where: str, db: int) -> None:
    u = parse_store_url(url)
    assert (u.kind, u.where, u.db, u.password) == (kind, where, db, None)


def test_credentials_and_parameters() -> None:
    u = parse_store_url("redis://app:p%40ss%2Fword@h:6379/1?timeout=2.5&connect_timeout=1")
    assert (u.username, u.password, u.db, u.timeout, u.connect_timeout) == ("app", "p@ss/word", 1, 2.5, 1.0)
    assert parse_store_url("atlas://:s3cret@h").password == "s3cret"
    u = parse_store_url("unix:///run/a.sock?password=s3cret&username=ops")
    assert (u.path, u.password, u.username) == ("/run/a.sock", "s3cret", "ops")
    tls = parse_store_url("rediss://h?ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem&ssl_check_hostname=false")
    assert tls.tls == {"ssl_cert_reqs": "none", "ssl_ca_certs": "/etc/ca.pem", "ssl_check_hostname": False}


def test_relative_unix_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_store_url("unix://data/atlas.sock").path == str(tmp_path / "data" / "atlas.sock")


def test_passwords_are_redacted() -> None:
    assert parse_store_url("redis://app:s3cret@h:1/0").redacted == "redis://app:***@h:1/0"
    assert parse_store_url("unix:///a.sock?password=s3cret&db=0").redacted == "unix:///a.sock?password=***&db=0"
    assert "s3cret" not in repr(parse_store_url("atlas://:s3cret@h"))


@pytest.mark.parametrize("url, reason", [
    ("localhost:6379", "not a URL"),
    ("http://localhost", "unknown scheme 'http'"),
    ("redis://", "no host"),
    ("redis://h:port", "Port could not be cast"),
    ("redis://h:70000", "out of range"),
    ("redis://h/zero", "db must be a whole number"),
    ("atlas://h/1", "atlasd has one database"),
    ("redis://h?colour=blue", "unknown parameter 'colour'"),
    ("redis://h?ssl_cert_reqs=none", "unknown parameter 'ssl_cert_reqs'"),  # TLS options need rediss://
    ("rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
    ("redis://h?timeout=-1", "timeout must be a positive number"),
    ("unix://", "no socket path"),
    ("unix://:pw@/run/a.sock", "?password="),
])
def test_bad_urls_name_the_url_and_the_accepted_forms(url: str, reason: str) -> None:
    with pytest.raises(HeliosError) as e:
        parse_store_url(url)
    text = str(e.value)
    assert e.value.code == "bad_store_url"
    assert reason in text and "atlas://HOST[:PORT]" in text and "unix:///PATH" in text


def test_a_bad_urls_password_is_not_shown() -> None:
    with pytest.raises(HeliosError) as e:
        parse_store_url("redis://:s3cret@h:99999")
    assert "s3cret" not in str(e.value) and "***" in str(e.value)


# -- open_store ---------------------------------------------------------------------------


def test_exactly_one_of_data_or_url(tmp_path: Path) -> None:
    for kw in ({}, {"data": str(tmp_path), "url": "atlas://h"}):
        with pytest.raises(HeliosError, match="exactly one"):
            asyncio.run(open_store(**kw))  # type: ignore[arg-type]


def test_free_dir_opens_embedded_and_owns_it(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def main() -> None:
        store = await open_store(data=data, config=HeliosConfig(atlas=AtlasConfig(save=())), tool="test")
        try:
            assert isinstance(store, EmbeddedStore)
            owner = DataDir(data).owner()
            assert owner is not None and owner["pid"] == os.getpid() and owner["tool"] == "test"
            await store.set("k", "v")
        finally:
            await store.close()
        assert DataDir(data).owner() is None

    asyncio.run(main())


def test_dir_owned_without_a_socket_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    lock = DataDir(data).lock(tool="helios user")
    try:
        with pytest.raises(DataDirLockedError) as e:
            asyncio.run(open_store(data=data))
    finally:
        lock.release()
    assert f"process {os.getpid()}" in str(e.value) and "does not serve other processes" in str(e.value)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("urls") / "owned", "--appendfsync", "always", "--requirepass", "s3cret").start()
    try:
        yield d
    finally:
        d.kill()


def test_dir_owned_by_atlasd_opens_remote_over_its_socket(daemon: Daemon) -> None:
    config = HeliosConfig(atlasd=AtlasdConfig(requirepass="s3cret"))

    async def main() -> None:
        store = await open_store(data=str(daemon.data), config=config)
        try:
            assert isinstance(store, RemoteStore)
            assert store.target.kind == "unix" and store.target.path == str(daemon.socket_path)
            await store.set("via-socket", "yes")
            # The daemon's own clients see it: it is the same keyspace, not a second opener.
            with daemon.client(password="s3cret") as r:
                assert r.get("via-socket") == b"yes"
                assert any("U" in c["flags"] and c["cmd"] == "exec" for c in r.client_list()), "over the socket"
        finally:
            await store.close()

    asyncio.run(main())


def test_dir_owned_by_atlasd_needs_no_password_on_its_socket(daemon: Daemon) -> None:
    """The socket's mode (0600 in a 0700 directory) is its password (issue 10, item 3)."""
    async def main() -> None:
        store = await open_store(data=str(daemon.data))
        try:
            assert store.target.kind == "unix"  # type: ignore[attr-defined]
            assert await store.get("via-socket") in (None, b"yes")
        finally:
            await store.close()

    asyncio.run(main())


def test_loopback_atlas_url_finds_the_password_on_its_own(daemon: Daemon) -> None:
    async def main() -> None:
        store = await open_store(url=f"atlas://127.0.0.1:{daemon.port}")
        try:
            await store.set("found", "1")
        finally:
            await store.close()

    asyncio.run(main())
    with pytest.raises(HeliosError) as e:  # a password given is used as given
        asyncio.run(open_store(url=f"atlas://:wrong@127.0.0.1:{daemon.port}"))
    assert "wrong" not in str(e.value)


def test_url_opens_remote(daemon: Daemon) -> None:
    async def main() -> None:
        store = await open_store(url=f"atlas://:s3cret@127.0.0.1:{daemon.port}")
        try:
            assert isinstance(store, RemoteStore)
            await store.set("over-tcp", "1")
            assert await store.get("over-tcp") == b"1"
        finally:
            await store.close()

    asyncio.run(main())


def test_unreachable_url_names_it() -> None:
    url = f"redis://:s3cret@127.0.0.1:{unused_port()}"
    with pytest.raises(HeliosError) as e:
        asyncio.run(open_store(url=url))
    assert e.value.code == "store_unavailable"
    assert "redis://:***@127.0.0.1" in str(e.value) and "s3cret" not in str(e.value)
