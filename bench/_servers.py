"""Loopback HTTP endpoints for the benchmarks: many listening ports served by one asyncio process.

Each port is its own origin (127.0.0.1:port). A healthy port answers any request with
`200 {"status":"ok"}` and closes; a hanging port accepts the connection, reads, and never answers.
The server runs in a separate process (start_fleet) so its CPU does not count against the client.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import resource

BODY = b'{"status":"ok"}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
    len(BODY),
    BODY,
)


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (a round needs ~1 socket per endpoint on each side)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Healthy(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            self.transport.write(RESPONSE)
            self.transport.close()


class Hanging(asyncio.Protocol):
    """Accept, read, never answer: the client's timeout is the only way out."""

    def data_received(self, data):
        pass


async def _serve(groups, conn) -> None:
    loop = asyncio.get_running_loop()
    servers, layout = [], []
    for count, hanging_fraction in groups:
        hanging = set(random.Random(count).sample(range(count), round(count * hanging_fraction)))
        ports = []
        for i in range(count):
            server = await loop.create_server(Hanging if i in hanging else Healthy, "127.0.0.1", 0, backlog=1024)
            servers.append(server)
            ports.append((server.sockets[0].getsockname()[1], i in hanging))
        layout.append(ports)
    conn.send(layout)
    await asyncio.Event().wait()  # until the parent terminates us


def serve(groups, conn) -> None:
    raise_fd_limit()
    asyncio.run(_serve(groups, conn))


def start_fleet(groups: list[tuple[int, float]]):
    """Start the server process; return (process, layout), layout[g] = [(port, hangs), ...] per group."""
    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    process = ctx.Process(target=serve, args=(groups, child_end), daemon=True, name="bench-endpoints")
    process.start()
    if not parent_end.poll(120):
        process.terminate()
        raise RuntimeError("endpoint server did not come up within 120 s")
    return process, parent_end.recv()


def stop_fleet(process) -> None:
    process.terminate()
    process.join(10)
