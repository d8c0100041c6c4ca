"""The lab file: pydantic models, validated before anything touches a machine.

``load_lab(path)`` returns a ``Lab`` or raises ``ParamsError`` whose lines name the YAML path and
the fix, e.g. ``nodes[1].ip: '192.168.2.300' is not an IPv4 address``. Unknown keys are errors,
secrets are references only (``labkit.secrets``), relative paths resolve against the file's folder.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from labkit import localfiles, secrets, yamlfile
from labkit.errors import LabError, ParamsError, SecretError
from labkit.quantities import cpu_cores, memory_bytes

IPv4 = ipaddress.IPv4Address

# -- field types -------------------------------------------------------------------------------------


EXCERPT = 60  # characters of an offending value a message quotes


def excerpt(value: Any) -> str:
    """A value as a message quotes it: short, and a mapping or a list named, never printed whole
    (a huge or nested value would flood the terminal, or hold a secret)."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} items"
    text = repr(value if isinstance(value, bool | int | float | None) else str(value))
    return text if len(text) <= EXCERPT else f"{text[:EXCERPT - 4]}...{text[-1]}"


def _ipv4(value: Any) -> IPv4:
    try:
        return IPv4(str(value))
    except ValueError:
        raise ValueError(f"{excerpt(value)} is not an IPv4 address") from None


def _subnet(value: Any) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError:
        raise ValueError(f"{excerpt(value)} is not an IPv4 subnet like 192.168.2.0/24 (host bits zero)") from None


DNS_NAME = re.compile(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)


def _host(value: Any) -> str:
    """An IPv4 address or a DNS name (a name's last label is not all digits: 192.168.2.300 is neither)."""
    if isinstance(value, str):
        try:
            return str(IPv4(value))
        except ValueError:
            if DNS_NAME.fullmatch(value) and not value.rsplit(".", 1)[-1].isdigit() and len(value) <= 253:
                return value
    raise ValueError(f"{excerpt(value)} is not an IPv4 address or a DNS name")


def _secret_ref(value: Any) -> secrets.SecretRef:
    # The message must never contain the value: it may be a secret pasted by mistake.
    if not isinstance(value, str) or not secrets.is_reference(value):
        raise ValueError("must be a secret reference (env:NAME or file:PATH#key), not a value; "
                         "move the secret out of the lab file")
    return secrets.parse(value)


def _no_secret_after_equals(value: Any) -> Any:
    # PVE shows a new token as `user@realm!name=SECRET`: pasted whole, the secret must not be echoed.
    if isinstance(value, str) and "=" in value:
        raise ValueError("holds '=' and what follows it, as PVE's `user@realm!name=SECRET` does: give the id "
                         "only (like root@pam!labkit) and the secret as a reference in proxmox.token_secret")
    return value


