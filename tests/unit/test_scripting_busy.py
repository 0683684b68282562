"""The Lua side of the busy state (scripting.py): when the hook calls the busy host, what its
verdict does, and that calling out of the hook near the memory cap cannot take the process down.
The serving itself (busy.py) is tested on a real atlasd: tests/integration/test_busy_script.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from helios_core.atlas.commands.functions import registry_of
from helios_core.atlas.commands.scripting import scripting_of
from helios_core.atlas.scripting import Scripting, ScriptKilled, ScriptKilledByUser
from helios_core.errors import CommandError
from tests.unit.atlas_harness import Atlas

SPIN = "while true do end"


class Host:
    """A busy host that answers `verdict` from its `after`-th call on."""

    def __init__(self, verdict: bytes | None = None, after: int = 1) -> None:
        self.verdict, self.after = verdict, after
        self.calls = 0
        self.seen: list[tuple[str, str, bool]] = []
        self.finished = 0

    def serve(self, script: Scripting) -> bytes | None:
        self.calls += 1
        self.seen.append((script.kind, script.name, script.wrote))
        return self.verdict if self.calls >= self.after else None

    def finish(self, script: Scripting) -> None:
        self.finished += 1


@pytest.fixture
def a(tmp_path: Path) -> Any:
    atlas = Atlas(tmp_path / "data")
    yield atlas
    atlas.engine.close()


def _run(s: Scripting, body: str) -> Any:
    return s.run(s.load(body.encode()), [], [], readonly=False)


def test_with_no_host_a_script_runs_to_its_end_or_the_hard_cap(a: Any) -> None:
    a("CONFIG", "SET", "busy-reply-threshold", "0")  # (an embedded engine: nobody to serve)
    assert a("EVAL", "local i = 0 while i < 3000000 do i = i + 1 end return i", 0) == 3000000
    scripting_of(a.engine).kill_after_ms = 50
    assert "it ran longer than atlas.script_kill_after_ms (50 ms)" in a.error("EVAL", SPIN, 0)


def test_past_the_threshold_the_host_is_called_and_its_verdict_kills(a: Any) -> None:
    s = scripting_of(a.engine)
    s.busy_after_ms = 0
    s.host = host = Host(b"USER", after=3)
    with pytest.raises(ScriptKilledByUser) as e:
        _run(s, "local n = 0\nwhile true do n = n + 1 end")
    sha = s.load(b"local n = 0\nwhile true do n = n + 1 end")
    assert str(e.value) == f"ERR Script killed by user with SCRIPT KILL... script: {sha}, on @user_script:2."
    assert host.calls == 3 and host.finished == 1 and host.seen[0] == ("eval", sha, False)
    # A script that called a write command says so (SCRIPT KILL answers UNKILLABLE then); pcall
    # does not catch the kill.
    s.host = host = Host(b"USER", after=2)
    with pytest.raises(ScriptKilledByUser):
        _run(s, "redis.call('set', 'k', 'v') while true do pcall(function() while true do end end) end")
    assert host.seen[-1][2] is True


def test_a_killed_function_names_its_line_and_shutdown_nosave_is_an_undoing_kill(a: Any) -> None:
    a("FUNCTION", "LOAD", "#!lua name=l\nredis.register_function('f', function()\n  while true do end\nend)")
    s = scripting_of(a.engine)
    s.busy_after_ms = 0
    s.host = Host(b"USER")
    fn = registry_of(a.engine).functions[b"f"]
    with pytest.raises(ScriptKilledByUser, match=r"script: f, on @user_function:3\.$"):
        s.call_function("f", fn.callback, [], [], readonly=False)
    s.host = Host(b"SHUTDOWN")
    with pytest.raises(ScriptKilled, match="SHUTDOWN NOSAVE"):
        s.call_function("f", fn.callback, [], [], readonly=False)


def test_a_host_that_fails_does_not_become_the_scripts_error(a: Any) -> None:
    class Broken(Host):
        def serve(self, script: Scripting) -> bytes | None:
            raise RuntimeError("boom")

    s = scripting_of(a.engine)
    s.busy_after_ms = 0
    s.host = Broken()
    assert _run(s, "local i = 0 while i < 2000000 do i = i + 1 end return i") == 2000000
    with pytest.raises(CommandError, match="user_script:1: x"):
        _run(s, "local i = 0 while i < 2000000 do i = i + 1 end error('x')")


def test_a_script_at_its_memory_cap_in_busy_mode_does_not_take_the_process_down() -> None:
    """Calling out of the hook at the cap, with a verdict that Lua must allocate, hangs or aborts
    the process when the hook does not keep its margin (seen: a hang); with it, the script is
    killed by the hard cap as usual.  In a child process, so a failure cannot take pytest down."""
    code = textwrap.dedent('''
        from helios_core.atlas.scripting import Scripting

        class Host:
            calls = 0
            def serve(self, script):
                Host.calls += 1
                return b"USER" + b"x" * 300 if Host.calls > 300 else None
            def finish(self, script):
                pass

        s = Scripting(lambda argv: None, lambda: 0, kill_after_ms=1500, busy_after_ms=0, max_memory=8 << 20)
        s.host = Host()
        sha = s.load(b"local t = {} pcall(function() while true do t[#t + 1] = string.rep('x', 16) .. #t end end) "
                     b"while true do end")
        try:
            s.run(sha, [], [], readonly=False)
        except Exception as e:
            print(type(e).__name__, e)
    ''')
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert "ScriptKilled" in done.stdout and "script_kill_after_ms" in done.stdout, done.stdout
