"""Decoding the Kubernetes protobuf wire format, for the bodies clients send that way.

client-go clients configured for protobuf (helm's release storage) POST/PUT Secrets and
ConfigMaps, and DELETE with DeleteOptions, as ``k8s\\x00`` + runtime.Unknown{typeMeta, raw}.
They accept JSON answers (their Accept lists application/json too), so only decoding is needed.
Field numbers are those of k8s.io/api/core/v1/generated.proto and apimachinery's meta/v1.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterator

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


def fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs: ints for varints, bytes for length-delimited fields."""
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


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _map_entry(value: bytes, decode_value: Callable = _text) -> tuple[str, object]:
    key, item = "", decode_value(b"")
    for number, part in fields(value):
        if number == 1:
            key = _text(part)
        elif number == 2:
            item = decode_value(part)
    return key, item


def _time(value: bytes) -> str:
    seconds = next((v for n, v in fields(value) if n == 1), 0)
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _owner_reference(value: bytes) -> dict:
    names = {1: "kind", 3: "name", 4: "uid", 5: "apiVersion"}
    out: dict = {}
    for number, part in fields(value):
        if number in names:
            out[names[number]] = _text(part)
        elif number in (6, 7):
            out["controller" if number == 6 else "blockOwnerDeletion"] = bool(part)
    return out


def _object_meta(buf: bytes) -> dict:
    strings = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}
    meta: dict = {}
    for number, value in fields(buf):
        if number in strings:
            meta[strings[number]] = _text(value)
        elif number == 7:
            meta["generation"] = value
        elif number in (8, 9):
            meta["creationTimestamp" if number == 8 else "deletionTimestamp"] = _time(value)
        elif number in (11, 12):
            key, item = _map_entry(value)
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = item
        elif number == 13:
            meta.setdefault("ownerReferences", []).append(_owner_reference(value))
        elif number == 14:
            meta.setdefault("finalizers", []).append(_text(value))
    return meta


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _secret(buf: bytes) -> dict:
    out: dict = {}
    for number, value in fields(buf):
        if number == 1:
            out["metadata"] = _object_meta(value)
        elif number == 2:
            key, item = _map_entry(value, _b64)
            out.setdefault("data", {})[key] = item
        elif number == 3:
            out["type"] = _text(value)
        elif number == 4:
            key, item = _map_entry(value)
            out.setdefault("stringData", {})[key] = item
        elif number == 5:
            out["immutable"] = bool(value)
    return out


def _config_map(buf: bytes) -> dict:
    out: dict = {}
    for number, value in fields(buf):
        if number == 1:
            out["metadata"] = _object_meta(value)
        elif number == 2:
            key, item = _map_entry(value)
            out.setdefault("data", {})[key] = item
        elif number == 3:
            key, item = _map_entry(value, _b64)
            out.setdefault("binaryData", {})[key] = item
        elif number == 4:
            out["immutable"] = bool(value)
    return out


def _delete_options(buf: bytes) -> dict:
    out: dict = {}
    for number, value in fields(buf):
        if number == 1:
            out["gracePeriodSeconds"] = value
        elif number == 2:
            pre = {{1: "uid", 2: "resourceVersion"}[n]: _text(v) for n, v in fields(value) if n in (1, 2)}
            out["preconditions"] = pre
        elif number == 3:
            out["orphanDependents"] = bool(value)
        elif number == 4:
            out["propagationPolicy"] = _text(value)
        elif number == 5:
            out.setdefault("dryRun", []).append(_text(value))
    return out


_DECODERS: dict[str, Callable[[bytes], dict]] = {
    "Secret": _secret, "ConfigMap": _config_map, "DeleteOptions": _delete_options,
}


def decode(raw: bytes) -> dict:
    """A protobuf-encoded object as the JSON the REST layer works with."""
    if not raw.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf envelope")
    api_version = kind = ""
    body = b""
    for number, value in fields(raw[len(MAGIC):]):
        if number == 1:
            for n, v in fields(value):
                if n == 1:
                    api_version = _text(v)
                elif n == 2:
                    kind = _text(v)
        elif number == 2:
            body = value
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise ProtobufError(f"protobuf bodies of kind {kind or '(none)'!r} are not supported; send JSON")
    return {"apiVersion": api_version, "kind": kind, **decoder(body)}
