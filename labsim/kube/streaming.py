"""pods/exec and pods/attach over WebSocket, as the API server proxies them from the kubelet.

The channel protocols kubectl (1.30+) and the kubernetes Python client speak: ``v5.channel.k8s.io``
(and ``v4``): each binary message starts with its channel byte, 0 stdin, 1 stdout, 2 stderr,
3 the final Status (``NonZeroExitCode`` with the code as a cause), 4 terminal resizes; v5 adds
255, "close this channel" (the client's end of stdin). SPDY is not served: both kubectl versions
use WebSocket for exec, attach and cp.

Commands run to completion before their output is sent (the node shell model buffers), except
an interactive terminal (``-it sh``), which runs one line at a time with the echo a pty gives.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import WSMsgType, web

from labsim.kube import portforward
from labsim.kube.handling import Handler, Target
from labsim.kube.store import StoreError
from labsim.node.registry import CommandResult
from labsim.node.shell import Shell

SUBRESOURCES = ("exec", "attach", "portforward")
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
CHUNK = 32 * 1024
_INTERACTIVE = {"sh", "bash", "ash", "/bin/sh", "/bin/bash", "/bin/ash"}


async def handle(handler: Handler, request: web.Request, target: Target) -> web.StreamResponse:
    store = handler.store
    pod = store.get(target.res, target.namespace, target.name or "")
    if pod is None:
        raise StoreError.not_found(target.res, target.name or "")
    if target.subresource == "portforward":
        return await portforward.serve(request, pod)
    q = request.query
    container = _container(pod, q.get("container"))
    argv = q.getall("command", [])
    if target.subresource == "exec" and not argv:
        raise StoreError(400, "BadRequest", "you must specify at least 1 command")
    state = next((s.get("state") or {} for s in (pod.get("status") or {}).get("containerStatuses") or []
                  if s.get("name") == container["name"]), {})
    if "running" not in state:
        raise StoreError(400, "BadRequest", f'unable to upgrade connection: container not found ("{container["name"]}")')
    portforward.require_websocket(request)
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0, autoping=True)
    await ws.prepare(request)
    session = Session(ws, tty=q.get("tty") in ("true", "1"))
    runtime = handler.cluster.runtime
    wants_stdin = q.get("stdin") in ("true", "1")
    try:
        if target.subresource == "exec" and wants_stdin and session.tty and argv[-1] in _INTERACTIVE:
            await session.interactive(runtime.shell(pod, container))
            return ws
        # A terminal's typing into an attached process is not modelled: it ran without input (kubectl run -it).
        typed = target.subresource == "attach" and session.tty
        stdin = await session.read_stdin() if wants_stdin and not typed else b""
        if typed:
            result = await _attached(session, runtime.attach(pod, container, None))
            if result is None:
                return ws
        elif target.subresource == "exec":
            result = await runtime.exec(pod, container, argv, stdin)
        else:
            result = await runtime.attach(pod, container, stdin if wants_stdin else None)
            if result is None:  # the image's entrypoint: nothing to say until the client leaves
                await session.drain()
                return ws
        # An attach ends with Success whatever the exit code: clients read it from the pod's status.
        await session.finish(result, argv, report_code=target.subresource == "exec")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        await ws.close()
    return ws


async def _attached(session: Session, attach) -> CommandResult | None:
    """What the attached process wrote until it ended, the client's input read and dropped
    meanwhile; None when the client left first."""
    drain = asyncio.ensure_future(session.drain())
    result = asyncio.ensure_future(attach)
    await asyncio.wait({drain, result}, return_when=asyncio.FIRST_COMPLETED)
    if not result.done():
        result.cancel()
        return None
    if result.result() is None:  # the image's entrypoint: nothing to say until the client leaves
        await drain
        return None
    drain.cancel()
    return result.result()


def _container(pod: dict, name: str | None) -> dict:
    containers = pod["spec"].get("containers") or []
    pod_name = pod["metadata"]["name"]
    if not name:
        if len(containers) != 1:
            raise StoreError(400, "BadRequest", f"a container name must be specified for pod {pod_name}, choose one "
                             f"of: [{' '.join(c['name'] for c in containers)}]")
        return containers[0]
    found = next((c for c in containers if c["name"] == name), None)
    if found is None:
        raise StoreError(400, "BadRequest", f"container {name} is not valid for pod {pod_name}")
    return found


def exit_status(code: int, argv: list[str]) -> dict:
    """The Status sent on the error channel when a command ends."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: error executing command {argv}, exit code {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


class Session:
    def __init__(self, ws: web.WebSocketResponse, *, tty: bool) -> None:
        self.ws, self.tty = ws, tty

    async def send(self, channel: int, data: bytes) -> None:
        for start in range(0, len(data), CHUNK):
            await self.ws.send_bytes(bytes([channel]) + data[start:start + CHUNK])

    async def read_stdin(self) -> bytes:
        """Standard input until the client closes it (v5) or the connection."""
        data = bytearray()
        async for chunk in self._stdin():
            data += chunk
        return bytes(data)

    async def _stdin(self):
        async for msg in self.ws:
            # kubectl sends binary frames; the Python client text frames (a "\x00" prefix, UTF-8 data).
            data = msg.data.encode() if msg.type == WSMsgType.TEXT else msg.data
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT) or not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == CLOSE and payload[:1] == bytes([STDIN]):
                return
            if channel == STDIN:
                yield payload

    async def drain(self) -> None:
        async for _ in self._stdin():
            pass

    async def finish(self, result: CommandResult, argv: list[str], *, report_code: bool) -> None:
        if self.tty:
            await self.send(STDOUT, (result.stdout + result.stderr).replace(b"\n", b"\r\n"))
        else:
            await self.send(STDOUT, result.stdout)
            await self.send(STDERR, result.stderr)
        code = result.exit_status if report_code else 0
        await self.send(ERROR, json.dumps(exit_status(code, argv)).encode())

    async def interactive(self, shell: Shell) -> None:
        """A terminal on a shell: echo what is typed, run each line on Enter, until exit or ^D."""
        prompt = f"{shell.cwd} # ".encode()
        line = bytearray()
        await self.send(STDOUT, prompt)
        async for chunk in self._stdin():
            for byte in chunk:
                if byte in (0x7F, 0x08):
                    if line:
                        line.pop()
                        await self.send(STDOUT, b"\b \b")
                elif byte == 0x03:
                    line.clear()
                    await self.send(STDOUT, b"^C\r\n" + prompt)
                elif byte == 0x04 and not line:
                    await self.send(STDOUT, b"\r\n")
                    return await self.send(ERROR, json.dumps(exit_status(0, [])).encode())
                elif byte in (0x0D, 0x0A):
                    await self.send(STDOUT, b"\r\n")
                    result = await shell.run(line.decode(errors="replace"))
                    line.clear()
                    await self.send(STDOUT, (result.stdout + result.stderr).replace(b"\n", b"\r\n"))
                    if shell.exited:
                        return await self.send(ERROR, json.dumps(exit_status(shell.status, ["sh"])).encode())
                    prompt = f"{shell.cwd} # ".encode()
                    await self.send(STDOUT, prompt)
                else:
                    line.append(byte)
                    await self.send(STDOUT, bytes([byte]))
