"""Validating admission webhooks of modelled apps: a webhook, named as in its chart's
ValidatingWebhookConfiguration, judges objects of one kind in process instead of over HTTPS.
It applies only while such a configuration names it, and like the real API server with
``failurePolicy: Fail``, a write is refused while no Ready pod serves it. Apps register theirs
in ``WEBHOOKS`` (labsim.apps)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from labsim.kube.errors import StoreError
from labsim.kube.resources import Resource

if TYPE_CHECKING:
    from labsim.kube.store import Store


@dataclass(frozen=True)
class Webhook:
    name: str  # as in the ValidatingWebhookConfiguration
    group: str
    kind: str
    pod_labels: dict[str, str]  # the pods that serve it
    service: str  # "namespace/name", for the refusal when none serves
    check: Callable[[Store, dict], str | None]  # the denial message, or None


WEBHOOKS: dict[str, Webhook] = {}


def validate(store: Store, res: Resource, obj: dict) -> None:
    """Raise as the API server does when a webhook denies the object (or cannot be called)."""
    for hook in _configured(store):
        if (res.group, res.kind) != (hook.group, hook.kind):
            continue
        pods = store.list(store.resource("v1", "Pod"), labels=hook.pod_labels)
        if not any(is_ready(p) for p in pods):
            namespace, name = hook.service.split("/")
            raise StoreError(500, "InternalError", f'Internal error occurred: failed calling webhook "{hook.name}": '
                             f'failed to call webhook: Post "https://{name}.{namespace}.svc:443/validate": '
                             f"no endpoints available for service \"{name}\"")
        message = hook.check(store, obj)
        if message is not None:
            raise StoreError(403, "Forbidden", f'admission webhook "{hook.name}" denied the request: {message}')


def is_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _configured(store: Store) -> list[Webhook]:
    configs = store.list(store.resource("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"))
    names = {w.get("name") for c in configs for w in c.get("webhooks") or []}
    return [hook for name, hook in WEBHOOKS.items() if name in names]
