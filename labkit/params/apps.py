"""The lab file's apps section (notebook 06): Ollama, n8n, nginx."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from labkit.params.fields import (
    DomainName,
    ObjectName,
    SecretField,
    Section,
    excerpt,
    matching,
    pinned_image,
    pinned_version,
)
from labkit.params.postgres import Resources, Size


def _url(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?(/\S*)?", value):
        raise ValueError(f"{excerpt(value)} is not an upstream URL like http://ollama.apps.svc:11434")
    return value


Image = Annotated[str, BeforeValidator(pinned_image)]
ModelName = Annotated[str, AfterValidator(matching(
    r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)?:[A-Za-z0-9][A-Za-z0-9._-]*",
    "is not an Ollama model name:tag like llama3.2:1b (the tag pins what is pulled)"))]
PgName = Annotated[str, AfterValidator(matching(r"[a-z_][a-z0-9_]{0,62}", "is not a PostgreSQL name: lowercase "
                                                                          "letters, digits and '_'"))]


def _timezone(value: Any) -> str:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"{excerpt(value)} is not an IANA time zone like Europe/Berlin or UTC") from None
    return value


class AppChart(Section):
    """The Helm chart an app is installed with (through k3s' HelmChart), pinned."""

    repo: Annotated[str, AfterValidator(matching(r"(https|oci)://\S+", "is not a chart repository URL (https:// or oci://)"))]
    version: Annotated[str, BeforeValidator(pinned_version)]


class AppStorage(Section):
    storage_class: ObjectName = "nfs-client"
    size: Size


class App(Section):
    enabled: bool = True
    image: Image
    host: DomainName  # under ingress.domain; its certificate comes from the ingress issuer
    requests: Resources
    limits: Resources


class Benchmark(Section):
    prompt: Annotated[str, Field(min_length=1, max_length=2000)]
    repetitions: Annotated[int, Field(ge=1, le=50)] = 3


class Ollama(App):
    chart: AppChart
    storage: AppStorage  # pulled models live on it and survive restarts
    models: Annotated[list[ModelName], Field(min_length=1)]
    benchmark: Benchmark


class N8nDatabase(Section):
    """n8n's own database and user in the postgres section's PostgreSQL (made by labkit)."""

    name: PgName = "n8n"
    user: PgName = "n8n"
    password: SecretField | Literal["generate"] = "generate"  # a reference, or generated once into a Secret


class N8n(App):
    chart: AppChart
    storage: AppStorage | None = None
    database: N8nDatabase = N8nDatabase()
    encryption_key: SecretField | Literal["generate"] = "generate"  # encrypts n8n's stored credentials
    # Its public API's key: the real n8n makes it in its UI (Settings > n8n API): put it where this
    # reference points; "generate" suits the embedded lab, whose n8n takes the key it is given.
    api_key: SecretField | Literal["generate"] = "generate"
    timezone: Annotated[str, BeforeValidator(_timezone)] = "UTC"


class Nginx(App):
    upstreams: Annotated[dict[ObjectName, Annotated[str, BeforeValidator(_url)]], Field(min_length=1)]


class Apps(Section):
    namespace: ObjectName = "apps"
    ollama: Ollama | None = None
    n8n: N8n | None = None
    nginx: Nginx | None = None

    def enabled(self) -> dict[str, App]:
        """The apps to run, by name, in the order 06 deploys them."""
        found = {name: getattr(self, name) for name in ("ollama", "n8n", "nginx")}
        return {name: app for name, app in found.items() if app is not None and app.enabled}
