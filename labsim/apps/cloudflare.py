"""Cloudflare's DNS API (client/v4), as far as a DNS-01 solver uses it: list zones by name, and
create, list and delete TXT records, each call authorised by an API token (``Authorization:
Bearer``). The account holds the lab's token and one zone per registrable domain asked for
(``example.com`` for ``whoami.home.example.com``), as a homelab's Cloudflare account holds its
domain. A TXT record created here is served by pebble-challtestsrv, the DNS server Pebble
validates against, so a wrong token really stops validation.

Answers are Cloudflare's envelopes: ``{"success", "errors": [{"code", "message"}], "result"}``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

# What Cloudflare answers a request whose bearer token it does not know.
INVALID_TOKEN = {"code": 9109, "message": "Invalid access token"}


@dataclass
class Response:
    status: int
    body: dict


@dataclass
class CloudflareAPI:
    token: str  # the lab's API token (secrets.yaml: cloudflare_api_token)
    challtestsrv: str  # management URL of the DNS server the records land in
    records: dict[str, dict] = field(default_factory=dict)  # record id -> record

    def request(self, method: str, uri: str, token: str, body: dict | None = None) -> Response:
        """One API call: ``GET /zones?name=…``, ``POST /zones/{id}/dns_records``,
        ``GET /zones/{id}/dns_records?type=TXT&name=…``, ``DELETE /zones/{id}/dns_records/{rid}``."""
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return _error(403, INVALID_TOKEN)
        path, _, query = uri.partition("?")
        params = dict(urllib.parse.parse_qsl(query))
        parts = path.strip("/").split("/")
        if method == "GET" and parts == ["zones"]:
            return _ok([_zone(params["name"])] if params.get("name", "").count(".") == 1 else [])
        if len(parts) >= 3 and parts[0] == "zones" and parts[2] == "dns_records":
            return self._records(method, parts[1], parts[3] if len(parts) > 3 else None, params, body or {})
        return _error(404, {"code": 7003, "message": "Could not route to " + path + ", perhaps your object "
                                                     "identifier is invalid?"})

    def _records(self, method: str, zone_id: str, record_id: str | None, params: dict, body: dict) -> Response:
        if method == "POST":
            record = {"id": secrets.token_hex(16), "zone_id": zone_id, "type": body.get("type", "TXT"),
                      "name": body["name"], "content": body["content"], "ttl": body.get("ttl", 1)}
            self.records[record["id"]] = record
            self._publish(record["name"])
            return _ok(record)
        if method == "GET":
            return _ok([r for r in self.records.values() if r["zone_id"] == zone_id
                        and r["name"] == params.get("name") and r["type"] == params.get("type", r["type"])])
        if method == "DELETE" and record_id in self.records:
            record = self.records.pop(record_id)
            self._publish(record["name"])
            return _ok({"id": record_id})
        return _error(404, {"code": 81044, "message": "Record does not exist."})

    def _publish(self, name: str) -> None:
        """Put the name's TXT values into challtestsrv (it answers one value per name: the newest)."""
        fqdn = name.rstrip(".") + "."
        values = [r["content"] for r in self.records.values() if r["name"] == name and r["type"] == "TXT"]
        if values:
            _post(f"{self.challtestsrv}/set-txt", {"host": fqdn, "value": values[-1]})
        else:
            _post(f"{self.challtestsrv}/clear-txt", {"host": fqdn})


def _zone(name: str) -> dict:
    zone_id = hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()  # Cloudflare's ids: 32 hex digits
    return {"id": zone_id, "name": name, "status": "active"}


def _ok(result) -> Response:
    return Response(200, {"success": True, "errors": [], "messages": [], "result": result})


def _error(status: int, error: dict) -> Response:
    return Response(status, {"success": False, "errors": [error], "messages": [], "result": None})


def _post(url: str, doc: dict) -> None:
    request = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass
