from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import orjson
import pytest
from click.testing import CliRunner

from helios_cli.context import CliContext, pass_cli
from helios_cli.main import cli
from helios_core.observability.logging import get_logger

pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def probe() -> Iterator[None]:
    """A throwaway subcommand so the group callback runs (it has no real ones yet)."""

    @click.command("probe")
    @pass_cli
    def probe_cmd(obj: CliContext) -> None:
        get_logger("probe").info("probing", fsync=obj.config.atlas.appendfsync)
        cfg = obj.config
        click.echo(f"path={obj.config_path} level={cfg.log.level} fsync={cfg.atlas.appendfsync}")

    cli.add_command(probe_cmd)
    try:
        yield
    finally:
        cli.commands.pop("probe", None)


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == "helios 0.1.0"


def test_help_lists_global_options() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for option in ("--config", "--log-level", "--log-format", "--version"):
        assert option in result.output


@pytest.mark.usefixtures("probe")
def test_config_file_env_and_options(tmp_path: Path) -> None:
    path = tmp_path / "h.yaml"
    path.write_text("atlas:\n  appendfsync: everysec\nlog:\n  level: error\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        ["--log-level", "warn", "probe"],
        env={"HELIOS_CONFIG": str(path), "HELIOS_ATLAS__APPENDFSYNC": "no"},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"path={path} level=warn fsync=no"


@pytest.mark.usefixtures("probe")
def test_bad_config_file_exits_1_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("atlas:\n  appendfsync: sometimes\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(path), "probe"])
    assert result.exit_code == 1
    assert f"{path}:2" in result.stderr
    assert "always, everysec, no" in result.stderr


@pytest.mark.usefixtures("probe")
def test_missing_config_file_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "absent.yaml"), "probe"])
    assert result.exit_code == 1
    assert "absent.yaml" in result.stderr


@pytest.mark.usefixtures("probe")
def test_log_format_json() -> None:
    result = CliRunner().invoke(cli, ["--log-format", "json", "--log-level", "info", "probe"])
    assert result.exit_code == 0, result.output
    (line,) = [orjson.loads(text) for text in result.stderr.splitlines()]
    assert line["component"] == "probe"
    assert line["message"] == "probing"
    assert line["fsync"] == "always"


@pytest.mark.usefixtures("probe")
def test_alias_runs_the_subcommand(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from helios_cli.aliases import alias

    monkeypatch.setattr("sys.argv", ["helios-probe"])
    with pytest.raises(SystemExit) as info:
        alias("probe")()
    assert info.value.code == 0
    assert "fsync=always" in capsys.readouterr().out


@pytest.mark.usefixtures("probe")
def test_one_shot_commands_log_warnings_only_unless_asked() -> None:
    """A tool prints its result; its info lines ("atlas ready") appear only with --log-level."""
    result = CliRunner().invoke(cli, ["probe"])
    assert result.exit_code == 0, result.output
    assert "probing" not in result.stderr
    assert "probing" in CliRunner().invoke(cli, ["--log-level", "info", "probe"]).stderr


def test_the_gateway_announces_its_store_without_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    from helios_cli.gateway import _announce
    from helios_core.gateway.app import Started

    _announce(Started("http://127.0.0.1:1", 1, None, "atlas://:s3cret-pw@atlasd:6379", None, None))
    out = capsys.readouterr().out
    assert "atlasd:6379" in out and "s3cret-pw" not in out
