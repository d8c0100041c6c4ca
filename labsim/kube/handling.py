"""What the request handlers beside the REST verbs (watch, subresources, streaming, metrics)
need of the REST handler: the request's Target and a small Handler interface, so that they do
not import ``rest`` (which imports them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from labsim.kube.resources import Resource
from labsim.kube.store import Store

if TYPE_CHECKING:
    from labsim.kube.cluster import Cluster


@dataclass
class Target:
    res: Resource
    namespace: str | None
    name: str | None
    subresource: str | None


class Handler(Protocol):
    cluster: Cluster
    store: Store
    watches: set[Any]  # open subscriptions, ended when the server stops

    async def body(self, request: web.Request, *, optional: bool = False) -> dict: ...

    def manager(self, request: web.Request) -> str: ...

    def versioned(self, obj: dict, res: Resource) -> dict: ...
