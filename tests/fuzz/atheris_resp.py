"""Coverage-guided fuzzing of the RESP and JSON-lines request parsers with atheris (libFuzzer).

Run by `make fuzz` only (not a pytest module):

    .venv/bin/python tests/fuzz/atheris_resp.py -max_total_time=60 [CORPUS_DIR]

Checks what tests/fuzz/test_resp_fuzz.py checks, with coverage feedback
instead of random generation: the parsers never raise, and the same bytes
give the same commands and error however they are cut into reads.  A crash
writes the input to crash-<sha1>; keep it as an @example in the hypothesis
tests.
"""

from __future__ import annotations

import sys

import atheris

# Their dependencies (the command table and everything it imports) first, uninstrumented: instrumenting
# all of it takes minutes and only the two parsers are under test.
import helios_core.atlas.commands.table  # noqa: F401, I001
import helios_core.atlas.commands.zsets  # noqa: F401

# The command package imported resp on the way: import it again, instrumented, under the same name.
sys.modules.pop("helios_core.atlas.resp", None)
with atheris.instrument_imports(include=["helios_core.atlas.resp", "helios_core.atlas.jsonlines"],
                                enable_loader_override=False):
    from helios_core.atlas.jsonlines import JsonLinesParser
    from helios_core.atlas.resp import RespParser, split_inline


def feed_all(parser: RespParser | JsonLinesParser, pieces: list[bytes]) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    for piece in pieces:
        out += parser.feed(piece)
    return out


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    cut, body = data[0] % (len(data) - 1) + 1, data[1:]
    pieces = [body[:cut], body[cut:]]

    whole = RespParser()
    got = whole.feed(body)
    split = RespParser()
    if feed_all(split, pieces) != got or split.error != whole.error:
        raise AssertionError(f"RESP: cutting at {cut} changes the result of {body!r}")

    j_whole, j_split = JsonLinesParser(), JsonLinesParser()
    a, b = j_whole.feed(body), feed_all(j_split, pieces)
    if [type(x) for x in a] != [type(x) for x in b] or j_whole.error != j_split.error:
        raise AssertionError(f"JSON lines: cutting at {cut} changes the result of {body!r}")

    split_inline(body[:200])


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
