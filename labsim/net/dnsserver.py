"""DNS on the wire (RFC 1035 over UDP, RFC 7766 over TCP): queries parsed and answers encoded
by dnspython, the answers themselves from a zone (dnszone.ClusterZone).

dnspython rather than a small resolver of our own: name compression, EDNS, truncation and the
SRV/SOA encodings are where hand-written DNS goes wrong, and real resolvers (glibc, musl,
dnspython's own) are strict about them. A UDP answer larger than the client's payload size
(512 bytes, or its EDNS size) goes out truncated with TC set, so the client retries over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct

import dns.exception
import dns.flags
import dns.message
import dns.rcode

log = logging.getLogger("labsim.net.dns")
TCP_IDLE_SECONDS = 10.0


def respond(zone, wire: bytes, max_size: int | None) -> bytes | None:
    """The answer to one query in wire format (None for what is not a query at all)."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return _formerr(wire)
    if query.flags & dns.flags.QR:
        return None
    try:
        response = zone.answer(query)
    except Exception:  # a bug must not silence the cluster's DNS: the client sees SERVFAIL
        log.exception("answering %s failed", query.question)
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
    limit = max_size if max_size is not None else max(query.payload, 512)
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        response.answer.clear(), response.authority.clear(), response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit)


def _formerr(wire: bytes) -> bytes | None:
    if len(wire) < 12:
        return None
    flags = (struct.unpack("!H", wire[2:4])[0] & 0x7900) | 0x8000 | dns.rcode.FORMERR
    return wire[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


class UdpDnsServer(asyncio.DatagramProtocol):
    def __init__(self, zone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    async def listen(self, ip: str, port: int) -> UdpDnsServer:
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, local_addr=(ip, port))
        return self

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        reply = respond(self.zone, data, None)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def close(self, *, connections: bool = False) -> None:
        if self.transport is not None:
            self.transport.close()


class TcpDnsServer:
    """Length-prefixed queries, several per connection, until the client closes or goes idle."""

    def __init__(self, zone) -> None:
        self.zone = zone
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def listen(self, ip: str, port: int) -> TcpDnsServer:
        self._server = await asyncio.start_server(self._serve, ip, port, reuse_address=True)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_SECONDS))[0]
                reply = respond(self.zone, await reader.readexactly(size), 65535)
                if reply is not None:
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, OSError, asyncio.CancelledError):
            pass  # the client is done (or went away), or the server stops
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.transport.abort()

    def close(self, *, connections: bool = False) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks) if connections else []:
            task.cancel()
