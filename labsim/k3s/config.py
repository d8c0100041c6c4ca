"""k3s configuration: command-line flags, `/etc/rancher/k3s/config.yaml` (+ `config.yaml.d/`)
and `K3S_*` environment variables, merged as k3s merges them.

k3s turns the config file into flags placed before the command line's, so a scalar given on
the command line wins while repeatable flags (lists) collect both; environment variables only
fill flags that neither sets. Keys the command does not know are skipped with a warning when
they come from the file and refused when they come from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

CONFIG_FILE = "/etc/rancher/k3s/config.yaml"
CONFIG_DIR = "/etc/rancher/k3s/config.yaml.d"
DATA_DIR = "/var/lib/rancher/k3s"


@dataclass(frozen=True)
class Flag:
    name: str
    kind: str  # "str" | "list" | "bool"
    roles: frozenset[str]
    aliases: tuple[str, ...] = ()
    env: str | None = None


def _flags(roles: str, spec: str) -> list[Flag]:
    """Flags from ``name:kind[:alias,...][:ENV]`` words, for the roles given."""
    flags = []
    for word in spec.split():
        name, kind, *rest = word.split(":")
        aliases = tuple(a for a in (rest[0].split(",") if rest else []) if a)
        env = rest[1] if len(rest) > 1 else None
        flags.append(Flag(name, kind, frozenset(roles.split()), aliases, env))
    return flags


_ALL_FLAGS = (
    _flags("server agent", """
        token:str:t:K3S_TOKEN token-file:str::K3S_TOKEN_FILE server:str:s:K3S_URL data-dir:str:d:K3S_DATA_DIR
        node-name:str::K3S_NODE_NAME node-label:list node-taint:list node-ip:list:i node-external-ip:list
        with-node-id:bool kubelet-arg:list kube-proxy-arg:list debug:bool selinux:bool::K3S_SELINUX
        protect-kernel-defaults:bool flannel-iface:str prefer-bundled-bin:bool resolv-conf:str
        lb-server-port:str image-credential-provider-config:str private-registry:str
        """)
    + _flags("server", """
        tls-san:list disable:list write-kubeconfig-mode:str::K3S_KUBECONFIG_MODE
        write-kubeconfig:str:o:K3S_KUBECONFIG_OUTPUT cluster-init:bool::K3S_CLUSTER_INIT
        cluster-reset:bool::K3S_CLUSTER_RESET cluster-reset-restore-path:str
        datastore-endpoint:str::K3S_DATASTORE_ENDPOINT agent-token:str::K3S_AGENT_TOKEN
        etcd-snapshot-schedule-cron:str etcd-snapshot-retention:str etcd-snapshot-dir:str
        etcd-disable-snapshots:bool etcd-expose-metrics:bool disable-network-policy:bool
        disable-cloud-controller:bool disable-helm-controller:bool disable-kube-proxy:bool
        flannel-backend:str cluster-cidr:list service-cidr:list cluster-dns:list cluster-domain:str
        kube-apiserver-arg:list kube-controller-manager-arg:list kube-scheduler-arg:list
        etcd-arg:list secrets-encryption:bool embedded-registry:bool default-local-storage-path:str
        egress-selector-mode:str advertise-address:str bind-address:str https-listen-port:str
        system-default-registry:str node-external-dns:list servicelb-namespace:str
        """)
    + _flags("etcd-snapshot", """
        token:str:t:K3S_TOKEN server:str:s:K3S_URL data-dir:str:d:K3S_DATA_DIR node-name:str::K3S_NODE_NAME
        debug:bool name:str dir:str:etcd-snapshot-dir snapshot-retention:str:etcd-snapshot-retention
        snapshot-compress:bool:etcd-snapshot-compress
        """)
)
# Per command (server, agent, etcd-snapshot): every name and alias -> its flag.
_TABLES: dict[str, dict[str, Flag]] = {}
for _flag in _ALL_FLAGS:
    for _role in _flag.roles:
        _TABLES.setdefault(_role, {}).update({a: _flag for a in (_flag.name, *_flag.aliases)})


def flag(role: str, name: str) -> Flag | None:
    return _TABLES[role].get(name)


# Values of these list flags may also be comma-separated (`--disable=traefik,servicelb`).
_COMMA_LISTS = {"disable", "tls-san", "node-ip", "node-external-ip", "cluster-cidr", "service-cidr",
                "cluster-dns", "node-external-dns"}


class ConfigError(ValueError):
    """A configuration k3s refuses; the message is what k3s prints."""


@dataclass
class K3sConfig:
    role: str
    values: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    @property
    def token(self) -> str | None:
        return self.get("token")

    @property
    def server(self) -> str | None:
        return self.get("server")

    @property
    def tls_san(self) -> list[str]:
        return list(self.get("tls-san", []))

    @property
    def disable(self) -> list[str]:
        return list(self.get("disable", []))

    @property
    def cluster_init(self) -> bool:
        return bool(self.get("cluster-init", False))

    @property
    def embedded_etcd(self) -> bool:
        """k3s runs etcd when asked to initialise a cluster or when a server joins another one."""
        if self.get("datastore-endpoint"):
            return False
        return self.cluster_init or (self.role == "server" and bool(self.server))

    @property
    def kubeconfig_mode(self) -> int:
        mode = self.get("write-kubeconfig-mode")
        if mode is None:
            return 0o600
        try:
            return int(str(mode), 8)
        except ValueError as e:
            raise ConfigError(f'invalid write-kubeconfig-mode "{mode}": not an octal file mode') from e

    @property
    def node_labels(self) -> dict[str, str]:
        labels = {}
        for item in self.get("node-label", []):
            key, _, value = item.partition("=")
            labels[key] = value
        return labels

    @property
    def node_taints(self) -> list[dict[str, str]]:
        return [parse_taint(item) for item in self.get("node-taint", [])]


def parse_taint(text: str) -> dict[str, str]:
    """``key=value:Effect`` or ``key:Effect``, as kubelet's --register-with-taints takes them."""
    spec, sep, effect = text.rpartition(":")
    if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ConfigError(f'invalid taint "{text}": expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute')
    key, _, value = spec.partition("=")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def parse_args(args: list[str], role: str, positionals: list[str] | None = None) -> list[tuple[str, Any]]:
    """Command-line flags of ``k3s ROLE`` as (flag name, value) in order of appearance; other
    arguments go to ``positionals`` when the command takes some (`etcd-snapshot delete NAME`)."""
    items: list[tuple[str, Any]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            if positionals is None:
                raise ConfigError(f"Incorrect Usage: unexpected argument {arg!r} (k3s {role} takes only flags)")
            positionals.append(arg)
            i += 1
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        found = flag(role, name)
        if found is None:
            raise ConfigError(f"Incorrect Usage: flag provided but not defined: -{name}")
        if found.kind == "bool":
            items.append((found.name, _bool(value) if eq else True))
        else:
            if not eq:
                i += 1
                if i >= len(args):
                    raise ConfigError(f"Incorrect Usage: flag needs an argument: -{name}")
                value = args[i]
            items.append((found.name, value))
        i += 1
    return items


def parse_config_files(texts: list[tuple[str, str]], role: str) -> tuple[list[tuple[str, Any]], list[str]]:
    """(path, YAML text) pairs, config.yaml first then config.yaml.d/ in order, as flag items;
    a later file replaces a key unless the key ends with ``+`` (then it appends)."""
    merged: dict[str, Any] = {}
    warnings: list[str] = []
    for path, text in texts:
        doc = yaml.safe_load(text) or {}
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: config file must be a YAML mapping of flag names to values")
        for key, value in doc.items():
            key = str(key)
            if key.endswith("+") and key[:-1] in merged:
                merged[key[:-1]] = _as_list(merged[key[:-1]]) + _as_list(value)
            else:
                merged[key.rstrip("+")] = value
    items: list[tuple[str, Any]] = []
    for key, value in merged.items():
        found = flag(role, key)
        if found is None:
            warnings.append(f"Unknown flag --{key} found in config.yaml, skipping")
            continue
        values = _as_list(value) if found.kind == "list" else [value]
        items.extend((found.name, v if found.kind == "bool" else str(v)) for v in values)
    return items, warnings


def merge(role: str, *, env: dict[str, str], file_items: list[tuple[str, Any]],
          cli_items: list[tuple[str, Any]], warnings: list[str] | None = None) -> K3sConfig:
    """The effective configuration: file flags, then command-line flags, then env for what is unset."""
    values: dict[str, Any] = {}
    for name, value in [*file_items, *cli_items]:
        kind = _TABLES[role][name].kind
        if kind == "list":
            parts = value.split(",") if name in _COMMA_LISTS else [value]
            values.setdefault(name, []).extend(p.strip() for p in parts if p.strip())
        elif kind == "bool":
            values[name] = _bool(value) if isinstance(value, str) else bool(value)
        else:
            values[name] = value
    for known in set(_TABLES[role].values()):
        if known.env and known.name not in values and env.get(known.env):
            values[known.name] = _bool(env[known.env]) if known.kind == "bool" else env[known.env]
    return K3sConfig(role, values, list(warnings or []))


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value]


def _bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no", ""):
        return False
    raise ConfigError(f'invalid boolean value "{text}"')
