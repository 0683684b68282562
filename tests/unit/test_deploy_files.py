"""The deployment files: systemd units (systemd-analyze verify), Dockerfile, compose.yaml, the crontab line.

Images cannot be built here, so the Dockerfile and compose.yaml are checked as
documents: the instructions the brief requires, and every `helios ...` command
in them parsed by the real click command (so a renamed option fails here).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from ruamel.yaml import YAML

from helios_cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "configs" / "systemd"
UNITS = ("helios-atlasd.service", "helios-gateway.service", "helios-proxy.service", "helios-worker@.service")
BIN = Path(sys.executable).parent


def _parses(argv: list[str]) -> None:
    """`argv` (starting with helios or helios-<daemon>) is accepted by the real CLI's option parsing."""
    prog, *args = argv
    prog = Path(prog).name
    if prog.startswith("helios-"):
        args = [prog.removeprefix("helios-"), *args]
    elif prog != "helios":
        raise AssertionError(f"not a helios command: {argv}")
    sub = cli.get_command(click.Context(cli), args[0])
    assert sub is not None, f"no such command: helios {args[0]}"
    sub.make_context(args[0], list(args[1:]), parent=click.Context(cli))  # raises on a bad option


# -- systemd ----------------------------------------------------------------------------------

def _unit_settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("name", UNITS)
def test_units_carry_the_supervision_and_hardening_settings(name: str) -> None:
    s = _unit_settings(SYSTEMD / name)
    for key, value in {"Type": "simple", "User": "helios", "KillSignal": "SIGTERM", "NoNewPrivileges": "yes",
                       "ProtectSystem": "strict", "ReadWritePaths": "/var/lib/helios", "PrivateTmp": "yes",
                       "UMask": "0077"}.items():
        assert s.get(key) == [value], (name, key, s.get(key))
    assert int(s["TimeoutStopSec"][0]) >= 30
    exec_start = s["ExecStart"][0].replace("%i", "default").replace("${HELIOS_WORKER_EXEC}", "true")
    _parses(shlex.split(exec_start))


def _verify(units: list[Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", *[f"./{u.name}" for u in units]],
                          cwd=cwd, capture_output=True, text=True, timeout=60)


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    probe = tmp_path / "helios-probe.service"
    probe.write_text("[Service]\nType=simple\nExecStart=/bin/true\n")
    try:
        ran = _verify([probe], tmp_path)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"systemd-analyze cannot run here: {e}")
    if ran.returncode != 0 or ran.stderr.strip():
        pytest.skip(f"systemd-analyze verify fails on a trivial unit in this container: {ran.stderr.strip()[:300]}")
    probe.unlink()
    copies = []
    for name in UNITS:
        # ExecStart must name an existing binary: this checkout's console scripts.
        text = re.sub(r"/opt/helios/bin/(helios[a-z-]*)", lambda m: str(BIN / m.group(1)), (SYSTEMD / name).read_text())
        (tmp_path / name).write_text(text)
        copies.append(tmp_path / name)
    instance = tmp_path / "helios-worker@emails.service"
    instance.symlink_to(tmp_path / "helios-worker@.service")
    ran = _verify([*copies, instance], tmp_path)
    # verify exits 0 on unknown keys or bad values too, only warning: any output is a failure.
    assert ran.returncode == 0 and not ran.stderr.strip() and not ran.stdout.strip(), ran.stderr + ran.stdout


# -- Dockerfile -------------------------------------------------------------------------------

def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        pending += " " + stripped
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def test_dockerfile_has_the_required_instructions() -> None:
    ins = _instructions(ROOT / "Dockerfile")
    first = {}
    for word, rest in ins:
        first.setdefault(word, rest)
    assert ins[0] == ("FROM", "python:3.11-slim")
    assert any(w == "RUN" and "pip install /src" in r for w, r in ins)
    assert "--uid 10001" in next(r for w, r in ins if w == "RUN" and "useradd" in r)
    users = [r for w, r in ins if w == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith(("root:", "0:"))
    assert users[-1] == "helios"
    assert [r for w, r in ins if w == "VOLUME"] == ["/data"]
    assert set(first["EXPOSE"].split()) == {"8080", "6379", "8000"}
    assert first["STOPSIGNAL"] == "SIGTERM"
    health = first["HEALTHCHECK"]
    cmd = json.loads(health.split("CMD", 1)[1])
    assert cmd[:4] == ["helios", "health", "--url", "http://127.0.0.1:8080"]
    _parses(cmd)
    default = json.loads(first["CMD"])
    assert default == ["helios", "gateway", "--data", "/data", "--bind", "0.0.0.0"]
    _parses(default)


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests", "data", ".env"} <= ignored
    for needed in ("pyproject.toml", "setup.cfg", "README.md", "helios_core", "helios_cli"):
        assert needed not in ignored


# -- compose.yaml -----------------------------------------------------------------------------

def _compose() -> dict:
    return YAML(typ="safe").load((ROOT / "compose.yaml").read_text())


def _resolved(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR:?message} as `docker compose config` would fill them in."""
    return re.sub(r"\$\{(\w+)(?::[-?]([^}]*))?\}", lambda m: "x" if m.group(2) is None or ":?" in m.group(0)
                  else m.group(2), value)


def test_compose_runs_atlasd_gateway_proxy_and_two_workers() -> None:
    doc = _compose()
    services = doc["services"]
    assert set(services) == {"atlasd", "gateway", "proxy", "worker-1", "worker-2"}
    assert "atlas-data:/data" in services["atlasd"]["volumes"] and "atlas-data" in doc["volumes"]
    assert "HELIOS_ATLASD__REQUIREPASS" in services["atlasd"]["environment"]
    assert services["gateway"]["environment"]["HELIOS_AUTH__JWT_KEYS"].startswith("k1=${")  # no data dir for a key
    for name in ("gateway", "proxy"):
        cmd = services[name]["command"]
        store = cmd[cmd.index("--store") + 1]
        assert store.startswith("atlas://") and store.endswith("@atlasd:6379"), store
        assert services[name]["depends_on"]["atlasd"]["condition"] == "service_healthy"
    for name in ("worker-1", "worker-2"):
        assert services[name]["command"][:2] == ["helios", "worker"]
        assert services[name]["environment"]["HELIOS_URL"] == "http://gateway:8080"
    for name, svc in services.items():
        assert svc["stop_signal"] == "SIGTERM", name
        _parses([_resolved(a) for a in svc["command"]])
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1:3] == ["helios", "health"], name
        _parses(test[1:])


# -- cron -------------------------------------------------------------------------------------

def test_crontab_line_runs_a_valid_helios_backup() -> None:
    lines = [line for line in (ROOT / "configs" / "cron" / "helios-backup").read_text().splitlines()
             if line.strip() and not line.startswith("#") and not re.match(r"^[A-Z_]+=", line)]
    assert len(lines) == 1
    fields = lines[0].split(None, 6)
    minute, hour, dom, month, dow, user, command = fields
    assert all(re.fullmatch(r"[\d*/,-]+", f) for f in (minute, hour, dom, month, dow))
    assert user == "helios"
    argv = shlex.split(command.split(">", 1)[0])
    assert argv[:2] == ["helios", "backup"] and "--data" in argv and "--to" in argv and "--keep" in argv
    _parses(argv)
