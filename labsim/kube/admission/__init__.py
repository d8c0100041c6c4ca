"""Admission: what the API server does to a create or update after decoding it and before
storing it, one module per plugin. ``admit`` runs the mutating ones (defaults, CRD schema
pruning/defaults, LimitRanger), ``validate`` the validating ones: built-in validation and CRD
schema/CEL rules (the causes of a 422), then modelled apps' webhooks, ServiceAccount, LimitRanger and ResourceQuota (which
raise a 403 ``StoreError``). The store calls both for every write, whether from a request or from
an in-process controller."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labsim.kube.admission import (
    crd_schema,
    crd_validation,
    defaults,
    limitranger,
    resourcequota,
    serviceaccount,
    validation,
    webhooks,
)
from labsim.kube.admission.crd_schema import unknown_fields
from labsim.kube.resources import Resource

if TYPE_CHECKING:
    from labsim.kube.store import Store

__all__ = ["admit", "unknown_fields", "validate"]


def admit(store: Store, res: Resource, obj: dict, old: dict | None) -> None:
    """The mutating plugins (create: old is None; update: the stored object)."""
    defaults.admit(res, obj, old)
    crd_schema.admit(res, obj)
    limitranger.admit(store, res, obj, old)


def validate(store: Store, res: Resource, obj: dict, old: dict | None) -> list[tuple[str, str]]:
    """The (field, message) causes of a 422 Invalid, empty if the object is fine."""
    causes = validation.validate(res, obj)
    if res.schema:
        causes += crd_validation.validate(res.schema, obj, old)
    if old is not None:
        causes += validation.validate_update(res, old, obj)
    if not causes:
        webhooks.validate(store, res, obj)
        serviceaccount.validate(store, res, obj, old)
        limitranger.validate(store, res, obj, old)
        resourcequota.validate(store, res, obj, old)
    return causes
