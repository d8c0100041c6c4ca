"""busybox's `wget`, as plain containers (busybox, alpine) have it: ``-q``, ``-O FILE`` (``-`` is
stdout), ``-T SEC``, ``-U AGENT``, ``-S``, ``--spider``, ``--header``, ``--post-data``,
``--no-check-certificate``; redirects followed. Messages and exit codes are busybox's (every
failure exits 1). It goes through the same network rules as curl (labsim.node.network): a
container reaches its cluster's ClusterIPs and pod IPs by name through the cluster DNS.
busybox's TLS does not check certificates (it says so on stderr). Only plain containers have it:
a node (Ubuntu, GNU wget) answers "command not found"."""

from __future__ import annotations

import asyncio
import posixpath
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import aiohttp

from labsim.node import network
from labsim.node.registry import CommandContext, CommandResult, command

CONNECT_SECONDS = 127  # the kernel's SYN retries give up after this (tcp_syn_retries=6)
DEFAULT_TIMEOUT = 900  # busybox's -T default
MAX_REDIRECTS = 20
_VALUED = {"-O": "output", "-T": "timeout", "-U": "agent", "-P": "prefix", "-Y": "proxy", "-o": "logfile"}
_LONG_VALUED = {"--output-document": "output", "--timeout": "timeout", "--user-agent": "agent",
                "--header": "headers", "--post-data": "data"}
_SWITCHES = {"-q": "quiet", "-c": "continue", "-S": "server_response", "-s": "spider"}
_LONG = {"--quiet": "quiet", "--spider": "spider", "--no-check-certificate": "insecure",
         "--server-response": "server_response", "--continue": "continue"}
USAGE = "BusyBox v1.37.0 (2024-09-26 21:31:42 UTC) multi-call binary.\n\nUsage: wget [-cqS] [--spider] [-O FILE] " \
        "[-o LOGFILE] [--header STR]\n\t[--post-data STR | --post-file FILE] [-Y on/off]\n\t[-P DIR] [-U AGENT] " \
        "[-T SEC] URL...\n\nRetrieve files via HTTP or FTP\n"


class WgetError(Exception):
    pass


@dataclass
class Options:
    urls: list[str] = field(default_factory=list)
    output: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    agent: str = "Wget"
    data: str | None = None
    headers: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)


def parse(argv: list[str]) -> Options:
    opts, args = Options(), iter(argv)
    for arg in args:
        if arg.startswith("--") and arg != "--":
            name, eq, value = arg.partition("=")
            if name in _LONG:
                opts.flags.add(_LONG[name])
            elif name in _LONG_VALUED:
                _set(opts, _LONG_VALUED[name], value if eq else next(args, None))
            else:
                raise WgetError(f"wget: unrecognized option '{arg}'\n{USAGE}")
        elif arg.startswith("-") and len(arg) > 1:
            for i, letter in enumerate(arg[1:], 1):
                flag = f"-{letter}"
                if flag in _SWITCHES:
                    opts.flags.add(_SWITCHES[flag])
                elif flag in _VALUED:  # the rest of the word, or the next argument, is its value
                    _set(opts, _VALUED[flag], arg[i + 1:] or next(args, None))
                    break
                else:
                    raise WgetError(f"wget: invalid option -- '{letter}'\n{USAGE}")
        else:
            opts.urls.append(arg)
    if not opts.urls:
        raise WgetError(USAGE)
    return opts


def _set(opts: Options, name: str, value: str | None) -> None:
    if value is None:
        raise WgetError(USAGE)
    if name == "headers":
        opts.headers.append(value)
    elif name == "timeout":
        try:
            opts.timeout = float(value)
        except ValueError:
            raise WgetError(f"wget: invalid number '{value}'\n") from None
    elif name in ("output", "agent", "data"):
        setattr(opts, name, value)


@command("wget", installed_at="/bin/busybox")
async def wget(ctx: CommandContext) -> CommandResult:
    err: list[str] = []
    try:
        opts = parse(ctx.argv[1:])
        out = b""
        for url in opts.urls:
            out += await _get(ctx, opts, url, err)
    except WgetError as e:
        return CommandResult.fail("".join(err) + str(e))
    return CommandResult(out, "".join(err).encode())


