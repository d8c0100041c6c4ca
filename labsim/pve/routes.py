"""The route table: each PVE API method with the parameters it accepts (checked and typed before
the handler runs), declared next to its handler with ``@route``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from labsim.pve import params as p

# Path variables, typed as PVE's schema types them.
PATH_PARAMS: dict[str, p.Param] = {
    "node": p.string(required=True),
    "vmid": p.VMID,
    "storage": p.string(required=True),
    "upid": p.string(required=True),
    "snapname": p.string(required=True, max_length=40),
    "volume": p.string(required=True),
}


@dataclass(frozen=True)
class Call:
    """One API call as a handler sees it: typed arguments and the caller."""

    args: dict[str, Any]
    user: str


Handler = Callable[[Any, Call], Awaitable[Any]]  # (ProxmoxVE, Call) -> the response's data


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # PVE's path template, e.g. /nodes/{node}/qemu/{vmid}/clone
    params: dict[str, p.Param]
    handler: Handler

    def path_params(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]


ROUTES: list[Route] = []


def route(method: str, path: str, **params: p.Param) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, path, params, handler))
        return handler

    return register


def check(route_: Route, path_values: dict[str, str], values: dict[str, Any]) -> dict[str, Any]:
    """Path variables and parameters of one call, typed; ParamError lists each bad one."""
    spec = {name: PATH_PARAMS[name] for name in route_.path_params()} | route_.params
    return p.validate(spec, {**values, **path_values})
