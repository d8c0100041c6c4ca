"""Forwarding one front address to backends picked per connection (TCP) or per client (UDP), as
kube-proxy's userspace mode did. ``pick`` returns a backend (ip, port) or None (then the client's
connection is reset); it is asked at each new connection, so endpoint changes apply at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

Backend = tuple[str, int]
Pick = Callable[[], Backend | None]
CHUNK = 256 * 1024
UDP_IDLE_SECONDS = 30.0  # a UDP "connection" (client -> backend mapping) ends after this much silence


class TcpForwarder:
    """Accepts on one address and splices each connection to a backend; tracks its connections so
    that stopping ends them too."""

    def __init__(self, pick: Pick) -> None:
        self.pick = pick
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def listen(self, ip: str, port: int) -> TcpForwarder:
        self._server = await asyncio.start_server(self._accept, ip, port, reuse_address=True, backlog=256)
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass  # the proxy stopped: this connection's task ends here, its sockets are closed
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = self.pick()
        up_writer = None
        try:  # however it ends (no backend, a dead one, the proxy stopping), the client sees it end
            if backend is None:
                return
            up_reader, up_writer = await asyncio.open_connection(*backend, limit=CHUNK)
            _nodelay(writer), _nodelay(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except OSError:
            pass  # the backend refused or reset: the client gets a reset too
        finally:
            writer.transport.abort()
            if up_writer is not None:
                up_writer.transport.abort()

    def close(self, *, connections: bool = False) -> None:
        """Stop listening; with ``connections``, end the open ones too (the proxy stops). Without,
        they live on, as conntrack keeps an established flow after its rule is gone."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks) if connections else []:
            task.cancel()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close: the other direction may still be talking
    except OSError:
        writer.transport.abort()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class UdpForwarder(asyncio.DatagramProtocol):
    """Receives datagrams on one address; each client gets its own socket towards a backend, and
    the backend's replies go back to the client from the front address."""

    def __init__(self, pick: Pick) -> None:
        self.pick = pick
        self.transport: asyncio.DatagramTransport | None = None
        self._clients: dict[tuple, _Upstream] = {}

    async def listen(self, ip: str, port: int) -> UdpForwarder:
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, local_addr=(ip, port))
        return self

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        upstream = self._clients.get(addr)
        if upstream is not None and not upstream.closed:
            upstream.send(data)
            return
        backend = self.pick()
        if backend is not None:
            asyncio.get_running_loop().create_task(self._open(addr, backend, data))

    async def _open(self, client, backend: Backend, first: bytes) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            _, upstream = await loop.create_datagram_endpoint(
                lambda: _Upstream(self, client), remote_addr=backend)
            self._clients[client] = upstream
            upstream.send(first)

    def reply(self, client, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, client)

    def forget(self, client) -> None:
        self._clients.pop(client, None)

    def close(self, *, connections: bool = False) -> None:
        """Stop listening; the clients' upstream sockets go too (replies leave from the front)."""
        for upstream in list(self._clients.values()):
            upstream.close()
        if self.transport is not None:
            self.transport.close()


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, front: UdpForwarder, client) -> None:
        self.front, self.client = front, client
        self.transport: asyncio.DatagramTransport | None = None
        self.closed = False
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._touch()

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.sendto(data)
            self._touch()

    def datagram_received(self, data: bytes, addr) -> None:
        self.front.reply(self.client, data)
        self._touch()

    def error_received(self, exc: Exception) -> None:
        self.close()  # the backend refused (nothing listens there): the next datagram picks again

    def _touch(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(UDP_IDLE_SECONDS, self.close)

    def close(self) -> None:
        self.closed = True
        if self._idle is not None:
            self._idle.cancel()
        if self.transport is not None:
            self.transport.close()
        self.front.forget(self.client)
