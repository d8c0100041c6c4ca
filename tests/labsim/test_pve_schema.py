"""The twin against PVE's own API schema (9.2, a subset kept in data/pve_schema_subset.json,
cut by data/make_pve_schema_subset.py): every route it serves and every parameter it accepts
exist there with the same type and bounds, and what it answers is typed as the schema says."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from proxmoxer import ProxmoxAPI

from labsim.pve import server  # noqa: F401 - registers the routes
from labsim.pve.routes import ROUTES, Route
from tests.labsim.pveclient import wait_task

SCHEMA: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "pve_schema_subset.json").read_text())
PYTHON_TYPES = {"integer": (int,), "boolean": (int,), "string": (str,), "number": (int, float),
                "array": (list,), "object": (dict,)}


def _schema_name(name: str, params: dict[str, Any]) -> str:
    """``ipconfig0`` is ``ipconfig[n]`` in the schema."""
    return name if name in params else re.sub(r"\d+$", "[n]", name)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_route_and_parameters_exist_in_pve_schema(route: Route) -> None:
    key = f"{route.method} {route.path}"
    assert key in SCHEMA, f"{key} is not a PVE API method"
    schema = SCHEMA[key]["params"]
    for name, ours in route.params.items():
        theirs = schema.get(_schema_name(name, schema))
        assert theirs is not None, f"{key}: PVE has no parameter {name}"
        assert ours.type == theirs["type"], f"{key} {name}: {ours.type} != {theirs['type']}"
        if ours.required:
            assert not theirs.get("optional"), f"{key} {name}: optional on PVE"
        for bound, attr in (("minimum", "minimum"), ("maximum", "maximum"), ("maxLength", "max_length")):
            if getattr(ours, attr) is not None:
                assert float(theirs.get(bound)) == float(getattr(ours, attr)), f"{key} {name}: {bound}"
        if ours.enum is not None:
            assert set(ours.enum) == set(theirs["enum"]), f"{key} {name}: enum"


def _check_types(key: str, entry: dict[str, Any]) -> None:
    props = SCHEMA[key]["returns"]["properties"]
    for name, value in entry.items():
        expected = props.get(name)
        if expected is None or value is None:
            continue
        assert isinstance(value, PYTHON_TYPES[expected]), f"{key}: {name}={value!r} is not {expected}"


def test_answers_are_typed_as_the_schema_says(api: ProxmoxAPI) -> None:
    node = api.nodes("pve")
    wait_task(api, node.qemu(9000).clone.post(newid=120, name="k3s-master"))
    node.qemu(120).config.put(cores=2, memory=4096, agent=1, tags="k3s", onboot=1)
    wait_task(api, node.qemu(120).status.start.post())
    _check_types("GET /nodes/{node}/qemu/{vmid}/config", node.qemu(120).config.get())
    _check_types("GET /nodes/{node}/qemu/{vmid}/status/current", node.qemu(120).status.current.get())
    for vm in node.qemu.get():
        _check_types("GET /nodes/{node}/qemu", vm)
    for resource in api.cluster.resources.get():
        _check_types("GET /cluster/resources", resource)
    for entry in api.nodes.get():
        _check_types("GET /nodes", entry)
    for storage in node.storage.get():
        _check_types("GET /nodes/{node}/storage", storage)
    _check_types("GET /nodes/{node}/storage/{storage}/status", node.storage("local-lvm").status.get())
    upid = node.qemu(120).status.stop.post()
    _check_types("GET /nodes/{node}/tasks/{upid}/status", wait_task(api, upid))
    _check_types("GET /version", api.version.get())
