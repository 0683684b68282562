from __future__ import annotations

import io
import re
from datetime import datetime

import orjson
import pytest
from loguru import logger

from helios_core.observability.logging import get_logger, setup_logging

pytestmark = pytest.mark.usefixtures("restore_logging")


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_fixed_and_bound_fields() -> None:
    out = io.StringIO()
    setup_logging("debug", "json", stream=out)
    get_logger("atlas").bind(db=0).info("loaded {n} keys", n=3, path="/data/aof")
    (line,) = json_lines(out)
    assert line["level"] == "info"
    assert line["component"] == "atlas"
    assert line["message"] == "loaded 3 keys"
    assert line["db"] == 0
    assert line["n"] == 3
    assert line["path"] == "/data/aof"
    assert "exception" not in line
    stamp = datetime.fromisoformat(str(line["time"]))
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_json_without_component_says_helios() -> None:
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    logger.info("plain")
    assert json_lines(out)[0]["component"] == "helios"


def test_json_level_names_and_threshold() -> None:
    out = io.StringIO()
    setup_logging("warn", "json", stream=out)
    log = get_logger("t")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    assert [line["level"] for line in json_lines(out)] == ["warn", "error", "fatal"]


def test_json_exception_text() -> None:
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("t").exception("failed")
    (line,) = json_lines(out)
    assert line["level"] == "error"
    assert "RuntimeError: boom" in str(line["exception"])


def test_console_line_format() -> None:
    out = io.StringIO()  # not a TTY: no colour codes
    setup_logging("info", "console", stream=out)
    get_logger("gateway").warning("slow request", path="/v1/x", ms=12)
    text = out.getvalue()
    assert "\x1b[" not in text
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} WARN  gateway slow request path=/v1/x ms=12\n", text)


def test_console_colour_on_a_tty() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    setup_logging("info", "console", stream=out)
    logger.info("hello")
    assert "\x1b[" in out.getvalue() and "helios" in out.getvalue()


def test_setup_replaces_previous_handlers() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("info", "json", stream=first)
    setup_logging("info", "json", stream=second)
    logger.info("once")
    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


def test_rejects_unknown_level() -> None:
    with pytest.raises(ValueError, match="warn"):
        setup_logging("warning")


# -- secrets and control characters (issue 10, 9b) -------------------------------------------

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_never_reach_a_line(fmt: str) -> None:
    out = io.StringIO()
    setup_logging("info", fmt, stream=out)
    log = get_logger("gateway")
    log.info(f"malformed header line (Invalid header value 'Bearer {JWT}\\x01')", reason=f"Bearer {JWT}")
    log.info("refused", header=f"Cookie: session={JWT}", other="Authorization: Basic dXNlcjpwYXNz",
             quoted="Invalid header value 'session=opaque-cookie-value'", query="refresh_token=r1-secret")
    text = out.getvalue()
    for secret in ("eyJzdWIiOiJ4In0", "c2lnbmF0dXJl", "dXNlcjpwYXNz", "opaque-cookie-value", "r1-secret"):
        assert secret not in text, (secret, text)
    assert text.count("[redacted]") >= 5


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_control_characters_are_escaped(fmt: str) -> None:
    out = io.StringIO()
    setup_logging("info", fmt, stream=out)
    get_logger("gateway").info("path\r\nFAKE line", path="/a\nFAKE\x1b[31m\u2028x", n=1)
    text = out.getvalue()
    assert len(text.splitlines()) == 1 and "\x1b" not in text and "\u2028" not in text and "\r" not in text
    if fmt == "json":
        line = json_lines(out)[0]
        assert line["path"] == "/a\\x0aFAKE\\x1b[31m\\u2028x" and line["n"] == 1


def test_access_log_escapes_and_scrubs() -> None:
    from helios_core.gateway.accesslog import AccessLog

    out = io.StringIO()
    access = AccessLog("info", "console", stream=lambda: out)
    access.write({"path": "/kv/a\x1b[2J\nFAKE", "user": "alice", "client": f"Bearer {JWT}"})
    text = out.getvalue()
    assert len(text.splitlines()) == 1 and "\x1b" not in text and "eyJzdWIiOiJ4In0" not in text
    assert "user=alice" in text
