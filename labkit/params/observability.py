"""The lab file's observability section (notebook 04): charts, retention, storage, Grafana, ntfy, routing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from labkit.params.fields import DomainName, ObjectName, PathField, SecretField, Section, excerpt, matching
from labkit.params.infra import ChartKey, ChartSource

DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
BYTE_UNITS = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40, "PB": 2**50}  # Prometheus' are base 2
QUANTITY_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                  "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def duration_seconds(text: str) -> float:
    """Seconds of a Prometheus/Alertmanager duration like 10s, 4h or 1h30m."""
    return sum(int(n) * DURATION_UNITS[u] for n, u in re.findall(r"(\d+)(ms|[smhdwy])", text))


def _duration(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"(\d+(ms|[smhdwy]))+", value) or duration_seconds(value) <= 0:
        raise ValueError(f"{excerpt(value)} is not a duration like 10s, 5m, 4h or 7d (Prometheus' units ms s m h d w y)")
    return value


def _retention_size(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"\d+(\.\d+)?(B|KB|MB|GB|TB|PB)", value):
        raise ValueError(f"{excerpt(value)} is not a size like 15GB (Prometheus' units B KB MB GB TB PB)")
    return value


def _quantity(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"\d+(k|M|G|T|Ki|Mi|Gi|Ti)?", value) or value.startswith("0"):
        raise ValueError(f"{excerpt(value)} is not a volume size like 20Gi (a Kubernetes quantity)")
    return value


def size_bytes(text: str) -> float:
    """Bytes of a Prometheus size (15GB) or a Kubernetes quantity (20Gi)."""
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", text).groups()
    return float(number) * (BYTE_UNITS.get(unit) or QUANTITY_UNITS[unit])


Duration = Annotated[str, BeforeValidator(_duration)]
VolumeSize = Annotated[str, BeforeValidator(_quantity)]


class PrometheusStorage(Section):
    retention: Duration = "7d"
    retention_size: Annotated[str, BeforeValidator(_retention_size)] = "15GB"  # Prometheus deletes old blocks beyond it
    storage_class: ObjectName = "nfs-client"
    volume_size: VolumeSize = "20Gi"

    @model_validator(mode="after")
    def _fits(self) -> PrometheusStorage:
        if size_bytes(self.retention_size) > size_bytes(self.volume_size):
            raise ValueError(f"retention_size {self.retention_size} is larger than volume_size {self.volume_size}: "
                             "the disk would fill before Prometheus deletes old data; lower retention_size or "
                             "raise volume_size")
        return self


class LokiStorage(Section):
    retention: Duration = "168h"
    storage_class: ObjectName = "nfs-client"
    volume_size: VolumeSize = "10Gi"

    @model_validator(mode="after")
    def _whole_days(self) -> LokiStorage:
        if duration_seconds(self.retention) % 86400:  # Loki's compactor deletes whole 24h index periods
            raise ValueError(f"retention {self.retention} is not a multiple of 24h, as Loki requires; e.g. 168h")
        return self


class Grafana(Section):
    host: DomainName  # under ingress.domain, e.g. grafana.home.example.com
    admin_password: SecretField


class Ntfy(Section):
    server: Annotated[str, AfterValidator(matching(r"https://[^\s/]+", "is not an ntfy server URL like https://ntfy.sh "
                                                                      "(HTTPS, no path: the topic is its own key)"))]
    topic: Annotated[str, AfterValidator(matching(r"[-_A-Za-z0-9]{1,64}", "is not an ntfy topic: letters, digits, "
                                                                        "'-' and '_', at most 64"))]
    access_token: SecretField | None = None  # for a server or topic that needs one (ntfy's tk_... tokens)
    ca_file: PathField | None = None  # what the server's HTTPS is trusted with, if not the system's CAs


class Routing(Section):
    """Alertmanager's route to ntfy: how long it gathers a group before the first message, before
    an update, and before repeating an alert that still fires; which severities page the phone."""

    group_wait: Duration = "10s"
    group_interval: Duration = "5m"
    repeat_interval: Duration = "4h"
    page_severities: Annotated[list[Literal["critical", "warning", "info"]], Field(min_length=1)] = ["critical"]

    @model_validator(mode="after")
    def _ordered(self) -> Routing:
        if duration_seconds(self.repeat_interval) < duration_seconds(self.group_interval):
            raise ValueError(f"repeat_interval {self.repeat_interval} is shorter than group_interval "
                             f"{self.group_interval}; Alertmanager cannot repeat more often than it updates a group")
        return self


OBSERVABILITY_CHARTS = ("kube-prometheus-stack", "promtail")


def _the_stack(charts: dict) -> dict:
    missing = [c for c in OBSERVABILITY_CHARTS if c not in charts]
    if ("loki" in charts) == ("loki-stack" in charts):
        missing.append("exactly one of loki or loki-stack")
    if missing:
        raise ValueError(f"give {', '.join(missing)} (the stack 04 installs)")
    return charts


class Observability(Section):
    namespace: ObjectName = "monitoring"
    charts: Annotated[dict[ChartKey, ChartSource], AfterValidator(_the_stack)]
    prometheus: PrometheusStorage = PrometheusStorage()
    loki: LokiStorage = LokiStorage()
    grafana: Grafana
    ntfy: Ntfy
    routing: Routing = Routing()
    rules: PathField = Path("alerts")  # the alert rule files (PrometheusRule groups), relative to the lab file
    rule_tests: PathField = Path("../tests/alerts")  # their promtool unit tests (*.test.yaml)
