"""atlasd with --tls-cert/--tls-key: RESP (and JSON lines) over TLS on the TCP port, the unix socket plain.

The certificate is self-signed, made by the test with `cryptography`; clients
do not verify it (redis-py `ssl_cert_reqs=None`, `redis-cli --insecure`).
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helios_cli.main import cli
from tests.integration.test_atlasd_support import Daemon, running_daemon

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("restore_logging")]


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "atlasd test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = make_cert(tmp)
    with running_daemon(tmp, "--tls-cert", str(cert), "--tls-key", str(key)) as d:
        yield d


def test_redis_py_over_tls(tls_daemon: Daemon) -> None:
    with tls_daemon.client() as r:  # ssl=True, ssl_cert_reqs=None
        assert r.ping() is True
        assert r.set("k", "v") is True and r.get("k") == b"v"
        pipe = r.pipeline(transaction=True)
        pipe.incr("n").incr("n")
        assert pipe.execute() == [1, 2]
    with tls_daemon.client(protocol=3) as r:
        assert r.get("k") == b"v"


def test_plain_clients_are_not_served_on_the_tls_port(tls_daemon: Daemon) -> None:
    with pytest.raises(redis.ConnectionError):
        with redis.Redis(port=tls_daemon.port, socket_timeout=5) as r:
            r.ping()


def test_unix_socket_stays_plain(tls_daemon: Daemon) -> None:
    with redis.Redis(unix_socket_path=str(tls_daemon.socket_path), socket_timeout=5) as r:
        assert r.ping() is True


def test_json_lines_over_tls(tls_daemon: Daemon) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", tls_daemon.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            auth = orjson.dumps({"cmd": "AUTH", "args": [tls_daemon.password]})
            s.sendall(auth + b'\n{"cmd":"SET","key":"j","value":"over tls"}\n{"cmd":"GET","key":"j"}\n')
            f = s.makefile("rb")
            assert orjson.loads(f.readline()) == {"ok": "OK"}
            assert orjson.loads(f.readline()) == {"ok": "OK"}
            assert orjson.loads(f.readline()) == {"ok": "over tls"}


def _redis_cli_has_tls() -> bool:
    exe = shutil.which("redis-cli")
    if exe is None:
        return False
    out = subprocess.run([exe, "--help"], capture_output=True, text=True)
    return "--tls" in out.stdout + out.stderr


@pytest.mark.skipif(not _redis_cli_has_tls(), reason="redis-cli is missing or was built without TLS")
def test_redis_cli_tls_insecure(tls_daemon: Daemon) -> None:
    base = ["redis-cli", "--tls", "--insecure", "-p", str(tls_daemon.port), "-a", tls_daemon.password or "",
            "--no-auth-warning"]
    out = subprocess.run([*base, "SET", "cli", "yes"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr
    out = subprocess.run([*base, "GET", "cli"], capture_output=True, text=True, timeout=20)
    assert out.stdout.strip() == "yes"


def test_tls_needs_both_files_and_readable_ones(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    runner = CliRunner()
    only_cert = runner.invoke(cli, ["atlasd", "--data", str(tmp_path / "d1"), "--port", "0", "--tls-cert", str(cert)])
    assert only_cert.exit_code != 0 and "tls_cert and atlasd.tls_key go together" in only_cert.output
    missing = runner.invoke(cli, ["atlasd", "--data", str(tmp_path / "d2"), "--port", "0",
                                  "--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(key)])
    assert missing.exit_code != 0 and "cannot load the TLS certificate" in missing.output
    wrong = runner.invoke(cli, ["atlasd", "--data", str(tmp_path / "d3"), "--port", "0",
                                "--tls-cert", str(key), "--tls-key", str(cert)])
    assert wrong.exit_code != 0 and "cannot load the TLS certificate" in wrong.output
    assert not (tmp_path / "d2" / "helios.lock").exists()  # refused before the directory was touched


def test_tls_from_the_config_file(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    config = tmp_path / "helios.yaml"
    config.write_text(f"atlasd:\n  tls_cert: {cert}\n  tls_key: {key}\n")
    d = Daemon(tmp_path / "data", "--appendfsync", "everysec", env={"HELIOS_CONFIG": str(config)})
    d.tls_kw = {"ssl": True, "ssl_cert_reqs": None}
    d.start()
    try:
        with d.client() as r:
            assert r.ping() is True
    finally:
        assert d.stop() == 0
