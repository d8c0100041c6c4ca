"""/openapi/v2: the Swagger 2.0 document of every kind, as JSON or as the gnostic protobuf
(openapi_v2.Document) kubectl asks for. kubectl validates a ``kind: List`` against it (its
items' kinds are found by ``x-kubernetes-group-version-kind``), as it cannot with /openapi/v3.

The definitions are the v3 components (labsim.kube.openapi) in v2 form: ``#/definitions/`` refs,
a lone ``allOf`` ref as a plain ``$ref``, IntOrString and Quantity as v2 publishes them."""

from __future__ import annotations

import struct

import yaml

from labsim.kube import openapi, schemas
from labsim.kube.resources import Catalog

PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_V2_SPECIAL = {schemas.INT_OR_STRING: {"description": schemas.SPECIAL[schemas.INT_OR_STRING]["description"],
                                       "type": "string", "format": "int-or-string"},
               schemas.QUANTITY: {"description": schemas.SPECIAL[schemas.QUANTITY]["description"], "type": "string"}}


def document(catalog: Catalog, server_version: str) -> dict:
    definitions: dict[str, dict] = {}
    kinds: dict[str, dict] = {}
    for group, versions in catalog.groups().items():
        for version in versions:
            doc = openapi.group_version_doc(catalog, group, version, server_version) or {}
            for name, schema in doc.get("components", {}).get("schemas", {}).items():
                converted = _V2_SPECIAL.get(name) or _v2(schema)
                if "x-kubernetes-group-version-kind" in schema and name in kinds:  # one schema, several GVKs
                    gvks = kinds[name]["x-kubernetes-group-version-kind"]
                    converted["x-kubernetes-group-version-kind"] = gvks + [
                        g for g in schema["x-kubernetes-group-version-kind"] if g not in gvks]
                if "x-kubernetes-group-version-kind" in converted:
                    kinds[name] = converted
                definitions[name] = converted
    return {"swagger": "2.0", "info": {"title": "Kubernetes", "version": server_version}, "paths": {},
            "definitions": dict(sorted(definitions.items()))}


def _v2(schema: dict) -> dict:
    if isinstance(schema.get("$ref"), str):
        return {"$ref": schema["$ref"].replace("#/components/schemas/", "#/definitions/")}
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and "$ref" in all_of[0] and "properties" not in schema:
        return _v2(all_of[0])
    out = {}
    for key, value in schema.items():
        if key in ("nullable", "oneOf", "anyOf", "not"):
            continue
        if key == "properties" and isinstance(value, dict):
            value = {name: _v2(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = _v2(value)
        elif key == "allOf" and isinstance(value, list):
            value = [_v2(sub) for sub in value]
        out[key] = value
    return out


# -- the gnostic protobuf encoding (field numbers of openapi_v2's OpenAPIv2.proto) -----------
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _text(number: int, value: str) -> bytes:
    return _field(number, value.encode())


def _number(number: int, value: int | bool) -> bytes:
    return _varint(number << 3) + _varint(int(value))


def _double(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + struct.pack("<d", float(value))


def _any(value) -> bytes:
    return _text(2, yaml.safe_dump(value, default_flow_style=False))


def _named(number: int, name: str, payload: bytes) -> bytes:
    return _field(number, _text(1, name) + _field(2, payload))


_TEXTS = {"$ref": 1, "format": 2, "title": 3, "description": 4, "pattern": 13}
_INTS = {"maxLength": 11, "minLength": 12, "maxItems": 14, "minItems": 15, "maxProperties": 17,
         "minProperties": 18}
_BOOLS = {"exclusiveMaximum": 8, "exclusiveMinimum": 10, "uniqueItems": 16, "readOnly": 27}
_DOUBLES = {"multipleOf": 6, "maximum": 7, "minimum": 9}


def _schema(schema: dict) -> bytes:
    out = bytearray()
    for key, value in schema.items():
        if key in _TEXTS:
            out += _text(_TEXTS[key], value)
        elif key in _INTS:
            out += _number(_INTS[key], value)
        elif key in _BOOLS:
            out += _number(_BOOLS[key], value)
        elif key in _DOUBLES:
            out += _double(_DOUBLES[key], value)
        elif key in ("default", "example"):
            out += _field(5 if key == "default" else 30, _any(value))
        elif key == "required":
            out += b"".join(_text(19, v) for v in value)
        elif key == "enum":
            out += b"".join(_field(20, _any(v)) for v in value)
        elif key == "additionalProperties":
            out += _field(21, _field(1, _schema(value)) if isinstance(value, dict) else _number(2, value))
        elif key == "type":
            out += _field(22, b"".join(_text(1, t) for t in ([value] if isinstance(value, str) else value)))
        elif key == "items" and isinstance(value, dict):
            out += _field(23, _field(1, _schema(value)))
        elif key == "allOf":
            out += b"".join(_field(24, _schema(s)) for s in value)
        elif key == "properties":
            out += _field(25, b"".join(_named(1, name, _schema(s)) for name, s in value.items()))
        elif key.startswith("x-"):
            out += _named(31, key, _any(value))
    return bytes(out)


def encode(doc: dict) -> bytes:
    info = _text(1, doc["info"]["title"]) + _text(2, doc["info"]["version"])
    definitions = b"".join(_named(1, name, _schema(s)) for name, s in doc["definitions"].items())
    return _text(1, doc["swagger"]) + _field(2, info) + _field(8, b"") + _field(9, definitions)
