"""kiwigrid's k8s-sidecar (image ``quay.io/kiwigrid/k8s-sidecar``), which the grafana chart runs
beside Grafana: it lists the ConfigMaps (and/or Secrets) carrying the label ``LABEL`` (with value
``LABEL_VALUE`` if set) in ``NAMESPACE`` (``ALL``, a comma list, or the pod's own) through the API
with the pod's ServiceAccount, writes each data key as a file into ``FOLDER`` (a volume Grafana
reads) and removes the files of objects gone; ``REQ_URL`` is POSTed after a change (Grafana's
provisioning reload). It lists every ``SLEEP_TIME`` seconds (the image's LIST/SLEEP methods;
the WATCH method is modelled by the same loop)."""

from __future__ import annotations

import base64
import os
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from labsim.apps import incluster, serve

INTERVAL = 2.0  # seconds between lists (the image's default SLEEP_TIME is 60; the twin is quicker)


def objects() -> list[tuple[str, dict[str, str]]]:
    """(object name, its files) of every labelled ConfigMap/Secret the sidecar watches."""
    label, wanted = os.environ.get("LABEL", ""), os.environ.get("LABEL_VALUE")
    selector = urllib.parse.quote(f"{label}={wanted}" if wanted else label)
    namespaces = os.environ.get("NAMESPACE", "") or Path(incluster.SA_DIR / "namespace").read_text().strip()
    resource = os.environ.get("RESOURCE", "configmap")
    kinds = ("configmaps", "secrets") if resource == "both" else (resource + "s",)
    found = []
    for kind in kinds:
        for ns in [None] if namespaces == "ALL" else namespaces.split(","):
            where = f"/api/v1/namespaces/{ns}/{kind}" if ns else f"/api/v1/{kind}"
            for item in incluster.api_get(f"{where}?labelSelector={selector}").get("items") or []:
                data = dict(item.get("data") or {})
                if kind == "secrets":
                    data = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
                found.append((f"{item['metadata']['namespace']}/{item['metadata']['name']}", data))
    return found


def sync(folder: Path) -> bool:
    """Make ``folder`` hold exactly the watched objects' files; True when something changed."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {key: text for _, data in objects() for key, text in data.items()}
    changed = False
    for path in folder.iterdir():
        if path.is_file() and path.name not in wanted:
            path.unlink()
            print(f"Removing {path.name}", flush=True)
            changed = True
    for key, text in wanted.items():
        path = folder / key
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"Writing {path.name}", flush=True)
            changed = True
    return changed


def _basic_auth() -> dict[str, str]:
    user, password = os.environ.get("REQ_USERNAME"), os.environ.get("REQ_PASSWORD", "")
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()} if user else {}


def main() -> None:
    pod_ip = serve.options().host  # the sidecar serves nothing; Grafana listens on the pod IP, not localhost
    folder = Path(os.environ.get("FOLDER", "/tmp/sidecar").lstrip("/"))
    reload_url = os.environ.get("REQ_URL")
    print(f"Starting collector, watching label {os.environ.get('LABEL')} into {folder}", flush=True)
    while True:
        try:
            if sync(folder) and reload_url:
                url = incluster.resolve_url(reload_url.replace("//localhost:", f"//{pod_ip}:"))
                request = urllib.request.Request(url, method="POST", data=b"",
                                                 headers=_basic_auth())
                urllib.request.urlopen(request, timeout=5).close()
        except OSError as error:  # the API or Grafana not answering yet: try again next round
            print(f"sync failed: {error}", file=sys.stderr, flush=True)
        time.sleep(INTERVAL)


if __name__ == "__main__":
    main()
