"""Decoding the Kubernetes protobuf wire format, for the bodies clients send that way.

client-go clients configured for protobuf (kubectl's typed clients: `create deployment`,
`create namespace`, `auth can-i`...; helm's release storage) send ``k8s\\x00`` +
runtime.Unknown{typeMeta, raw} with raw the object's message. They accept JSON answers (their
Accept lists application/json too), so only decoding is needed. Messages are read with the field
tables of ``protobuf_types``; a field labsim does not know is an error (415), never dropped.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator

from labsim.kube.protobuf_types import MESSAGES, Field

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def wire_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs: ints for varints and fixed fields, bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        yield number, value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _ints(value: int | bytes) -> list[int]:
    """A varint, or a packed run of them."""
    if isinstance(value, int):
        return [_signed(value)]
    out, pos = [], 0
    while pos < len(value):
        item, pos = _varint(value, pos)
        out.append(_signed(item))
    return out


def _time(buf: bytes) -> str | None:
    parts = dict(wire_fields(buf))
    seconds = _signed(int(parts.get(1, 0)))
    if not seconds:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _intstr(buf: bytes) -> int | str:
    parts = dict(wire_fields(buf))
    if parts.get(1, 0) == 1:
        return bytes(parts.get(3, b"")).decode()
    return _signed(int(parts.get(2, 0)))


def _value(type_: str, raw: int | bytes):
    if type_ == "int":
        return _ints(raw)[0]
    if type_ == "bool":
        return bool(raw)
    if not isinstance(raw, bytes):
        raise ProtobufError(f"expected a length-delimited {type_}")
    if type_ == "string":
        return raw.decode()
    if type_ == "bytes":
        return base64.b64encode(raw).decode()
    if type_ == "time":
        return _time(raw)
    if type_ == "quantity":
        return bytes(dict(wire_fields(raw)).get(1, b"")).decode()
    if type_ == "intstr":
        return _intstr(raw)
    if type_ == "fields":
        return json.loads(bytes(dict(wire_fields(raw)).get(1, b"{}")))
    if type_.startswith("map<"):
        entry = dict(wire_fields(raw))
        return bytes(entry.get(1, b"")).decode(), _value(type_[4:-1], entry.get(2, b"" if type_ != "map<int>" else 0))
    return message(type_, raw)


def _zero(value) -> bool:
    return value in ("", 0, False, None) and not isinstance(value, dict)


def message(type_name: str, buf: bytes) -> dict:
    """One message as the JSON object the API would carry."""
    fields = MESSAGES.get(type_name)
    if fields is None:
        raise ProtobufError(f"labsim cannot decode protobuf messages of type {type_name}; send JSON")
    out: dict = {}
    for number, raw in wire_fields(buf):
        field: Field | None = fields.get(number)
        if field is None or field.type == "unsupported":
            raise ProtobufError(f"labsim cannot decode field {number} of protobuf message {type_name}; send JSON")
        if field.type == "ignored":
            continue
        if field.repeated and field.type == "int":
            out.setdefault(field.name, []).extend(_ints(raw))
            continue
        value = _value(field.type, raw)
        if field.name == "-":
            out.update(value)
        elif field.type.startswith("map<"):
            out.setdefault(field.name, {})[value[0]] = value[1]
        elif field.repeated:
            out.setdefault(field.name, []).append(value)
        elif field.keep_zero or not _zero(value):
            out[field.name] = value
    return out


def decode(raw: bytes) -> dict:
    """A protobuf-encoded object (the k8s envelope) as JSON."""
    if not raw.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf envelope")
    envelope = dict(wire_fields(raw[len(MAGIC):]))
    type_meta = message("TypeMeta", bytes(envelope.get(1, b"")))
    kind = type_meta.get("kind", "")
    if kind not in MESSAGES:
        raise ProtobufError(f"labsim cannot decode protobuf bodies of kind {kind or '(none)'!r}; send JSON")
    return {**type_meta, **message(kind, bytes(envelope.get(2, b"")))}
