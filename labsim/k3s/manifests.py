"""k3s' deploy controller: every YAML/JSON file in `/var/lib/rancher/k3s/server/manifests/`
(subfolders too) is applied to the cluster and recorded as an `Addon` (kube-system, named after
the file) with the file's checksum; a changed file is applied again, a file with a `.skip` file
beside it is left alone, and removing a file leaves what it deployed in place, as in k3s. The
server scans the folder while it runs (k3s watches it), so manifests dropped there by an
operator deploy within a moment."""

from __future__ import annotations

import asyncio
import hashlib
import posixpath

import yaml

from labsim.k3s.config import DATA_DIR
from labsim.k3s.logs import Logger
from labsim.kube.store import StoreError

MANIFESTS_DIR = f"{DATA_DIR}/server/manifests"
NAMESPACE = "kube-system"
SCAN_SECONDS = 0.5  # real seconds between scans of the folder
_SUFFIXES = (".yaml", ".yml", ".json")


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def addon(path: str, text: str) -> dict:
    """The `Addon` k3s keeps for a manifest file."""
    name = posixpath.basename(path).rsplit(".", 1)[0]
    return {"apiVersion": "k3s.cattle.io/v1", "kind": "Addon", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"source": path, "checksum": checksum(text)}}


class ManifestError(ValueError):
    pass


async def apply_text(cluster, path: str, text: str) -> None:
    """Apply every document of a manifest file, then record its Addon."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as e:
        raise ManifestError(f"yaml: {e}") from e
    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("apiVersion"):
            raise ManifestError("Object 'Kind' is missing in the document")
        await cluster.apply_manifest(doc)
    await cluster.apply_manifest(addon(path, text))


async def delete_if_present(cluster, obj: dict) -> None:
    try:
        await cluster.delete_manifest(obj)
    except StoreError as e:
        if e.code != 404:
            raise


class ManifestWatcher:
    """Applies new and changed manifest files while the server runs."""

    name = "deploy"

    def __init__(self, node, cluster) -> None:
        self.node, self.cluster = node, cluster
        self.log = Logger(cluster.clock, node, "k3s")
        self._failed: set[tuple[str, str]] = set()  # (path, checksum) already reported

    async def run(self) -> None:
        while True:
            await self.scan()
            await asyncio.sleep(SCAN_SECONDS)

    async def scan(self) -> None:
        for path in self._files(MANIFESTS_DIR):
            text = self.node.read(path).decode(errors="replace")
            if self.node.exists(f"{path}.skip") or self._applied(path, text) or (path, checksum(text)) in self._failed:
                continue
            try:
                await apply_text(self.cluster, path, text)
            except (ManifestError, StoreError) as e:
                self._failed.add((path, checksum(text)))
                self.log.log("error", f"Failed to process config: failed to process {path}: {e}")
                continue
            self.log.info(f"Applied manifest {path}")

    def _applied(self, path: str, text: str) -> bool:
        res = self.cluster.store.resource("k3s.cattle.io/v1", "Addon")
        record = self.cluster.store.get(res, NAMESPACE, addon(path, text)["metadata"]["name"])
        return record is not None and record["spec"].get("checksum") == checksum(text)

    def _files(self, folder: str) -> list[str]:
        if not self.node.is_dir(folder):
            return []
        found = []
        for name in self.node.listdir(folder):
            path = f"{folder}/{name}"
            if self.node.is_dir(path):
                found += self._files(path)
            elif name.endswith(_SUFFIXES):
                found.append(path)
        return found
