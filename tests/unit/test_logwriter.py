"""The one log writer: loguru's lines and the access logs' lines, one shape, in order, on one stream."""

from __future__ import annotations

import asyncio
import io
import os
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from helios_core.observability.accesslog import AccessLog
from helios_core.observability.logging import get_logger, setup_logging
from helios_core.observability.logwriter import WRITER, LogWriter

pytestmark = pytest.mark.usefixtures("restore_logging", "restore_writer")


@pytest.fixture
def restore_writer() -> Iterator[None]:
    """The process's writer back on stderr with the defaults, as `restore_logging` puts loguru back."""
    yield
    WRITER.flush()
    WRITER.set_stream(None)
    WRITER.fmt, WRITER.level = "console", "info"

FIELDS: dict[str, Any] = {"request_id": "r1", "method": "GET", "path": "/api/v1/kv/x", "status": 200,
                          "duration_ms": 1.25, "user": None, "client": "127.0.0.1"}


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in out.getvalue().splitlines()]


def test_access_lines_and_loguru_lines_share_the_stream_in_order() -> None:
    out = CountingStream()
    setup_logging("info", "json", stream=out)
    access = AccessLog("gateway.access")  # the process's writer, format and level
    log = get_logger("gateway")

    async def main() -> int:
        access.write({**FIELDS, "request_id": "a"})
        access.write({**FIELDS, "request_id": "b"})
        written_before = out.writes  # batched: nothing written yet in this pass
        log.info("between", n=1)  # written at once, after the two waiting lines
        access.write({**FIELDS, "request_id": "c"})
        access.write({**FIELDS, "request_id": "d"})
        await asyncio.sleep(0)  # the pass ends: c and d go out in one write
        return written_before

    assert asyncio.run(main()) == 0
    got = lines(out)
    assert [x.get("request_id", x["message"]) for x in got] == ["a", "b", "between", "c", "d"]
    assert out.writes == 2
    for x in got:
        assert list(x)[:4] == ["time", "level", "component", "message"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", x["time"])
    assert got[0]["component"] == "gateway.access" and got[0]["message"] == "request" and got[0]["level"] == "info"
    assert got[2] == {"time": got[2]["time"], "level": "info", "component": "gateway", "message": "between", "n": 1}


def test_console_shape_is_the_same_for_both_paths() -> None:
    out = io.StringIO()
    setup_logging("info", "console", stream=out)
    get_logger("proxy").info("reloaded", version="v2", path="/a b")
    AccessLog("proxy.access").write({"status": 502, "path": "/a b", "backend": None})
    first, second = out.getvalue().splitlines()
    assert re.fullmatch(r'\d\d:\d\d:\d\d\.\d{3} INFO  proxy reloaded version=v2 path="/a b"', first), first
    assert re.fullmatch(r'\d\d:\d\d:\d\d\.\d{3} INFO  proxy\.access request status=502 path="/a b" backend=None',
                        second), second


def test_a_field_named_like_a_fixed_key_is_kept_aside_on_both_paths() -> None:
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    get_logger("c").info("m", message="field", level=3)
    AccessLog("c.access").write({"message": "field", "time": 0})
    loguru_line, access_line = lines(out)
    assert loguru_line["message"] == "m" and loguru_line["extra_message"] == "field" and loguru_line["extra_level"] == 3
    assert access_line["message"] == "request" and access_line["extra_message"] == "field"
    assert access_line["extra_time"] == 0


def test_access_log_follows_the_process_level_unless_given_one() -> None:
    out = io.StringIO()
    setup_logging("warn", "json", stream=out)
    AccessLog("proxy.access").write(FIELDS)
    assert out.getvalue() == ""
    AccessLog("gateway.access", "info", "json").write(FIELDS)  # the gateway passes log.level itself
    assert lines(out)[0]["request_id"] == "r1"


def test_secrets_in_an_access_line_are_scrubbed_even_in_plain_ascii() -> None:
    out = io.StringIO()
    AccessLog("proxy.access", "info", "json", stream=out).write(
        {"path": "/x?access_token=s3cret&password=hunter2", "client": "127.0.0.1", "error": "Bearer abc.def",
         "raw": b"\x1b[2Jboom", "plain": "/api/v1/kv/key"})
    (line,) = lines(out)
    assert "s3cret" not in out.getvalue() and "hunter2" not in out.getvalue() and "abc.def" not in out.getvalue()
    assert line["raw"] == "\\x1b[2Jboom" and line["plain"] == "/api/v1/kv/key"


def test_without_a_loop_a_line_is_written_at_once() -> None:
    out = CountingStream()
    w = LogWriter(out)
    w.write_batched("one\n")
    w.write_batched("two\n")
    assert out.getvalue() == "one\ntwo\n" and out.writes == 2


def test_lines_left_by_a_closed_loop_go_out_with_the_next_write_or_the_next_loop() -> None:
    out = io.StringIO()
    w = LogWriter(out)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(_batch(w, "left\n"))  # scheduled a flush, then the loop ends without running it
    loop.close()
    pending = out.getvalue()
    w.write("next\n")
    assert pending in ("", "left\n") and out.getvalue() == "left\nnext\n"

    loop = asyncio.new_event_loop()
    loop.run_until_complete(_batch(w, "again\n"))
    loop.close()
    asyncio.run(_batch(w, "new loop\n", settle=True))  # a new loop schedules its own flush
    assert out.getvalue() == "left\nnext\nagain\nnew loop\n"


async def _batch(w: LogWriter, line: str, settle: bool = False) -> None:
    w.write_batched(line)
    if settle:
        await asyncio.sleep(0)


def test_a_broken_stream_never_raises() -> None:
    out = io.StringIO()
    out.close()
    w = LogWriter(out)
    w.write("x\n")
    w.write_batched("y\n")
    w.flush()


def test_a_forked_child_starts_with_an_empty_buffer() -> None:
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    read_end, write_end = os.pipe()

    async def main() -> None:
        WRITER.write_batched("parent's line\n")
        pid = os.fork()
        if pid == 0:  # the child: report what it would write, and leave at once
            os.write(write_end, str(len(WRITER._pending)).encode())  # noqa: SLF001
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0

    asyncio.run(main())
    os.close(write_end)
    with os.fdopen(read_end) as r:
        assert r.read() == "0"
    assert out.getvalue() == "parent's line\n"


def test_loguru_lines_from_threads_keep_whole_lines() -> None:
    import threading

    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    log = get_logger("t")

    def burst(n: int) -> None:
        for i in range(200):
            log.info("line", thread=n, i=i)

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = lines(out)
    assert len(got) == 800
    for n in range(4):
        assert [x["i"] for x in got if x["thread"] == n] == list(range(200))
