"""`helios job`'s option parsing: payload sources and delays (the commands themselves: tests/integration)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from helios_cli.job import parse_delay, parse_payload


def test_payload_from_text_file_and_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_payload('{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}
    assert parse_payload('"just a string"') == "just a string"
    f = tmp_path / "p.json"
    f.write_bytes('{"name": "Zoë"}'.encode())
    assert parse_payload(f"@{f}") == {"name": "Zoë"}
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"[1, 2]\n")))
    assert parse_payload("-") == [1, 2]


@pytest.mark.parametrize(("text", "where"), [
    ('{"a": 1,}', "line 1, column 8 (char 7)"),
    ("[1, 2", "line 1, column 6 (char 5)"),
    ('{\n  "a": tru\n}', "line 2"),
    ("", "line 1, column 1 (char 0)"),
])
def test_invalid_json_names_the_position(text: str, where: str) -> None:
    with pytest.raises(ValueError, match="not valid JSON") as e:
        parse_payload(text)
    assert where in str(e.value)


def test_invalid_json_in_a_file_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text("{oops}")
    with pytest.raises(ValueError, match=f"not valid JSON in {f}: .* at line 1, column 2"):
        parse_payload(f"@{f}")
    with pytest.raises(ValueError, match="cannot read"):
        parse_payload(f"@{tmp_path / 'nope.json'}")


def test_delays() -> None:
    assert parse_delay("30s") == 30_000
    assert parse_delay("5m") == 300_000
    assert parse_delay("1h30m") == 5_400_000
    assert parse_delay("250ms") == 250
    assert parse_delay("2.5") == 2_500
    assert parse_delay("0") == 0
    for bad in ("soon", "-5", "5 minutes"):
        with pytest.raises(ValueError, match="invalid duration"):
            parse_delay(bad)


def test_a_delayed_job_is_listed_with_when_it_runs() -> None:
    from helios_cli.job import _state_shown

    now = 1_800_000_000_000
    assert _state_shown({"state": "PENDING", "available_ms": now + 3_600_000}, now).startswith("DELAYED until 2027-")
    assert _state_shown({"state": "PENDING", "available_ms": now - 1}, now) == "PENDING"
    assert _state_shown({"state": "DONE", "available_ms": now + 5}, now) == "DONE"
