"""The lab file's postgres and backup sections (notebooks 05 and 07)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from labkit.params.fields import (
    ObjectName,
    SecretField,
    Section,
    excerpt,
    matching,
    pinned_image,
    pinned_version,
)

_CRON_FIELD = r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*"
Cron = Annotated[str, AfterValidator(matching(
    rf"{_CRON_FIELD}( {_CRON_FIELD}){{4}}",
    "is not a cron schedule: five fields (minute hour day month weekday) like '0 2 * * *'"))]
Cpu = Annotated[str, AfterValidator(matching(r"\d+(\.\d+)?m?", "is not a CPU quantity like 500m or 2"))]
Memory = Annotated[str, AfterValidator(matching(
    r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?", "is not a memory quantity like 256Mi or 2Gi"))]
Size = Annotated[str, AfterValidator(matching(r"\d+(Mi|Gi|Ti)", "is not a volume size like 8Gi"))]


def _chart_image(value: Any) -> str:
    """A pinned image written as the chart's values take it: registry/repository:tag."""
    pinned_image(value)
    if not re.fullmatch(r"[a-z0-9.-]+(:\d+)?/[a-z0-9._/-]+:[A-Za-z0-9_][A-Za-z0-9_.-]*", value):
        raise ValueError(f"{excerpt(value)} is not written registry/repository:tag, like "
                         "docker.io/bitnami/postgresql:17.5.0-debian-12-r0")
    return value


class Resources(Section):
    cpu: Cpu
    memory: Memory


class Postgres(Section):
    chart_version: Annotated[str, BeforeValidator(pinned_version)]
    repo: Annotated[str, AfterValidator(matching(r"(https|oci)://\S+", "is not a chart repository URL"))] = \
        "oci://registry-1.docker.io/bitnamicharts"
    # the server's image, pinned; the backup CronJob's pg_dump runs in the same one (same client version)
    image: Annotated[str, BeforeValidator(lambda v: _chart_image(v))] = "docker.io/bitnami/postgresql:17.5.0-debian-12-r0"
    namespace: ObjectName = "databases"
    database: Annotated[str, AfterValidator(matching(r"[a-z_][a-z0-9_]{0,62}", "is not a database name"))]
    user: Annotated[str, AfterValidator(matching(r"[a-z_][a-z0-9_]{0,62}", "is not a user name"))]
    password: SecretField | Literal["generate"] = "generate"  # a reference, or generated once into a Secret
    storage_class: ObjectName = "nfs-client"
    size: Size = "8Gi"
    requests: Resources
    limits: Resources
    metrics: bool = True
    tls: bool = False


class PgDump(Section):
    schedule: Cron = "0 2 * * *"
    retention: Annotated[int, Field(ge=1, le=365)] = 7
    pvc: ObjectName = "postgresql-backups"
    storage_class: ObjectName = "nfs-client"
    size: Size = "8Gi"


class EtcdSnapshots(Section):
    schedule: Cron = "0 */12 * * *"
    retention: Annotated[int, Field(ge=1, le=1000)] = 14


class Backup(Section):
    pg_dump: PgDump = PgDump()
    etcd: EtcdSnapshots = EtcdSnapshots()
    rpo_minutes: Annotated[float, Field(gt=0)] = 1440
    rto_minutes: Annotated[float, Field(gt=0)] = 30
