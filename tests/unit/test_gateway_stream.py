"""The gateway's server stream (gateway/stream.py) keeps the fd's read interest where Tornado (6.6)
drops it and takes it again around a request with a body; it must read, answer and notice a close
exactly as Tornado's IOStream does.  Both run side by side through the same steps over real
sockets: what each read, its state as Tornado would have it, and whether it is closed."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError

from helios_core.gateway.stream import ServerStream

PUT = b"PUT /api/v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
READ = IOLoop.READ


def _tornado_state(s: IOStream) -> Any:
    """The state Tornado's stream would have: ours without the READ it only keeps."""
    if isinstance(s, ServerStream) and s._kept_read:
        return (s._state or 0) & ~READ
    return s._state


async def _run(cls: type[IOStream], steps: list[tuple[str, Any]]) -> list[Any]:
    server_sock, client = socket.socketpair()
    stream = IOStream(server_sock)
    if cls is ServerStream:
        stream.__class__ = ServerStream
    closed: list[bool] = []
    log: list[Any] = []
    updates = [0]
    loop = stream.io_loop
    real_update = loop.update_handler

    def counting(fd: Any, events: int) -> None:
        updates[0] += 1
        real_update(fd, events)

    loop.update_handler = counting  # type: ignore[method-assign]
    try:
        for op, arg in steps:
            if op == "send":
                client.sendall(arg)
            elif op == "shut":
                client.shutdown(socket.SHUT_WR)
            elif op == "await_head":  # the head read waits for the client, as on an idle keep-alive connection
                pending = asyncio.ensure_future(stream.read_until_regex(b"\r?\n\r?\n"))
                await asyncio.sleep(0.01)
                client.sendall(arg)
                log.append(await asyncio.wait_for(pending, 2))
            elif op == "head":
                log.append(await asyncio.wait_for(stream.read_until_regex(b"\r?\n\r?\n"), 2))
            elif op == "body":
                log.append(await asyncio.wait_for(stream.read_bytes(arg), 2))
            elif op == "close_cb":
                stream.set_close_callback(lambda: closed.append(True))
            elif op == "clear_cb":
                stream.set_close_callback(None)
            elif op == "write":
                try:
                    await stream.write(arg)
                    log.append(client.recv(65536))
                except StreamClosedError:
                    log.append("write: closed")
            elif op == "settle":
                for _ in range(5):
                    await asyncio.sleep(0.01)
            log.append((op, _tornado_state(stream), stream._read_buffer_size, stream.closed(), list(closed)))
    finally:
        loop.update_handler = real_update  # type: ignore[method-assign]
        stream.close()
        client.close()
    return [log, updates[0]]


def _both(steps: list[tuple[str, Any]]) -> tuple[list[Any], list[Any]]:
    async def main() -> tuple[list[Any], list[Any]]:
        return await _run(IOStream, steps), await _run(ServerStream, steps)

    return asyncio.run(main())


KEEP_ALIVE_PUT = [("clear_cb", None), ("await_head", PUT), ("settle", None), ("body", 5),
                  ("close_cb", None), ("write", b"HTTP/1.1 201 Created\r\n\r\n"), ("clear_cb", None)]


def test_a_keep_alive_put_reads_the_same_and_makes_no_epoll_changes() -> None:
    steps = KEEP_ALIVE_PUT * 3
    (tornado_log, tornado_updates), (ours_log, ours_updates) = _both(steps)
    assert ours_log == tornado_log
    # Tornado drops READ after each head (the body waits in its buffer) and takes it again: ours keeps it.
    assert tornado_updates >= 6
    assert ours_updates < tornado_updates


def test_pipelined_data_is_not_read_while_nobody_reads() -> None:
    # The next request (and more) arrives while the body waits in the buffer: Tornado is not listening
    # and reads none of it until asked; ours, told of it, reads nothing either and stops listening.
    steps = [("clear_cb", None), ("await_head", PUT), ("settle", None), ("send", PUT * 3),
             ("settle", None), ("body", 5), ("close_cb", None), ("settle", None),
             ("write", b"HTTP/1.1 201 Created\r\n\r\n"), ("clear_cb", None), ("head", None), ("body", 5),
             ("head", None), ("settle", None), ("body", 5)]
    tornado, ours = _both(steps)
    assert ours[0] == tornado[0]


def test_a_client_closing_while_its_body_waits_is_noticed_as_tornado_notices_it() -> None:
    for after in ([("settle", None), ("body", 5), ("close_cb", None), ("settle", None),
                   ("write", b"HTTP/1.1 201 Created\r\n\r\n")],
                  [("close_cb", None), ("settle", None), ("body", 5), ("settle", None)]):
        steps = [("clear_cb", None), ("await_head", PUT), ("settle", None), ("shut", None), *after]
        tornado, ours = _both(steps)
        assert ours[0] == tornado[0]
