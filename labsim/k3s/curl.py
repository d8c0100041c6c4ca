"""`curl` on a node. https://get.k3s.io answers with the k3s install script (the embedded lab
has no Internet); any other URL is fetched for real on the loopback lab, so a node reaches the
Kubernetes API or an ingress address as on the real network, and only its lab's addresses
(labsim.node.network: `localhost` is the node itself, there is no DNS). Failures carry curl's
exit codes and messages (6 resolve, 7 connect or unreachable, 22 HTTP error with -f, 60 certificate)."""

from __future__ import annotations

import posixpath
import ssl
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import aiohttp

from labsim.k3s.installer import INSTALL_URLS, SCRIPT
from labsim.node import network
from labsim.node.registry import CommandContext, CommandResult, command

TIMEOUT = 30  # seconds, curl's connect timeout stands in for "the network is down"
CONNECT_SECONDS = 127  # the kernel's SYN retries give up after this (tcp_syn_retries=6)
MAX_REDIRECTS = 50  # curl's default --max-redirs
REDIRECTS = (301, 302, 303, 307, 308)
_VALUED = {"-o": "output", "--output": "output", "-H": "headers", "--header": "headers", "-X": "method",
           "--request": "method", "-d": "data", "--data": "data", "--cacert": "cacert"}
_SWITCHES = {"s": "silent", "S": "show_error", "f": "fail", "L": "location", "k": "insecure", "I": "head"}
_LONG = {"--silent": "silent", "--show-error": "show_error", "--fail": "fail", "--location": "location",
         "--insecure": "insecure", "--head": "head"}


class CurlError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Request:
    url: str = ""
    output: str | None = None
    method: str | None = None
    data: str | None = None
    cacert: str | None = None
    headers: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)


def parse(argv: list[str]) -> Request:
    req, i = Request(), 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUED and i + 1 < len(argv):
            name = _VALUED[arg]
            if name == "headers":
                req.headers.append(argv[i + 1])
            else:
                setattr(req, name, argv[i + 1])
            i += 1
        elif arg in _LONG:
            req.flags.add(_LONG[arg])
        elif arg.startswith("-") and not arg.startswith("--") and all(c in _SWITCHES for c in arg[1:]):
            req.flags.update(_SWITCHES[c] for c in arg[1:])
        elif arg.startswith("-"):
            raise CurlError(2, f"option {arg}: is unknown")
        else:
            req.url = arg
        i += 1
    if not req.url:
        raise CurlError(2, "no URL specified")
    return req


@command("curl")
async def curl(ctx: CommandContext) -> CommandResult:
    try:
        req = parse(ctx.argv[1:])
        body = SCRIPT.encode() if req.url.rstrip("/") in INSTALL_URLS else await fetch(ctx, req)
    except CurlError as e:
        return CommandResult.fail("" if _quiet(ctx.argv) else f"curl: ({e.code}) {e}\n", e.code)
    if not req.output:
        return CommandResult.ok(body)
    try:
        ctx.node.write(posixpath.join(ctx.cwd, req.output), body, user=ctx.user)
    except OSError:
        return CommandResult.fail(f"curl: (23) Failure writing output to destination, passed {len(body)} returned 0\n", 23)
    return CommandResult.ok()


def _quiet(argv: list[str]) -> bool:
    """-s without -S hides curl's error message."""
    try:
        flags = parse(argv[1:]).flags
    except CurlError:
        return False
    return "silent" in flags and "show_error" not in flags


async def fetch(ctx: CommandContext, req: Request) -> bytes:
    """The body (or, with -I, the head) of the URL; with -L, redirects are followed, each hop
    fenced to the lab's network as the first one."""
    url = req.url if "://" in req.url else f"http://{req.url}"
    method = req.method or ("HEAD" if "head" in req.flags else "POST" if req.data is not None else "GET")
    data = req.data
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        for _hop in range(MAX_REDIRECTS + 1):
            response = await _request(ctx, session, req, url, method, data)
            location = response.headers.get("Location")
            if "location" not in req.flags or response.status not in REDIRECTS or not location:
                break
            url = urljoin(url, location)
            if response.status in (301, 302, 303) and method == "POST":
                method, data = "GET", None  # as curl does
        else:
            raise CurlError(47, f"Maximum ({MAX_REDIRECTS}) redirects followed")
    if "fail" in req.flags and response.status >= 400:
        raise CurlError(22, f"The requested URL returned error: {response.status}")
    if "head" in req.flags:
        lines = [f"HTTP/1.1 {response.status} {response.reason}", *(f"{k}: {v}" for k, v in response.headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()
    return response.body


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


async def _request(ctx: CommandContext, session: aiohttp.ClientSession, req: Request, url: str,
                   method: str, data: str | None) -> Response:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise CurlError(1, f'Protocol "{parts.scheme}" not supported or disabled in libcurl')
    try:
        name, port = parts.hostname or "", parts.port or _port(parts.scheme)
    except ValueError:
        raise CurlError(3, "URL using bad/illegal format or missing URL") from None
    address = await _resolve(ctx.node, name, port)
    headers = {k.strip(): v.strip() for k, v in (h.split(":", 1) for h in req.headers if ":" in h)}
    if name != address:
        headers.setdefault("Host", parts.netloc.rpartition("@")[2])
    target = parts._replace(netloc=f"{address}:{port}").geturl()
    try:
        async with session.request(method, target, data=data, headers=headers, ssl=_tls(ctx, req),
                                   allow_redirects=False) as response:
            return Response(response.status, response.reason or "", dict(response.headers), await response.read())
    except aiohttp.ClientConnectorCertificateError as e:
        raise CurlError(60, f"SSL certificate problem: {e.certificate_error.verify_message}") from e
    except aiohttp.ClientConnectorError as e:
        raise CurlError(7, f"Failed to connect to {name} port {port} after 0 ms: Couldn't connect to server") from e
    except aiohttp.ClientError as e:
        raise CurlError(56, "Recv failure: Connection reset by peer") from e
    except TimeoutError as e:
        raise CurlError(28, f"Connection timed out after {TIMEOUT * 1000} milliseconds") from e


async def _resolve(node, name: str, port: int) -> str:
    try:
        return await network.address(node, name, port)
    except network.TimedOut:
        await node.clock.sleep(CONNECT_SECONDS, f"{node.hostname} curl connect timeout")
        raise CurlError(28, f"Failed to connect to {name} port {port} after {CONNECT_SECONDS * 1000} ms: "
                            "Couldn't connect to server") from None
    except network.NoSuchHost:
        raise CurlError(6, f"Could not resolve host: {name}") from None
    except network.NetworkUnreachable:
        raise CurlError(7, f"Failed to connect to {name} port {port} after 0 ms: Network is unreachable") from None


def _tls(ctx: CommandContext, req: Request) -> ssl.SSLContext | bool:
    if "insecure" in req.flags:
        return False
    context = ssl.create_default_context()
    if req.cacert:
        try:
            context.load_verify_locations(cadata=ctx.node.read(posixpath.join(ctx.cwd, req.cacert), ctx.user).decode())
        except OSError as e:
            raise CurlError(77, f"error setting certificate file: {req.cacert}") from e
    return context


def _port(scheme: str) -> int:
    return 443 if scheme == "https" else 80
