"""k3s' node passwords: each node keeps a random password in /etc/rancher/node/password and the
server remembers its hash in the Secret `<node>.node-password.k3s` (kube-system). A node that
comes back under the same name with another password (reinstalled, or a second machine with the
same hostname) is rejected until its Node is deleted, which deletes the Secret too."""

from __future__ import annotations

import base64
import hashlib
import secrets

from labsim.kube.controllers.workqueue import Controller, Key

PASSWORD_FILE = "/etc/rancher/node/password"
NAMESPACE = "kube-system"
REJECTED = ("Node password rejected, duplicate hostname or contents of '/etc/rancher/node/password' may not "
            "match server node-passwd entry, try enabling a unique node name with the --with-node-id flag")


def secret_name(node_name: str) -> str:
    return f"{node_name}.node-password.k3s"


def local_password(node) -> str:
    """The node's password, made on its first start."""
    if not node.is_file(PASSWORD_FILE):
        node.mkdir("/etc/rancher/node", mode=0o700)
        node.write(PASSWORD_FILE, (secrets.token_hex(16) + "\n").encode(), mode=0o600)
    return node.read(PASSWORD_FILE).decode().strip()


def _hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def verify(cluster, node_name: str, password: str) -> bool:
    """Check a joining node's password against the server's record; the first join records it."""
    res = cluster.store.resource("v1", "Secret")
    stored = cluster.store.get(res, NAMESPACE, secret_name(node_name))
    if stored is None:
        cluster.store.create({"apiVersion": "v1", "kind": "Secret", "type": "k3s.cattle.io/node-password",
                              "metadata": {"name": secret_name(node_name), "namespace": NAMESPACE},
                              "data": {"hash": base64.b64encode(_hash(password).encode()).decode()}})
        return True
    recorded = base64.b64decode((stored.get("data") or {}).get("hash", "")).decode()
    return secrets.compare_digest(recorded, _hash(password))


class NodePasswordCleaner(Controller):
    """Deleting a Node deletes its node-password Secret, so the name can join again."""

    name = "node-password-cleaner"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.nodes = self.res("v1", "Node")
        self.secrets = self.res("v1", "Secret")

    def watches(self):
        return [(self.nodes, lambda event_type, node: [(None, node["metadata"]["name"])]),
                (self.secrets, _secret_node)]

    async def reconcile(self, key: Key) -> None:
        if self.store.get(self.nodes, None, key[1]) is None and \
                self.store.get(self.secrets, NAMESPACE, secret_name(key[1])) is not None:
            self.store.delete(self.secrets, NAMESPACE, secret_name(key[1]))


def _secret_node(event_type: str, secret: dict) -> list[Key]:
    name = secret["metadata"]["name"]
    suffix = secret_name("")
    return [(None, name[:-len(suffix)])] if name.endswith(suffix) and secret["metadata"].get("namespace") == NAMESPACE \
        else []
