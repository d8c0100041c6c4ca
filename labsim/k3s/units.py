"""The files that make k3s on a node, as k3s' installer and k3s itself lay them out: the binary
(its version), the `k3s`/`k3s-agent` systemd units with their ExecStart arguments and
environment files, and the configuration a unit starts with (flags, config.yaml and
config.yaml.d/, K3S_* variables, merged as k3s merges them)."""

from __future__ import annotations

import shlex

from labsim.k3s.config import (
    CONFIG_DIR,
    CONFIG_FILE,
    DATA_DIR,
    K3sConfig,
    merge,
    parse_args,
    parse_config_files,
)
from labsim.k3s.versions import K3sVersion

SERVER_UNIT = "k3s"
AGENT_UNIT = "k3s-agent"
UNITS = {SERVER_UNIT: "server", AGENT_UNIT: "agent"}
BINARY = "/usr/local/bin/k3s"
KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
SERVER_DIR = f"{DATA_DIR}/server"
TOKEN_FILE = f"{SERVER_DIR}/token"
NODE_TOKEN_FILE = f"{SERVER_DIR}/node-token"
SERVER_CA = f"{SERVER_DIR}/tls/server-ca.crt"


def unit_path(unit: str) -> str:
    return f"/etc/systemd/system/{unit}.service"


def env_path(unit: str) -> str:
    return f"/etc/systemd/system/{unit}.service.env"


# --- the binary ---------------------------------------------------------------------------------

def binary_content(version: K3sVersion) -> bytes:
    return f"#!/bin/sh\n# k3s version {version} ({version.commit}) -- labsim stand-in for the k3s binary\n".encode()


def installed_version(node) -> K3sVersion | None:
    if not node.is_file(BINARY):
        return None
    for text in node.read(BINARY).decode(errors="replace").splitlines():
        if text.startswith("# k3s version "):
            return K3sVersion.parse(text.split()[3])
    return None


# --- unit files ---------------------------------------------------------------------------------

def unit_file(args: list[str]) -> str:
    """The unit as k3s' installer writes it; ExecStart carries the quoted k3s arguments."""
    exec_lines = " \\\n".join([BINARY, *(f"\t{shlex.quote(a)}" for a in args)])
    return (
        "[Unit]\nDescription=Lightweight Kubernetes\nDocumentation=https://k3s.io\n"
        "Wants=network-online.target\nAfter=network-online.target\n\n"
        "[Install]\nWantedBy=multi-user.target\n\n"
        "[Service]\nType=notify\nEnvironmentFile=-/etc/default/%N\nEnvironmentFile=-/etc/sysconfig/%N\n"
        "EnvironmentFile=-/etc/systemd/system/%N.service.env\nKillMode=process\nDelegate=yes\n"
        "LimitNOFILE=1048576\nLimitNPROC=infinity\nLimitCORE=infinity\nTasksMax=infinity\n"
        "TimeoutStartSec=0\nRestart=always\nRestartSec=5s\n"
        "ExecStartPre=-/sbin/modprobe br_netfilter\nExecStartPre=-/sbin/modprobe overlay\n"
        f"ExecStart={exec_lines}\n\n"
    )


def env_file(env: dict[str, str]) -> str:
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in sorted(env.items()))


def read_exec_args(node, unit: str) -> list[str]:
    """The k3s arguments of the unit's ExecStart (after the binary and the role)."""
    text = node.read(unit_path(unit)).decode()
    joined = text.replace("\\\n", " ")
    for entry in joined.splitlines():
        if entry.startswith("ExecStart="):
            words = shlex.split(entry[len("ExecStart="):])
            return words[2:] if len(words) > 1 and words[1] in ("server", "agent") else words[1:]
    return []


def read_env(node, unit: str) -> dict[str, str]:
    if not node.is_file(env_path(unit)):
        return {}
    env = {}
    for entry in node.read(env_path(unit)).decode().splitlines():
        key, sep, value = entry.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            words = shlex.split(value)
            env[key.strip()] = words[0] if words else ""
    return env


def config_texts(node) -> list[tuple[str, str]]:
    """config.yaml, then config.yaml.d/*.yaml in lexical order, as k3s reads them."""
    texts = []
    if node.is_file(CONFIG_FILE):
        texts.append((CONFIG_FILE, node.read(CONFIG_FILE).decode()))
    if node.is_dir(CONFIG_DIR):
        for name in node.listdir(CONFIG_DIR):
            if name.endswith((".yaml", ".yml")):
                path = f"{CONFIG_DIR}/{name}"
                texts.append((path, node.read(path).decode()))
    return texts


def effective_config(node, role: str, args: list[str], env: dict[str, str]) -> K3sConfig:
    file_items, warnings = parse_config_files(config_texts(node), role)
    return merge(role, env=env, file_items=file_items, cli_items=parse_args(args, role), warnings=warnings)


def unit_config(node, unit: str) -> K3sConfig:
    return effective_config(node, UNITS[unit], read_exec_args(node, unit), read_env(node, unit))


def node_name(node, cfg: K3sConfig) -> str:
    return (cfg.get("node-name") or node.hostname).lower()
