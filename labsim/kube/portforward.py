"""pods/portforward over WebSocket (``v4.channel.k8s.io`` / ``portforward.k8s.io``, what the
kubernetes Python client's ``portforward`` speaks): two channels per requested port, data 2i
and error 2i+1, each opened by the server with the port number (2 bytes, little endian); a TCP
connection to the pod IP and port carries each data channel. A refused connection is reported
on the port's error channel, as the kubelet does.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSMsgType, web

from labsim.kube.store import StoreError

PROTOCOLS = ("v4.channel.k8s.io", "portforward.k8s.io")
CHUNK = 64 * 1024


def requested_ports(values: list[str]) -> list[int]:
    ports = [p for value in values for p in value.split(",") if p]
    if not ports or not all(p.isdigit() and 0 < int(p) < 65536 for p in ports):
        raise StoreError(400, "BadRequest", "at least one port number in 1-65535 must be given: ports=N")
    return [int(p) for p in ports]


async def serve(request: web.Request, pod: dict) -> web.WebSocketResponse:
    ports = requested_ports(request.query.getall("ports", []))
    pod_ip = (pod.get("status") or {}).get("podIP")
    if not pod_ip:
        raise StoreError(400, "BadRequest", f"pod {pod['metadata']['name']} has no IP address yet")
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
    await ws.prepare(request)
    writers: dict[int, asyncio.StreamWriter] = {}
    pumps = []
    try:
        for index, port in enumerate(ports):
            for channel in (2 * index, 2 * index + 1):
                await ws.send_bytes(bytes([channel]) + port.to_bytes(2, "little"))
            try:
                reader, writer = await asyncio.open_connection(pod_ip, port)
            except OSError as exc:
                message = (f"error forwarding port {port} to pod {pod['metadata']['name']}: failed to connect to "
                           f"{pod_ip}:{port}: {exc.strerror or exc}")
                await ws.send_bytes(bytes([2 * index + 1]) + message.encode())
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