def _pattern(regex: str, hint: str):
    compiled = re.compile(regex)

    def check(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(f"{excerpt(value)} {hint}")
        return value

    return check


Address = Annotated[IPv4, BeforeValidator(_ipv4)]
Subnet = Annotated[ipaddress.IPv4Network, BeforeValidator(_subnet)]
SecretField = Annotated[secrets.SecretRef, BeforeValidator(_secret_ref)]
Host = Annotated[str, BeforeValidator(_host)]
PathField = Annotated[Path, BeforeValidator(lambda v: Path(str(v)).expanduser())]
Hostname = Annotated[str, AfterValidator(_pattern(
    r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", "is not a valid host name: lowercase letters, digits and '-', at most 63"))]
DomainName = Annotated[str, AfterValidator(_pattern(
    r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
    "is not a valid DNS name: dot-separated labels of lowercase letters, digits and '-'"))]
VmId = Annotated[int, Field(ge=100, le=999_999_999)]
Port = Annotated[int, Field(ge=1, le=65535)]
EMBEDDED_SSH_PORT = 2222
EMBEDDED_K3S_CIDRS = {"cluster_cidr": "127.42.0.0/16", "service_cidr": "127.43.0.0/16"}
K3S_COMPONENTS = ("coredns", "servicelb", "traefik", "local-storage", "metrics-server", "runtimes")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # strict: `cores: true` is no 1


# -- sections -----------------------------------------------------------------------------------------


class Embedded(Section):
    state_dir: PathField = Path(".labsim")
    time_scale: Annotated[float, Field(ge=0, le=10)] = 0.02


class Proxmox(Section):
    host: Host
    port: Port = 8006
    node: Hostname
    token_id: Annotated[str, BeforeValidator(_no_secret_after_equals), AfterValidator(_pattern(
        r"[^@!\s]+@[^@!\s]+![A-Za-z][A-Za-z0-9._-]*", "is not an API token id like root@pam!labkit (user@realm!name)"))]
    token_secret: SecretField
    ca_file: PathField | None = None
    fingerprint: Annotated[str, AfterValidator(_pattern(
        r"([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}",
        "is not a SHA-256 fingerprint (32 hex bytes separated by ':', as PVE shows it)"))] | None = None
    template_vmid: VmId = 9000
    # PVE identifiers (its formats pve-storage-id and pve-bridge-id): they end up in API
    # parameters such as net0, where a comma or '=' would splice in options of their own.
    storage: Annotated[str, AfterValidator(_pattern(
        r"[A-Za-z][A-Za-z0-9_.-]*[A-Za-z0-9]", "is not a PVE storage id like local-lvm"))] = "local-lvm"
    bridge: Annotated[str, AfterValidator(_pattern(
        r"[A-Za-z][A-Za-z0-9_.-]{0,14}", "is not a Linux bridge name like vmbr0 (at most 15 characters)"))] = "vmbr0"

    @model_validator(mode="after")
    def _one_trust_anchor(self) -> Proxmox:
        if (self.ca_file is None) == (self.fingerprint is None):
            raise ValueError("give exactly one of ca_file (the PVE CA, PEM) or fingerprint "
                             "(SHA-256 of the PVE certificate): TLS verification stays on")
        return self


class Network(Section):
    subnet: Subnet
    gateway: Address
    dns: Annotated[list[Address], Field(min_length=1)]
    search_domain: DomainName


class Node(Section):
    name: Hostname
    role: Literal["server", "agent"]
    vmid: VmId
    ip: Address
    cores: Annotated[int, Field(ge=1, le=64)] = 2
    memory_mib: Annotated[int, Field(ge=512, le=1_048_576)] = 4096
    disk_gib: Annotated[int, Field(ge=4, le=16_384)] = 32
    tags: list[Annotated[str, AfterValidator(_pattern(
        r"[a-z0-9_][a-z0-9_.+-]*", "is not a Proxmox tag: lowercase letters, digits, '_', '.', '+', '-'"))]] = []


class Ssh(Section):
    user: Annotated[str, AfterValidator(_pattern(r"[a-z_][a-z0-9_-]{0,31}", "is not a Linux user name"))] = "ubuntu"
    public_key: PathField
    private_key: SecretField
    port: Port = 22
    known_hosts: PathField


class K3s(Section):
    version: Annotated[str, AfterValidator(_pattern(
        r"v\d+\.\d+\.\d+\+k3s\d+", "is not a k3s version like v1.34.3+k3s1"))]
    token: SecretField
    tls_san: list[Host] = []
    disable: list[Literal[K3S_COMPONENTS]] = []  # type: ignore[valid-type]
    cluster_init: bool = True
    # Pod and service networks (k3s cluster-cidr/service-cidr); unset = k3s' 10.42.0.0/16 and 10.43.0.0/16.
    cluster_cidr: Subnet | None = None
    service_cidr: Subnet | None = None


def _address_range(text: str) -> tuple[IPv4, IPv4]:
    """First and last address of ``A-B`` or a CIDR."""
    text = text.strip()
    if "-" in text:
        first, last = (_ipv4(part.strip()) for part in text.split("-", 1))
    else:
        net = _subnet(text)
        first, last = net.network_address, net.broadcast_address
    if first > last:
        raise ValueError(f"{first} comes after {last}; write FIRST-LAST")
    return first, last


AddressRange = Annotated[str, AfterValidator(lambda v: (_address_range(v), v)[1])]
ObjectName = Annotated[str, AfterValidator(_pattern(
    r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", "is not a Kubernetes name: lowercase letters, digits and '-', at most 63"))]


class Pool(Section):
    """A further MetalLB IPAddressPool (``auto_assign: false``: only for Services that ask for it)."""

    name: ObjectName
    addresses: Annotated[list[AddressRange], Field(min_length=1)]
    auto_assign: bool = True


class MetalLB(Section):
    addresses: AddressRange  # the pool named ``default``, from which Services get addresses
    pools: list[Pool] = []
    l2_advertisement: bool = True  # announce every pool over ARP (MetalLB's L2 mode)

    @cached_property
    def pool(self) -> tuple[IPv4, IPv4]:
        """First and last address of the default pool."""
        return _address_range(self.addresses)

    def pool_ranges(self) -> dict[str, list[tuple[IPv4, IPv4]]]:
        """Pool name -> its ranges (first, last)."""
        return {"default": [self.pool]} | {p.name: [_address_range(t) for t in p.addresses] for p in self.pools}

    def ranges(self) -> list[tuple[str, IPv4, IPv4]]:
        """Every range of every pool, with its YAML path."""
        found = [("metallb.addresses", *self.pool)]
        for i, pool in enumerate(self.pools):
            found += [(f"metallb.pools[{i}].addresses[{j}]", *_address_range(text))
                      for j, text in enumerate(pool.addresses)]
        return found


class Nfs(Section):
    server: Host
    path: Annotated[str, AfterValidator(_pattern(r"/\S*", "is not an absolute export path like /volume1/k8s-data"))]
    storage_class: ObjectName = "nfs-client"
    default_class: bool = True  # the cluster's default StorageClass (k3s' local-path is then disabled as default)
    reclaim_policy: Literal["Delete", "Retain"] = "Delete"
    archive_on_delete: bool = True  # a released volume's folder is renamed archived-..., not deleted
    mount_options: list[str] = ["nfsvers=4.1"]
    # The NAS over SSH (a Synology with SSH on), to look at the export from its side; the operator's
    # key (ssh.private_key) must be authorized for this user. Unset: ssh.user and ssh.port.
    ssh_user: Annotated[str, AfterValidator(_pattern(r"[a-z_][a-z0-9_-]{0,31}", "is not a user name"))] | None = None
    ssh_port: Port | None = None


class Dns01(Section):
    provider: Literal["cloudflare"] = "cloudflare"
    api_token: SecretField  # a Cloudflare API token with Zone:DNS:Edit on the domain's zone


class Http01(Section):
    ingress_class: ObjectName = "traefik"


class Solver(Section):
    dns01: Dns01 | None = None
    http01: Http01 | None = None

    @model_validator(mode="after")
    def _one(self) -> Solver:
        if (self.dns01 is None) == (self.http01 is None):
            raise ValueError("give exactly one of dns01 (Cloudflare API token reference) or http01")
        return self


class Issuer(Section):
    name: ObjectName
    server: Annotated[str, AfterValidator(_pattern(r"https://\S+", "is not an ACME directory URL (https://...)"))]
    # For a test CA (Pebble, LE staging), PEM files; unset: the system's trust store (LE production).
    ca_file: PathField | None = None  # the roots of the certificates it issues: what HTTPS probes trust
    server_ca_file: PathField | None = None  # what the ACME server's own HTTPS is trusted with (caBundle)


LETSENCRYPT = {"letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
               "letsencrypt-prod": "https://acme-v02.api.letsencrypt.org/directory"}


class Tls(Section):
    email: Annotated[str, AfterValidator(_pattern(r"[^@\s]+@[^@\s]+\.[^@\s]+", "is not an e-mail address"))]
    issuers: Annotated[list[Issuer], Field(min_length=1)] = [Issuer(name=n, server=u) for n, u in LETSENCRYPT.items()]
    solver: Solver


class Ingress(Section):
    domain: DomainName
    issuer: str = "letsencrypt-prod"
    redirect_https: bool = True  # Traefik redirects HTTP to HTTPS on its web entry point
    dashboard: bool = False  # Traefik's dashboard stays off unless asked for
    access_logs: bool = True


def _pinned(value: Any) -> str:
    text = str(value) if isinstance(value, str | int | float) else ""
    if not re.fullmatch(r"v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?", text):
        raise ValueError(f"{value!r} is not a pinned chart version: give an exact version like 1.19.1 "
                         "(no ranges, no 'latest'), so a re-run installs the same chart")
    return text


class ChartSource(Section):
    """A Helm chart the lab installs (through k3s' HelmChart): the key is the chart's name."""

    repo: Annotated[str, AfterValidator(_pattern(r"(https|oci)://\S+", "is not a chart repository URL (https:// or oci://)"))]
    version: Annotated[str, BeforeValidator(_pinned)]
    namespace: ObjectName
    values: PathField | None = None  # a values file, relative to the lab file (parameters/values/<chart>.yaml)


ChartKey = Annotated[str, AfterValidator(_pattern(
    r"[a-z0-9]([a-z0-9-]{0,51}[a-z0-9])?", "is not a chart name: lowercase letters, digits and '-'"))]


# -- observability (04) ----------------------------------------------------------------------------

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
    server: Annotated[str, AfterValidator(_pattern(r"https://[^\s/]+", "is not an ntfy server URL like https://ntfy.sh "
                                                                      "(HTTPS, no path: the topic is its own key)"))]
    topic: Annotated[str, AfterValidator(_pattern(r"[-_A-Za-z0-9]{1,64}", "is not an ntfy topic: letters, digits, "
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


# -- postgres and backup (notebooks 05 and 07) ----------------------------------------------------

_CRON_FIELD = r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*"
Cron = Annotated[str, AfterValidator(_pattern(
    rf"{_CRON_FIELD}( {_CRON_FIELD}){{4}}",
    "is not a cron schedule: five fields (minute hour day month weekday) like '0 2 * * *'"))]
Cpu = Annotated[str, AfterValidator(_pattern(r"\d+(\.\d+)?m?", "is not a CPU quantity like 500m or 2"))]
Memory = Annotated[str, AfterValidator(_pattern(
    r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?", "is not a memory quantity like 256Mi or 2Gi"))]
Size = Annotated[str, AfterValidator(_pattern(r"\d+(Mi|Gi|Ti)", "is not a volume size like 8Gi"))]


def _chart_image(value: Any) -> str:
    """A pinned image written as the chart's values take it: registry/repository:tag."""
    _pinned_image(value)
    if not re.fullmatch(r"[a-z0-9.-]+(:\d+)?/[a-z0-9._/-]+:[A-Za-z0-9_][A-Za-z0-9_.-]*", value):
        raise ValueError(f"{excerpt(value)} is not written registry/repository:tag, like "
                         "docker.io/bitnami/postgresql:17.5.0-debian-12-r0")
    return value


class Resources(Section):
    cpu: Cpu
    memory: Memory


class Postgres(Section):
    chart_version: Annotated[str, BeforeValidator(_pinned)]
    repo: Annotated[str, AfterValidator(_pattern(r"(https|oci)://\S+", "is not a chart repository URL"))] = \
        "oci://registry-1.docker.io/bitnamicharts"
    # the server's image, pinned; the backup CronJob's pg_dump runs in the same one (same client version)
    image: Annotated[str, BeforeValidator(lambda v: _chart_image(v))] = "docker.io/bitnami/postgresql:17.5.0-debian-12-r0"
    namespace: ObjectName = "databases"
    database: Annotated[str, AfterValidator(_pattern(r"[a-z_][a-z0-9_]{0,62}", "is not a database name"))]
    user: Annotated[str, AfterValidator(_pattern(r"[a-z_][a-z0-9_]{0,62}", "is not a user name"))]
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


# -- apps (notebook 06) ----------------------------------------------------------------------------


def _pinned_image(value: Any) -> str:
    # A tag that names a release (not latest, not absent) or a digest: a re-run pulls the same image.
    match = re.fullmatch(r"[a-z0-9][a-z0-9._/-]*(:(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(@sha256:[0-9a-f]{64})?",
                         value if isinstance(value, str) else "")
    if match is None:
        raise ValueError(f"{excerpt(value)} is not an image reference like ollama/ollama:0.12.6")
    if "@sha256:" not in value and match["tag"] in (None, "latest"):
        raise ValueError(f"{excerpt(value)} is not pinned: give the image's release tag, like "
                         f"{value.split(':')[0]}:1.2.3 (':latest' or no tag pulls whatever is newest)")
    return value


def _url(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?(/\S*)?", value):
        raise ValueError(f"{excerpt(value)} is not an upstream URL like http://ollama.apps.svc:11434")
    return value


Image = Annotated[str, BeforeValidator(_pinned_image)]
ModelName = Annotated[str, AfterValidator(_pattern(
    r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)?:[A-Za-z0-9][A-Za-z0-9._-]*",
    "is not an Ollama model name:tag like llama3.2:1b (the tag pins what is pulled)"))]
PgName = Annotated[str, AfterValidator(_pattern(r"[a-z_][a-z0-9_]{0,62}", "is not a PostgreSQL name: lowercase "
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

    repo: Annotated[str, AfterValidator(_pattern(r"(https|oci)://\S+", "is not a chart repository URL (https:// or oci://)"))]
    version: Annotated[str, BeforeValidator(_pinned)]


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


# -- the lab --------------------------------------------------------------------------------------


class Lab(Section):
    name: Annotated[str, AfterValidator(_pattern(
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


# -- loading ----------------------------------------------------------------------------------------


def load_lab(path: str | Path, *, check_files: bool = True) -> Lab:
    """Read, validate and cross-check a lab file. Raises ParamsError listing every problem."""
    path = Path(path)
    doc = _read_yaml(path)
    try:
        lab = Lab.model_validate(doc, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ParamsError(_format_errors(exc, doc), source=str(path)) from None
    lab._path = path
    errors = cross_check(lab)
    if check_files:
        errors += missing_files(lab) + unset_variables(lab) + file_problems(lab)
    if errors:
        raise ParamsError(errors, source=str(path))
    return lab


def _read_yaml(path: Path) -> dict:
    try:
        doc = yamlfile.load(localfiles.read_text(path))
    except FileNotFoundError:
        raise ParamsError([f"{path}: file not found"], source=str(path)) from None
    except (localfiles.FileProblem, yamlfile.YamlProblem) as exc:
        raise ParamsError([str(exc)], source=str(path)) from None
    if not isinstance(doc, dict):
        raise ParamsError(["the lab file must be a YAML mapping (name:, kind:, proxmox:, ...)"], source=str(path))
    return doc


def _format_errors(exc: ValidationError, doc: dict) -> list[str]:
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
        where = _yaml_path(loc)
        lines.append(f"{where}: {_message(err, loc, doc)}" if where else _message(err, loc, doc))
    return lines


def _yaml_path(loc: list) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(err: dict, loc: list, doc: dict) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return _unknown_key(loc, doc)
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return err["msg"].removeprefix("Value error, ")
    if kind == "literal_error":
        return f"{excerpt(_value_at(doc, loc))} is not allowed; {err['msg'].lower()[:200]}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{excerpt(_value_at(doc, loc))} is out of range: {err['msg'].lower()}"
    if kind == "too_short":
        return "must not be empty"
    return f"{excerpt(_value_at(doc, loc))}: {err['msg'].lower()}"


def _unknown_key(loc: list, doc: dict) -> str:
    parent = _value_at(doc, loc[:-1])
    known = _known_keys(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
    return f"unknown key ({hint})" if isinstance(parent, dict) else "unknown key"


def _known_keys(loc: list) -> list[str]:
    model: Any = Lab
    keyed = False  # the last field was a mapping (charts): this part is its key, not a field
    for part in loc:
        if isinstance(part, int) or keyed:
            keyed = False
            continue
        annotation = model.model_fields[part].annotation  # Section, Section | None, list/dict of Section
        keyed = getattr(annotation, "__origin__", None) is dict
        model = next((a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)
                      and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _value_at(doc: Any, loc: list) -> Any:
    for part in loc:
        try:
            doc = doc[part]
        except (KeyError, IndexError, TypeError):
            return None
    return doc


# -- cross-field rules -----------------------------------------------------------------------------


def cross_check(lab: Lab) -> list[str]:
    """Rules that span fields: addresses inside the subnet, uniqueness, pool, server count."""
    net, errors = lab.network.subnet, []
    usable = set(net.hosts()) if net.prefixlen < 31 else set(net)

    def inside(where: str, ip: IPv4) -> None:
        if ip not in usable:
            errors.append(f"{where}: {ip} is not a usable address of network.subnet {net}")

    inside("network.gateway", lab.network.gateway)
    for i, node in enumerate(lab.nodes):
        inside(f"nodes[{i}].ip", node.ip)
        if node.ip == lab.network.gateway:
            errors.append(f"nodes[{i}].ip: {node.ip} is the gateway; give the node its own address")
        if node.vmid == lab.proxmox.template_vmid:
            errors.append(f"nodes[{i}].vmid: {node.vmid} is the template (proxmox.template_vmid); pick another vmid")
    for field in ("name", "vmid", "ip"):
        errors += _duplicates(lab.nodes, field)

    errors += _pool_rules(lab, inside)
    errors += _ingress_rules(lab)
    errors += _observability_rules(lab)

    errors += _pod_network_rules(lab)
    errors += _postgres_rules(lab)
    errors += _apps_rules(lab)

    servers = len(lab.servers)
    if servers == 0:
        errors.append("nodes: no node has role: server; k3s needs at least one server")
    elif servers > 1 and not lab.k3s.cluster_init:
        errors.append(f"k3s.cluster_init: {servers} servers need embedded etcd; set cluster_init: true")
    elif servers > 1 and servers % 2 == 0:
        errors.append(f"nodes: {servers} servers; embedded etcd HA needs an odd number (1, 3, 5) to keep quorum")

    if lab.kind == "embedded":
        errors += _embedded_rules(lab)
    elif lab.embedded is not None:
        errors.append("embedded: only for kind: embedded; remove the section or set kind: embedded")
    return errors


def _pool_rules(lab: Lab, inside) -> list[str]:
    """Every pool range inside the subnet, clear of nodes, gateway, NFS server and each other; pool names unique."""
    errors: list[str] = []
    taken = {n.ip: f"nodes[{i}] ({n.name})" for i, n in enumerate(lab.nodes)} | {lab.network.gateway: "the gateway"}
    if _is_ipv4(lab.nfs.server):
        taken[IPv4(lab.nfs.server)] = "the NFS server (nfs.server)"
    ranges = lab.metallb.ranges()
    for k, (where, first, last) in enumerate(ranges):
        inside(where, first)
        inside(where, last)
        for ip, owner in taken.items():
            if first <= ip <= last:
                errors.append(f"{where}: {first}-{last} contains {ip}, used by {owner}; "
                              "the pool must be disjoint from node IPs, the gateway and the NFS server")
        for other, a, b in ranges[:k]:
            if first <= b and last >= a:
                errors.append(f"{where}: {first}-{last} overlaps {other} ({a}-{b}); MetalLB pools must not overlap")
    names = ["default", *(p.name for p in lab.metallb.pools)]
    for i, name in enumerate(names[1:]):
        if name in names[: i + 1]:
            errors.append(f"metallb.pools[{i}].name: {name!r} is already a pool's name ('default' is metallb.addresses)")
    return errors


def _ingress_rules(lab: Lab) -> list[str]:
    """The ingress issuer is one of tls.issuers."""
    if lab.tls is None:
        return []
    names = [i.name for i in lab.tls.issuers]
    if lab.ingress.issuer not in names:
        return [f"ingress.issuer: {lab.ingress.issuer!r} is not one of tls.issuers ({', '.join(names)})"]
    return []


def _observability_rules(lab: Lab) -> list[str]:
    """Grafana is served under the ingress domain (its certificate and DNS come from 03)."""
    if lab.observability is None:
        return []
    host, domain = lab.observability.grafana.host, lab.ingress.domain
    if not host.endswith("." + domain):
        return [f"observability.grafana.host: {host!r} is not under ingress.domain {domain!r}; "
                f"use e.g. grafana.{domain}"]
    return []


K3S_DEFAULT_CIDRS = {"cluster_cidr": ipaddress.IPv4Network("10.42.0.0/16"),
                     "service_cidr": ipaddress.IPv4Network("10.43.0.0/16")}


def _pod_network_rules(lab: Lab) -> list[str]:
    """The pod and service networks (as set, else k3s' defaults) must not overlap each other, the
    node subnet or the MetalLB pool; the embedded lab must set both inside 127.0.0.0/8."""
    errors = []
    nets = {f: getattr(lab.k3s, f) or K3S_DEFAULT_CIDRS[f] for f in K3S_DEFAULT_CIDRS}
    for field, net in nets.items():
        where = f"k3s.{field}: {net}" + ("" if getattr(lab.k3s, field) else " (k3s' default)")
        if net.overlaps(lab.network.subnet):
            errors.append(f"{where} overlaps network.subnet {lab.network.subnet}; pick a range outside it")
        for pool, first, last in lab.metallb.ranges():
            if first <= net.broadcast_address and last >= net.network_address:
                errors.append(f"{where} overlaps {pool} {first}-{last}; pick a range outside the pool")
    if nets["cluster_cidr"].overlaps(nets["service_cidr"]):
        errors.append(f"k3s.service_cidr: {nets['service_cidr']} overlaps k3s.cluster_cidr {nets['cluster_cidr']}; "
                      "pods and services need separate ranges")
    if nets["cluster_cidr"].prefixlen > 24 - (len(lab.nodes) - 1).bit_length():
        errors.append(f"k3s.cluster_cidr: {nets['cluster_cidr']} is too small: each of the {len(lab.nodes)} nodes "
                      "takes a /24 of it")
    if lab.kind == "embedded":  # unset, they default to loopback ranges (EMBEDDED_K3S_CIDRS)
        loopback = ipaddress.IPv4Network("127.0.0.0/8")
        for field, example in EMBEDDED_K3S_CIDRS.items():
            if not nets[field].subnet_of(loopback):
                errors.append(f"k3s.{field}: {nets[field]} is not loopback; the embedded lab binds 127.0.0.0/8 only: "
                              f"set e.g. {field}: {example}")
    return errors


def _postgres_rules(lab: Lab) -> list[str]:
    """Limits at or above requests; the backup section needs the database it backs up."""
    errors, pg = [], lab.postgres
    if pg is not None:
        if cpu_cores(pg.limits.cpu) < cpu_cores(pg.requests.cpu):
            errors.append(f"postgres.limits.cpu: {pg.limits.cpu} is below postgres.requests.cpu {pg.requests.cpu}")
        if memory_bytes(pg.limits.memory) < memory_bytes(pg.requests.memory):
            errors.append(f"postgres.limits.memory: {pg.limits.memory} is below postgres.requests.memory "
                          f"{pg.requests.memory}")
        if pg.user == "postgres":
            errors.append("postgres.user: 'postgres' is the superuser; give the application its own user")
    if lab.backup is not None and pg is None:
        errors.append("backup: backs up the postgres section's database; add a postgres section")
    return errors


def _apps_rules(lab: Lab) -> list[str]:
    """Each app under the ingress domain, its limits at or above its requests; n8n needs the
    postgres section's database."""
    errors: list[str] = []
    for name, app in (lab.apps.enabled() if lab.apps is not None else {}).items():
        where, domain = f"apps.{name}", lab.ingress.domain
        if not app.host.endswith("." + domain):
            errors.append(f"{where}.host: {app.host!r} is not under ingress.domain {domain!r}; use e.g. {name}.{domain}")
        if cpu_cores(app.limits.cpu) < cpu_cores(app.requests.cpu):
            errors.append(f"{where}.limits.cpu: {app.limits.cpu} is below {where}.requests.cpu {app.requests.cpu}")
        if memory_bytes(app.limits.memory) < memory_bytes(app.requests.memory):
            errors.append(f"{where}.limits.memory: {app.limits.memory} is below {where}.requests.memory "
                          f"{app.requests.memory}")
        if name == "n8n" and lab.postgres is None:
            errors.append("apps.n8n: stores its workflows in the postgres section's PostgreSQL; add a postgres section "
                          "(notebook 05) or set apps.n8n.enabled: false")
        if name == "n8n" and app.database.user in ("postgres", getattr(lab.postgres, "user", None)):
            errors.append(f"apps.n8n.database.user: {app.database.user!r} is already PostgreSQL's superuser or the "
                          "postgres section's user; give n8n a user of its own (e.g. n8n)")
    return errors


def _is_ipv4(text: str) -> bool:
    try:
        IPv4(text)
    except ValueError:
        return False
    return True


def _duplicates(nodes: list[Node], field: str) -> list[str]:
    seen: dict[Any, int] = {}
    errors = []
    for i, node in enumerate(nodes):
        value = getattr(node, field)
        if value in seen:
            errors.append(f"nodes[{i}].{field}: {str(value)!r} is already used by nodes[{seen[value]}]; "
                          f"each node needs its own {field}")
        seen.setdefault(value, i)
    return errors


def _embedded_rules(lab: Lab) -> list[str]:
    errors = []
    loopback = ipaddress.IPv4Network("127.0.0.0/8")
    if not lab.network.subnet.subnet_of(loopback):
        errors.append(f"network.subnet: {lab.network.subnet} is not loopback; the embedded lab binds 127.0.0.0/8 only")
    try:
        if not IPv4(lab.proxmox.host).is_loopback:
            raise ValueError
    except ValueError:
        errors.append(f"proxmox.host: {excerpt(lab.proxmox.host)} is not a loopback address; the embedded lab serves PVE on 127.0.0.1")
    return errors


def missing_files(lab: Lab) -> list[str]:
    """Local files the lab needs. For an embedded lab, files inside its state folder are made
    by labsim on first start, so they are not required yet."""
    wanted = {"proxmox.ca_file": lab.proxmox.ca_file, "ssh.public_key": lab.ssh.public_key}
    wanted |= {f"charts.{name}.values": c.values for name, c in lab.charts.items()}
    for i, issuer in enumerate(lab.tls.issuers if lab.tls else []):
        wanted |= {f"tls.issuers[{i}].{f}": getattr(issuer, f) for f in ("ca_file", "server_ca_file")}
    if lab.observability is not None:
        wanted["observability.rules"] = lab.observability.rules
        wanted["observability.rule_tests"] = lab.observability.rule_tests
        wanted["observability.ntfy.ca_file"] = lab.observability.ntfy.ca_file
        wanted |= {f"observability.charts.{n}.values": c.values for n, c in lab.observability.charts.items()}
    for where, ref in lab.secret_refs().items():
        if ref.path:
            wanted[where] = secrets.resolve_path(ref.path, lab.base_dir)
    state = lab.embedded.state_dir if lab.kind == "embedded" and lab.embedded else None
    errors = []
    for where, path in wanted.items():
        if path is None or path.exists() or (state is not None and path.is_relative_to(state)):
            continue
        errors.append(f"{where}: file {path} does not exist; create it or fix the path")
    return errors


def file_problems(lab: Lab) -> list[str]:
    """What is wrong inside the local files the lab needs (those present: ``missing_files``
    names the others): secrets that cannot be read (a folder, /dev/zero, not UTF-8, no such
    key), a public key that is not one, a CA that is not a certificate, a state folder that is
    a file. Messages never quote a file's content."""
    errors = []
    checks = {"ssh.public_key": (lab.ssh.public_key, localfiles.public_key_line),
              "proxmox.ca_file": (lab.proxmox.ca_file, localfiles.check_pem_certificate)}
    for where, (path, check) in checks.items():
        try:
            if path is not None and path.exists():
                check(path)
        except localfiles.FileProblem as exc:
            errors.append(f"{where}: {exc}")
    for where, ref in lab.secret_refs().items():
        if ref.path and secrets.resolve_path(ref.path, lab.base_dir).exists():
            try:
                lab.secret(ref)
            except SecretError as exc:
                errors.append(f"{where}: {exc}")
    state = lab.embedded.state_dir if lab.kind == "embedded" and lab.embedded else None
    if state is not None and state.exists() and not state.is_dir():
        errors.append(f"embedded.state_dir: {state} is a file; give a folder (the embedded lab keeps its state there)")
    return errors


def unset_variables(lab: Lab) -> list[str]:
    """Secret references to environment variables that are not set (checked, never read out)."""
    return [f"{where}: environment variable {ref.env} is not set; export it before running"
            for where, ref in lab.secret_refs().items() if ref.env and ref.env not in os.environ]
