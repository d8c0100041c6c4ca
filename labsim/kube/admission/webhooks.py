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
    check: Callable[[Store, dict], str | None]  # the denial message, or None


WEBHOOKS: dict[str, Webhook] = {}


def validate(store: Store, res: Resource, obj: dict) -> None:
    """Raise as the API server does when a webhook denies the object (or cannot be called)."""
    if not any((res.group, res.kind) == (hook.group, hook.kind) for hook in WEBHOOKS.values()):
        return  # the common case: no modelled webhook judges this kind
    for hook, service in _configured(store):
        if (res.group, res.kind) != (hook.group, hook.kind):
            continue
        pods = store.list(store.resource("v1", "Pod"), labels=hook.pod_labels)
        if not any(is_ready(p) for p in pods):
            name, url = service.get("name", ""), f'https://{service.get("name")}.{service.get("namespace")}.svc:443'
            raise StoreError(500, "InternalError", f'Internal error occurred: failed calling webhook "{hook.name}": '
                             f'failed to call webhook: Post "{url}{service.get("path", "")}?timeout=10s": '
                             f'no endpoints available for service "{name}"')
        message = hook.check(store, obj)
        if message is not None:
            raise StoreError(403, "Forbidden", f'admission webhook "{hook.name}" denied the request: {message}')


def is_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _configured(store: Store) -> list[tuple[Webhook, dict]]:
    """The modelled webhooks a configuration names, with the Service its clientConfig calls."""
    configs = store.list(store.resource("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"))
    return [(WEBHOOKS[w["name"]], (w.get("clientConfig") or {}).get("service") or {})
            for c in configs for w in c.get("webhooks") or [] if w.get("name") in WEBHOOKS]
