"""What the Prometheus family's programs (Debian's Go builds of Prometheus, Alertmanager and the
exporters, unpacked into ``.tools/<package>`` by ``scripts/install-programs.sh``) share as pods:
kingpin flags (``--flag=value`` or ``--flag value``) and a YAML configuration file.

A ``GoProgram`` describes one: the image's default arguments (its Dockerfile's CMD) and files,
the listen flags (bound to the pod IP: ``:9090`` becomes ``POD_IP:9090``), the flags whose values
are container paths (made real), and the configuration flag, whose file is rewritten beside the
container with the paths it names (``*_file`` keys, ``rule_files``, ``templates``, file SD
``files``; relative ones resolved against the file's folder, as Prometheus does) made real.
A program reads the rewritten copy: a ConfigMap changed later reaches it when the container restarts.
A program with ``lab_clock`` gets the durations it waits on scaled by the lab's time scale in that
copy (``labsim.runtime.programs.labclock``; the runtime passes the scale in ``TIME_SCALE_ENV``).
"""

from __future__ import annotations

import gzip
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from labsim.runtime.filesystem import ContainerFS
from labsim.runtime.programs import labclock
from labsim.runtime.programs.appmodel import TIME_SCALE_ENV

_PATH_LISTS = ("rule_files", "templates", "scrape_config_files", "files")


def tools_dir() -> Path:
    return Path(os.environ.get("LABSIM_TOOLS") or Path(__file__).resolve().parents[3] / ".tools")


@dataclass(frozen=True)
class GoProgram:
    package: str  # the Debian package, unpacked into .tools/<package>
    binary: str  # in the package's usr/bin
    listen: dict[str, str]  # listen flag -> default address (":9090"); an empty value turns it off
    defaults: tuple[str, ...] = ()  # the image's CMD: the arguments when the container gives none
    paths: tuple[str, ...] = ()  # flags whose values are container paths
    config: str | None = None  # the flag naming the YAML configuration file
    image_files: dict[str, str] = field(default_factory=dict)  # the image's files: container path -> text
    host_paths: dict[str, str] = field(default_factory=dict)  # flags whose values are this machine's paths
    # (config, time scale, folder for files it copies) -> the config with its waits on the lab's clock
    lab_clock: Callable[[dict, float, Path], dict] | None = None
    clock_flags: dict[str, str] = field(default_factory=dict)  # flag -> default: a wait set by a flag (labclock.flags)

    @property
    def hint(self) -> str:
        return f"Debian's {self.package} (make programs: scripts/install-programs.sh unpacks it into .tools)"

    def bin_dir(self) -> Path | None:
        found = tools_dir() / self.package / "usr" / "bin"
        return found if (found / self.binary).exists() else None

    def prepare(self, fs: ContainerFS, image: str, env: dict[str, str]) -> list[tuple[list[str], bytes]]:
        """The image's own files where the container's volumes did not put others."""
        for path, text in self.image_files.items():
            real = fs.host_path(path)
            if not real.exists() and not real.parent.is_symlink():
                real.parent.mkdir(parents=True, exist_ok=True)
                real.write_text(text)
        return []

    def server(self, fs: ContainerFS, image: str, env: dict[str, str], pod_ip: str, args: list[str]) -> list[str]:
        bins = self.bin_dir()
        assert bins is not None
        scale = float(env.get(TIME_SCALE_ENV, "1"))
        return [str(bins / self.binary), *self.translate(args or list(self.defaults), fs, pod_ip, scale)]

    def translate(self, args: list[str], fs: ContainerFS, pod_ip: str, time_scale: float = 1.0) -> list[str]:
        flags = _joined(args, {*self.listen, *self.paths, *self.host_paths, *self.clock_flags,
                               *([self.config] if self.config else [])})
        translated, seen = [], set()
        for arg in flags:
            name, _, value = arg.partition("=")
            seen.add(name)
            if name in self.listen:
                arg = f"{name}={_on(pod_ip, value)}" if value else arg
            elif name in self.host_paths:
                arg = f"{name}={self.host_paths[name]}"
            elif name == self.config:
                arg = f"{name}={self._config(fs, value, time_scale)}"
            elif name in self.paths and value.startswith("/"):
                arg = f"{name}={fs.host_path(value)}"
            translated.append(arg)
        translated += [f"{name}={_on(pod_ip, default)}" for name, default in self.listen.items()
                       if name not in seen and default]
        return translated + labclock.flags(self.clock_flags, translated, time_scale)

    def rewrite_config(self, fs: ContainerFS, path: str, time_scale: float = 1.0) -> Path:
        """The program's copy of its configuration file brought in line with the file (before a reload)."""
        return self._config(fs, path, time_scale)

    def _config(self, fs: ContainerFS, path: str, time_scale: float = 1.0) -> Path:
        """The configuration file rewritten with real paths and, with ``lab_clock``, the lab's clock
        (the original if it does not parse)."""
        source = fs.host_path(path)
        try:
            doc = yaml.safe_load(source.read_text())
        except (OSError, yaml.YAMLError):
            return source  # the program reports the missing or broken file itself
        doc = _real_paths(doc, fs, posixpath.dirname(path))
        if self.lab_clock is not None and isinstance(doc, dict):
            doc = self.lab_clock(doc, time_scale, fs.folder)
        copy = fs.folder / f"{self.binary}-config.yml"
        copy.write_text(yaml.safe_dump(doc, sort_keys=False))
        return copy


def unpack_operator_config(fs: ContainerFS, packed: str, target: str) -> None:
    """What prometheus-operator's ``init-config-reloader`` container does before the program
    starts: the gzipped configuration its Secret holds, unpacked (``$(POD_NAME)`` expanded) where
    the program reads it. Nothing when the pod has no such Secret (not the operator's pod)."""
    source, out = fs.host_path(packed), fs.host_path(target)
    if source.is_file() and not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(gzip.decompress(source.read_bytes()).decode().replace("$(POD_NAME)", fs.spec.name))


def _joined(args: list[str], valued: set[str]) -> list[str]:
    """``--flag value`` as ``--flag=value`` for the flags that take a value here."""
    joined, items = [], iter(args)
    for arg in items:
        if arg in valued:
            arg = f"{arg}={next(items, '')}"
        joined.append(arg)
    return joined


def _on(pod_ip: str, address: str) -> str:
    """``:9090``, ``0.0.0.0:9090`` or ``[::]:9090`` on the pod IP."""
    return f"{pod_ip}:{address.rsplit(':', 1)[-1]}"


def _real_paths(node, fs: ContainerFS, base: str):
    def real(path: str) -> str:
        return str(fs.host_path(posixpath.join(base, path)))

    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if isinstance(value, str) and key.endswith("_file") and value:
                out[key] = real(value)
            elif key in _PATH_LISTS and isinstance(value, list) and all(isinstance(v, str) for v in value):
                out[key] = [real(v) for v in value]
            else:
                out[key] = _real_paths(value, fs, base)
        return out
    if isinstance(node, list):
        return [_real_paths(item, fs, base) for item in node]
    return node