async def _get(ctx: CommandContext, opts: Options, url: str, err: list[str]) -> bytes:
    """One URL: its body for stdout (-O -), else written to its file; progress lines go to ``err``."""
    quiet = "quiet" in opts.flags
    try:
        async with asyncio.timeout(opts.timeout):
            status, reason, headers, body, url = await _fetch(ctx, opts, url, err)
    except TimeoutError:
        raise WgetError("wget: download timed out\n") from None
    if "server_response" in opts.flags:
        err.append(f"  HTTP/1.1 {status} {reason}\n" + "".join(f"  {k}: {v}\n" for k, v in headers.items()))
    if status >= 400:
        raise WgetError(f"wget: server returned error: HTTP/1.1 {status} {reason}\n")
    if "spider" in opts.flags:
        if not quiet:
            err.append("remote file exists\n")
        return b""
    name = opts.output or posixpath.basename(urlsplit(url).path) or "index.html"
    to_stdout = name == "-"
    if not quiet:
        err.append("writing to stdout\n" if to_stdout else f"saving to '{name}'\n")
        err.append(f"{name:<20.20} 100% |{'*' * 32}| {_size(len(body))}  0:00:00 ETA\n")
    if to_stdout:
        if not quiet:
            err.append("written to stdout\n")
        return body
    path = posixpath.join(ctx.cwd, name)
    if opts.output is None and ctx.node.exists(path):  # busybox opens a file it names itself with O_EXCL
        raise WgetError(f"wget: can't open '{name}': File exists\n")
    try:
        ctx.node.write(path, body, user=ctx.user)
    except OSError as exc:
        raise WgetError(f"wget: can't open '{name}': {exc.strerror or exc}\n") from None
    if not quiet:
        err.append(f"'{name}' saved\n")
    return b""


async def _fetch(ctx: CommandContext, opts: Options, url: str, err: list[str]
                 ) -> tuple[int, str, dict[str, str], bytes, str]:
    method = "POST" if opts.data is not None else "GET"
    headers = {"User-Agent": opts.agent, **dict(_header(h) for h in opts.headers)}
    async with aiohttp.ClientSession() as session:
        for _hop in range(MAX_REDIRECTS):
            url = url if "://" in url else f"http://{url}"
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https"):
                raise WgetError(f"wget: not an http or ftp url: {url}\n")
            host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
            address = await _connect_to(ctx, host, port)
            if "quiet" not in opts.flags:
                err.append(f"Connecting to {parts.netloc} ({address}:{port})\n")
            if parts.scheme == "https" and "insecure" not in opts.flags:
                err.append("wget: note: TLS certificate validation not implemented\n")
            target = parts._replace(netloc=f"{address}:{port}").geturl()
            try:
                async with session.request(method, target, data=opts.data, allow_redirects=False, ssl=False,
                                           headers={"Host": parts.netloc, **headers}) as answer:
                    body = await answer.read()
                    status, reason, got = answer.status, answer.reason or "", dict(answer.headers)
            except aiohttp.ClientConnectorError as exc:
                raise WgetError(f"wget: can't connect to remote host ({address}): "
                                f"{(exc.strerror or 'Connection refused').capitalize()}\n") from None
            except aiohttp.ClientError:
                raise WgetError("wget: error getting response: Connection reset by peer\n") from None
            if status in (301, 302, 303, 307, 308) and got.get("Location"):
                url = urljoin(url, got["Location"])
                method = "GET" if status == 303 else method
                continue
            return status, reason, got, body, url
    raise WgetError("wget: too many redirections\n")


async def _connect_to(ctx: CommandContext, host: str, port: int) -> str:
    try:
        return await network.address(ctx.node, host, port)
    except network.NoSuchHost:
        raise WgetError(f"wget: bad address '{host}'\n") from None
    except network.NetworkUnreachable:
        raise WgetError(f"wget: can't connect to remote host ({host}): Network is unreachable\n") from None
    except network.TimedOut as exc:
        await ctx.node.clock.sleep(CONNECT_SECONDS, f"{ctx.node.hostname} wget connect timeout")  # -T, when shorter, ends this first
        raise WgetError(f"wget: can't connect to remote host ({exc}): Connection timed out\n") from None


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip(), value.strip()


def _size(count: int) -> str:
    for unit in ("", "k", "M", "G"):
        if count < 100000 or unit == "G":
            return f"{count:5d}{unit}" if unit else f"{count:5d}"
        count //= 1024
    return str(count)
