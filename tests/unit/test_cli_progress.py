"""Progress bars (helios_cli/progress.py) on aof-check, snapshot, backup, restore and bulk enqueue.

CliRunner's stderr is not a terminal, so by default no bar is drawn and the output is what it always
was; HELIOS_PROGRESS=1 forces the terminal path (rich's force_terminal), which must run the same work
to the same stdout and draw on stderr only.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from helios_cli import aof_check, progress
from helios_cli.main import cli
from helios_core.atlas.engine import Engine
from helios_core.config import AtlasConfig

pytestmark = pytest.mark.usefixtures("restore_logging")

FORCED = {"HELIOS_PROGRESS": "1"}
OFF = {"HELIOS_PROGRESS": ""}


def run(*args: str, env: dict[str, str], stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, input=stdin)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    eng = Engine.open(d, AtlasConfig())
    try:
        for i in range(500):
            eng.execute([b"SET", f"k{i}".encode(), b"v" * 100])
        eng.flush_sync()
    finally:
        eng.close()
    d.chmod(0o700)
    return d


@pytest.mark.parametrize(("env", "as_json", "want"), [
    ({"HELIOS_PROGRESS": "1"}, False, True),
    ({"HELIOS_PROGRESS": "1"}, True, False),  # machine output never gets a bar
    ({"HELIOS_PROGRESS": "0"}, False, False),
    ({"HELIOS_PROGRESS": ""}, False, False),  # pytest's stderr is not a terminal
])
def test_enabled(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], as_json: bool, want: bool) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert progress.enabled(as_json=as_json) is want


def test_reporter_without_a_bar_does_nothing() -> None:
    with progress.progress("x", 10, show=False) as bar:
        assert not bar.showing
        bar.advance(3)
        bar.update(5, total=20)
        bar.stage("y")


def test_bar_draws_on_stderr_only(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HELIOS_PROGRESS", "1")
    with progress.progress("copying", 4, unit="bytes") as bar:
        assert bar.showing
        bar.advance(2)
        bar.stage("loading")  # a spinner step
        bar.stage("writing", total=3)
        bar.advance(3)
    out, err = capsys.readouterr()
    assert out == "" and "\x1b[" in err


def _ids(result: Result) -> list[str]:
    assert result.exit_code == 0, (result.output, result.stderr)
    return result.stdout.split()


def test_bulk_enqueue_from_file_same_stdout_with_and_without_a_bar(data: Path, tmp_path: Path) -> None:
    lines = [orjson.dumps({"n": i}).decode() for i in range(150)]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines[:100]) + "\n\n" + "\n".join(lines[100:]) + "\n")  # a blank line is skipped
    plain = run("job", "enqueue", "-q", "bulk", "--from-file", str(path), "--data", str(data), env=OFF)
    ids = _ids(plain)
    assert len(ids) == 150 and len(set(ids)) == 150 and plain.stderr == ""
    barred = run("job", "enqueue", "-q", "bulk", "--from-file", "-", "--data", str(data), env=FORCED,
                 stdin="\n".join(lines) + "\n")
    assert len(_ids(barred)) == 150 and "enqueueing to bulk" in barred.stderr
    listed = run("job", "list", "-q", "bulk", "-n", "1000", "--json", "--data", str(data), env=OFF)
    jobs = orjson.loads(listed.stdout)
    assert [j["id"] for j in jobs][:150] == ids  # ids printed in line order
    assert [j["payload"] for j in jobs][:150] == [{"n": i} for i in range(150)]
    as_json = run("job", "enqueue", "-q", "bulk", "--from-file", str(path), "--json", "--data", str(data),
                  env=FORCED)
    assert as_json.exit_code == 0 and as_json.stderr == ""  # --json: no bar even when forced
    assert [orjson.loads(x)["payload"] for x in as_json.stdout.splitlines()] == [{"n": i} for i in range(150)]


def test_bulk_enqueue_refusals(data: Path, tmp_path: Path) -> None:
    bad = run("job", "enqueue", "-q", "bulk", "--from-file", "-", "--data", str(data), env=OFF,
              stdin='{"a": 1}\n{bad\n')
    assert bad.exit_code == 2 and "stdin:2" in bad.stderr
    both = run("job", "enqueue", "-q", "b", "--from-file", "-", "--payload", "1", "--data", str(data), env=OFF)
    assert both.exit_code == 2 and "exactly one of --payload or --from-file" in both.stderr
    dedup = run("job", "enqueue", "-q", "b", "--from-file", "-", "--dedup-id", "x", "--data", str(data), env=OFF)
    assert dedup.exit_code == 2
    big = run("job", "enqueue", "-q", "bulk", "--from-file", "-", "--data", str(data),
              env={**OFF, "HELIOS_JOBS__MAX_PAYLOAD_BYTES": "64"},
              stdin='{"n": 1}\n' + orjson.dumps({"x": "y" * 200}).decode() + "\n")
    assert big.exit_code == 1 and "line 2" in big.stderr and "1 of 2 jobs enqueued" in big.stderr
    assert len(big.stdout.split()) == 1  # the job that went in is reported


def test_snapshot_backup_restore_same_stdout_with_and_without_a_bar(data: Path, tmp_path: Path) -> None:
    def fields(result: Result) -> dict[str, str]:
        assert result.exit_code == 0, (result.output, result.stderr)
        return {line.split()[0]: line.split(None, 1)[1] for line in result.stdout.splitlines()}

    plain = fields(run("snapshot", "--data", str(data), "--output", str(tmp_path / "a.rdb"), env=OFF))
    barred = run("snapshot", "--data", str(data), "--output", str(tmp_path / "b.rdb"), env=FORCED)
    assert fields(barred).keys() == plain.keys() and fields(barred)["keys"] == plain["keys"] == "500"
    assert barred.stderr.count("\x1b[") > 0

    backups = tmp_path / "backups"
    made = run("backup", "--data", str(data), "--to", str(backups), "--json", env=FORCED)
    assert made.exit_code == 0 and made.stderr == "" and orjson.loads(made.stdout)["keys"] == 500
    made = run("backup", "--data", str(data), "--to", str(backups), env=FORCED)
    assert fields(made)["keys"] == "500" and "\x1b[" in made.stderr

    source = orjson.loads(run("backup", "--data", str(data), "--to", str(backups), "--json", env=OFF).stdout)["path"]
    plain_r = run("restore", "--from", source, "--data", str(tmp_path / "r1"), env=OFF)
    barred_r = run("restore", "--from", source, "--data", str(tmp_path / "r2"), env=FORCED)
    assert fields(plain_r)["keys"] == fields(barred_r)["keys"] == "500"
    assert plain_r.stderr == "" and "\x1b[" in barred_r.stderr


def test_aof_check_bar_path(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = run("aof-check", "--data", str(data), env=OFF)
    monkeypatch.setattr(aof_check, "PROGRESS_MIN_BYTES", 0)  # the bar only pays off on big files
    barred = run("aof-check", "--data", str(data), env=FORCED)
    assert plain.exit_code == barred.exit_code == 0, (barred.output, barred.stderr)
    assert barred.stdout == plain.stdout and "\x1b[" in barred.stderr
