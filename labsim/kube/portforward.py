"""pods/portforward over WebSocket, in its two forms:

- ``SPDY/3.1+portforward.k8s.io`` (kubectl 1.31+): SPDY tunnelled in the WebSocket; per local
  connection kubectl opens an error and a data stream (headers streamtype, port, requestID);
- ``v4.channel.k8s.io`` / ``portforward.k8s.io`` (the kubernetes Python client's
  ``portforward``): two channels per requested port, data 2i and error 2i+1, each opened by the
  server with the port number (2 bytes, little endian).

Each data stream or channel is a TCP connection to the pod IP and port; a refused connection is
reported on the error stream, worded as the kubelet words it.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSMsgType, web

from labsim.kube import spdy
from labsim.kube.store import StoreError

SPDY_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
PROTOCOLS = (SPDY_PROTOCOL, "v4.channel.k8s.io", "portforward.k8s.io")
CHUNK = 64 * 1024


def require_websocket(request: web.Request) -> None:
    """SPDY upgrades (kubectl's fallback) are refused: both kubectl versions speak WebSocket."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise StoreError(400, "BadRequest", "Upgrade request required (labsim serves exec, attach and port-forward "
                         "over WebSocket only)")


def requested_ports(values: list[str]) -> list[int]:
    ports = [p for value in values for p in value.split(",") if p]
    if not ports or not all(p.isdigit() and 0 < int(p) < 65536 for p in ports):
        raise StoreError(400, "BadRequest", "at least one port number in 1-65535 must be given: ports=N")
    return [int(p) for p in ports]


async def serve(request: web.Request, pod: dict) -> web.WebSocketResponse:
    pod_ip = (pod.get("status") or {}).get("podIP")
    if not pod_ip:
        raise StoreError(400, "BadRequest", f"pod {pod['metadata']['name']} has no IP address yet")
    require_websocket(request)
    spdy_wanted = SPDY_PROTOCOL in request.headers.get("Sec-WebSocket-Protocol", "")
    ports = [] if spdy_wanted else requested_ports(request.query.getall("ports", []))
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
    await ws.prepare(request)
    if ws.ws_protocol == SPDY_PROTOCOL:
        await SpdyForward(ws, pod, pod_ip).run()
        return ws
    writers: dict[int, asyncio.StreamWriter] = {}
    pumps = []
    try:
        for index, port in enumerate(ports):
            for channel in (2 * index, 2 * index + 1):
                await ws.send_bytes(bytes([channel]) + port.to_bytes(2, "little"))
            try:
                reader, writer = await asyncio.open_connection(pod_ip, port)
            except OSError as exc:
                await ws.send_bytes(bytes([2 * index + 1]) + _refused(pod, pod_ip, port, exc).encode())
                continue
            writers[2 * index] = writer
            pumps.append(asyncio.create_task(_to_client(ws, reader, 2 * index)))
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or len(msg.data) < 1:
                continue
            writer = writers.get(msg.data[0])
            if writer is not None and len(msg.data) > 1:
                writer.write(msg.data[1:])
                await writer.drain()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        for task in pumps:
            task.cancel()
        for writer in writers.values():
            writer.close()
        with contextlib.suppress(Exception):
            await ws.close()
    return ws


async def _to_client(ws: web.WebSocketResponse, reader: asyncio.StreamReader, channel: int) -> None:
    while data := await reader.read(CHUNK):
        await ws.send_bytes(bytes([channel]) + data)


def _refused(pod: dict, pod_ip: str, port: int, exc: OSError) -> str:
    return (f"error forwarding port {port} to pod {pod['metadata']['uid']}, uid : failed to connect to "
            f"{pod_ip}:{port}: {exc.strerror or exc}")


class SpdyForward:
    """One kubectl port-forward session: SPDY streams in, TCP connections to the pod out."""

    def __init__(self, ws: web.WebSocketResponse, pod: dict, pod_ip: str) -> None:
        self.ws, self.pod, self.pod_ip = ws, pod, pod_ip
        self.codec = spdy.Codec()
        self.error_streams: dict[str, int] = {}  # requestID -> its error stream
        self.writers: dict[int, asyncio.StreamWriter] = {}  # data stream -> connection to the pod
        self.pumps: set[asyncio.Task] = set()

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.BINARY:
                    for frame in self.codec.feed(msg.data):
                        await self.on_frame(frame)
        except (ConnectionResetError, asyncio.CancelledError, spdy.SpdyError):
            pass
        finally:
            for task in self.pumps:
                task.cancel()
            for writer in self.writers.values():
                writer.close()
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def on_frame(self, frame: spdy.Frame) -> None:
        if not frame.control:
            writer = self.writers.get(frame.stream)
            if writer is not None and frame.data:
                writer.write(frame.data)
                await writer.drain()
            if writer is not None and frame.flags & spdy.FLAG_FIN and writer.can_write_eof():
                writer.write_eof()
        elif frame.kind == spdy.SYN_STREAM:
            await self.ws.send_bytes(self.codec.syn_reply(frame.stream, {}))
            await self.open_stream(frame.stream, frame.headers or {})
        elif frame.kind == spdy.PING:
            await self.ws.send_bytes(self.codec.ping(frame.data))
        elif frame.kind == spdy.RST_STREAM and (writer := self.writers.pop(frame.stream, None)):
            writer.close()
        elif frame.kind == spdy.GOAWAY:
            await self.ws.close()

    async def open_stream(self, stream: int, headers: dict[str, str]) -> None:
        request = headers.get("requestid", "")
        if headers.get("streamtype") == "error":
            self.error_streams[request] = stream
            return
        port = int(headers.get("port", "0") or 0)
        try:
            reader, writer = await asyncio.open_connection(self.pod_ip, port)
        except OSError as exc:
            error = self.error_streams.get(request)
            if error is not None:
                await self.ws.send_bytes(self.codec.data(error, _refused(self.pod, self.pod_ip, port, exc).encode(),
                                                         fin=True))
            await self.ws.send_bytes(self.codec.data(stream, b"", fin=True))
            return
        self.writers[stream] = writer
        task = asyncio.create_task(self.pump(reader, stream))
        self.pumps.add(task)
        task.add_done_callback(self.pumps.discard)

    async def pump(self, reader: asyncio.StreamReader, stream: int) -> None:
        while data := await reader.read(CHUNK):
            await self.ws.send_bytes(self.codec.data(stream, data))
        await self.ws.send_bytes(self.codec.data(stream, b"", fin=True))
