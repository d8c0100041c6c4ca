"""Kubernetes protobuf (placeholder until the codec lands)."""

from __future__ import annotations

from aiohttp import web

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    pass


def wanted(request: web.Request) -> bool:
    return False


def can_encode(obj: dict) -> bool:
    return False


def decode(raw: bytes) -> dict:
    raise ProtobufError("protobuf bodies are not supported yet")


def encode(obj: dict) -> bytes:
    raise ProtobufError("protobuf is not supported yet")
