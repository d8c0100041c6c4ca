"""SPDY/3.1 framing, as much as kubectl's port-forward needs: kubectl 1.31+ tunnels SPDY through
a WebSocket (subprotocol ``SPDY/3.1+portforward.k8s.io``), each binary message a piece of the
SPDY byte stream. Control frames SYN_STREAM, SYN_REPLY, RST_STREAM, PING, GOAWAY; data frames
with FIN. Header blocks are zlib streams (one per direction) with the SPDY/3 dictionary.
Flow control (WINDOW_UPDATE) is not enforced by Go's spdystream, so none is sent.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
VERSION = 3

_NAMES = [*["options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection", "content-base", "content-encoding", "content-language", "content-length", "content-location", "content-md5", "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location", "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning", "www-authenticate", "method", "get", "status"], "200 OK",
    *["version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 "
    "Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 "
    "Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May "
    "Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
# The SPDY/3 header-compression dictionary (draft 3, section 2.6.10.1), as Go's spdystream has it.
DICTIONARY = b"".join(struct.pack("!I", len(n)) + n.encode() for n in _NAMES) + _TAIL.encode()
DICTIONARY_SHA256 = "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
assert hashlib.sha256(DICTIONARY).hexdigest() == DICTIONARY_SHA256, "the SPDY/3 dictionary drifted"


class SpdyError(Exception):
    pass


@dataclass
class Frame:
    control: bool
    kind: int  # control frame type, or 0 for data
    flags: int
    stream: int
    data: bytes
    headers: dict[str, str] | None = None


class Codec:
    """Frames from a byte stream (``feed``/``frames``) and frames to bytes (``syn_reply``...)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zdict=DICTIONARY)

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= 8:
            length = int.from_bytes(self._buffer[5:8], "big")
            if len(self._buffer) < 8 + length:
                break
            head, body = bytes(self._buffer[:8]), bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            frames.append(self._frame(head, body))
        return frames

    def _frame(self, head: bytes, body: bytes) -> Frame:
        flags = head[4]
        if not head[0] & 0x80:
            return Frame(False, 0, flags, int.from_bytes(head[:4], "big") & 0x7FFFFFFF, body)
        kind = int.from_bytes(head[2:4], "big")
        stream = int.from_bytes(body[:4], "big") & 0x7FFFFFFF if len(body) >= 4 else 0
        frame = Frame(True, kind, flags, stream, body)
        if kind == SYN_STREAM:
            frame.headers = self._headers(body[10:])
        elif kind in (SYN_REPLY, HEADERS):
            frame.headers = self._headers(body[4:])
        return frame

    def _headers(self, block: bytes) -> dict[str, str]:
        raw = self._inflate.decompress(block)
        count, pos, out = int.from_bytes(raw[:4], "big"), 4, {}
        for _ in range(count):
            size = int.from_bytes(raw[pos:pos + 4], "big")
            name = raw[pos + 4:pos + 4 + size].decode()
            pos += 4 + size
            size = int.from_bytes(raw[pos:pos + 4], "big")
            out[name] = raw[pos + 4:pos + 4 + size].decode()
            pos += 4 + size
        return out

    def _block(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack("!I", len(headers)) + b"".join(
            struct.pack("!I", len(k)) + k.encode() + struct.pack("!I", len(v)) + v.encode() for k, v in headers.items())
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def control(kind: int, flags: int, body: bytes) -> bytes:
        return struct.pack("!HHB", 0x8000 | VERSION, kind, flags) + len(body).to_bytes(3, "big") + body

    def syn_reply(self, stream: int, headers: dict[str, str], *, fin: bool = False) -> bytes:
        return self.control(SYN_REPLY, FLAG_FIN if fin else 0, struct.pack("!I", stream) + self._block(headers))

    @staticmethod
    def data(stream: int, payload: bytes, *, fin: bool = False) -> bytes:
        return struct.pack("!IB", stream, FLAG_FIN if fin else 0) + len(payload).to_bytes(3, "big") + payload

    def ping(self, body: bytes) -> bytes:
        return self.control(PING, 0, body)

    def rst(self, stream: int, status: int = 5) -> bytes:  # 5: CANCEL
        return self.control(RST_STREAM, 0, struct.pack("!II", stream, status))
