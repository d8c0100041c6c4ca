"""kube-controller-manager's token controller: a ``kubernetes.io/service-account-token`` Secret
annotated with its ServiceAccount's name gets a long-lived token, ``ca.crt`` and ``namespace``
(the legacy tokens the API server still accepts while the Secret and its account exist)."""

from __future__ import annotations

import base64

from labsim.kube import tokens
from labsim.kube.controllers.workqueue import Controller, Key

SA_TOKEN = "kubernetes.io/service-account-token"
NAME = "kubernetes.io/service-account.name"
UID = "kubernetes.io/service-account.uid"


class TokenController(Controller):
    name = "serviceaccount-token-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.secrets = self.res("v1", "Secret")
        self.accounts = self.res("v1", "ServiceAccount")

    def watches(self):
        def secret(event_type: str, obj: dict) -> list[Key]:
            return [(obj["metadata"]["namespace"], obj["metadata"]["name"])] if obj.get("type") == SA_TOKEN else []

        return [(self.secrets, secret)]

    async def reconcile(self, key: Key) -> None:
        namespace, name = key
        secret = self.store.get(self.secrets, namespace, name)
        if secret is None or secret.get("type") != SA_TOKEN:
            return
        meta = secret["metadata"]
        annotations = meta.setdefault("annotations", {})
        account = self.store.get(self.accounts, namespace, annotations.get(NAME, ""))
        if account is None or tokens.secret_token(secret):
            return
        uid = account["metadata"]["uid"]
        annotations[UID] = uid
        token = tokens.issue_legacy(self.cluster.token, namespace, annotations[NAME], uid, name)
        secret["data"] = {**(secret.get("data") or {}), "token": _b64(token.encode()),
                          "ca.crt": _b64(self.cluster.ca_pem()), "namespace": _b64(namespace.encode())}
        self.store.update(secret)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
