"""The whole lab file: ``Lab``, its sections and what it derives (servers, agents, secret references)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, PrivateAttr, ValidationInfo, model_validator

from labkit import secrets
from labkit.errors import LabError
from labkit.params.apps import Apps
from labkit.params.cluster import Embedded, K3s, Network, Node, Proxmox, Ssh
from labkit.params.fields import EMBEDDED_K3S_CIDRS, EMBEDDED_SSH_PORT, PathField, Section, matching
from labkit.params.infra import ChartKey, ChartSource, Ingress, MetalLB, Nfs, Tls
from labkit.params.observability import Observability
from labkit.params.postgres import Backup, Postgres


class Lab(Section):
    name: Annotated[str, AfterValidator(matching(
        r"[a-z0-9][a-z0-9-]{0,30}", "is not a lab name: lowercase letters, digits and '-', at most 31"))]
    kind: Literal["embedded", "real"]
    embedded: Embedded | None = None
    proxmox: Proxmox
    network: Network
    nodes: Annotated[list[Node], Field(min_length=1)]
    ssh: Ssh
    k3s: K3s
    metallb: MetalLB
    nfs: Nfs
    ingress: Ingress
    tls: Tls | None = None
    charts: dict[ChartKey, ChartSource] = {}
    observability: Observability | None = None
    postgres: Postgres | None = None
    backup: Backup | None = None
    apps: Apps | None = None
    kubeconfig: PathField

    # Set by load_lab: where the file lives, for relative paths and secrets.
    _path: Path = PrivateAttr(default=Path("lab.yaml"))

    @model_validator(mode="before")
    @classmethod
    def _embedded_defaults(cls, doc: Any) -> Any:
        """An embedded lab may leave out its ``embedded`` section; it runs without root (its SSH
        port defaults to an unprivileged one) and binds loopback only (its pod and service
        networks default to k3s' 10.42/10.43 moved into 127.0.0.0/8)."""
        if isinstance(doc, dict) and doc.get("kind") == "embedded":
            doc = {**doc, "embedded": doc.get("embedded") or {}}
            if isinstance(doc.get("ssh"), dict):
                doc["ssh"] = {"port": EMBEDDED_SSH_PORT, **doc["ssh"]}
            if isinstance(doc.get("k3s"), dict):
                doc["k3s"] = {**EMBEDDED_K3S_CIDRS, **doc["k3s"]}
        return doc

    @model_validator(mode="after")
    def _resolve_paths(self, info: ValidationInfo) -> Lab:
        base = (info.context or {}).get("base_dir")
        if base is not None:
            _absolutize(self, Path(base))
        return self

    @property
    def path(self) -> Path:
        return self._path

    @property
    def base_dir(self) -> Path:
        return self._path.resolve().parent

    @property
    def servers(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "server"]

    @property
    def agents(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "agent"]

    @property
    def master(self) -> Node:
        """The first server: where k3s is installed first and the API is reached."""
        return self.servers[0]

    def secret(self, ref: secrets.SecretRef) -> str:
        """Resolve one of this lab's secret references (and register it for redaction)."""
        return secrets.resolve(ref, self.base_dir)

    def secret_refs(self) -> dict[str, secrets.SecretRef]:
        refs = {"proxmox.token_secret": self.proxmox.token_secret, "ssh.private_key": self.ssh.private_key,
                "k3s.token": self.k3s.token}
        if self.tls is not None and self.tls.solver.dns01 is not None:
            refs["tls.solver.dns01.api_token"] = self.tls.solver.dns01.api_token
        if self.observability is not None:
            refs["observability.grafana.admin_password"] = self.observability.grafana.admin_password
            if self.observability.ntfy.access_token is not None:
                refs["observability.ntfy.access_token"] = self.observability.ntfy.access_token
        if self.postgres is not None and self.postgres.password != "generate":
            refs["postgres.password"] = self.postgres.password
        n8n = self.apps.n8n if self.apps is not None else None
        if n8n is not None:
            for field, ref in (("database.password", n8n.database.password), ("encryption_key", n8n.encryption_key),
                               ("api_key", n8n.api_key)):
                if ref != "generate":
                    refs[f"apps.n8n.{field}"] = ref
        return refs

    def node(self, name: str) -> Node:
        found = next((n for n in self.nodes if n.name == name), None)
        if found is None:
            raise LabError(f"no node named {name!r} in lab '{self.name}' ({self.path}); its nodes are "
                           f"{', '.join(n.name for n in self.nodes)}")
        return found


def _absolutize(lab: Lab, base: Path) -> None:
    """Make path fields absolute against the lab file's folder (models are frozen, hence object.__setattr__)."""
    for section, field in (("proxmox", "ca_file"), ("ssh", "public_key"), ("ssh", "known_hosts"),
                           ("embedded", "state_dir")):
        model = getattr(lab, section)
        value = getattr(model, field, None) if model is not None else None
        if value is not None:
            object.__setattr__(model, field, secrets.resolve_path(value, base))
    object.__setattr__(lab, "kubeconfig", secrets.resolve_path(lab.kubeconfig, base))
    for chart in lab.charts.values():
        if chart.values is not None:
            object.__setattr__(chart, "values", secrets.resolve_path(chart.values, base))
    for issuer in lab.tls.issuers if lab.tls is not None else []:
        for field in ("ca_file", "server_ca_file"):
            if getattr(issuer, field) is not None:
                object.__setattr__(issuer, field, secrets.resolve_path(getattr(issuer, field), base))
    if lab.observability is not None:
        for field in ("rules", "rule_tests"):
            object.__setattr__(lab.observability, field, secrets.resolve_path(getattr(lab.observability, field), base))
        if lab.observability.ntfy.ca_file is not None:
            object.__setattr__(lab.observability.ntfy, "ca_file", secrets.resolve_path(lab.observability.ntfy.ca_file, base))
        for chart in lab.observability.charts.values():
            if chart.values is not None:
                object.__setattr__(chart, "values", secrets.resolve_path(chart.values, base))
