"""The k3s installer: the script `curl -sfL https://get.k3s.io` prints (see curl.py), and what it
does when a node runs it (`sh -s - [server|agent] [flags]`): install k3s as get.k3s.io's script does.

Environment it honours: INSTALL_K3S_VERSION / INSTALL_K3S_CHANNEL, INSTALL_K3S_EXEC (words put
before the arguments), INSTALL_K3S_SKIP_ENABLE, INSTALL_K3S_SKIP_START, and every K3S_* variable
(kept in the unit's environment file: K3S_URL, K3S_TOKEN, K3S_KUBECONFIG_MODE, ...). It writes
the binary, the kubectl/crictl/ctr links, the killall and uninstall scripts and the systemd unit,
then (re)starts the unit: re-running it with another version upgrades the node.
"""

from __future__ import annotations

import os
import shlex

from labsim.k3s import service, units
from labsim.k3s.versions import STABLE, K3sVersion, VersionError
from labsim.node.registry import CommandContext, CommandResult, command, script

INSTALL_URLS = ("https://get.k3s.io", "http://get.k3s.io")
MARKER = "# k3s-install: labsim"
INTERPRETER = "labsim-k3s-install"  # what the script's body calls when a shell runs it from a file
RELEASES = "https://github.com/k3s-io/k3s/releases/download"
BIN_DIR = "/usr/local/bin"
LINKS = ("kubectl", "crictl", "ctr")
KILLALL = f"{BIN_DIR}/k3s-killall.sh"
# Modelled seconds to download and verify the binary.
DOWNLOAD_SECONDS = 15.0

SCRIPT = f"""#!/bin/sh
set -e
set -o noglob
{MARKER}

# Usage:
#   curl -sfL https://get.k3s.io | ENV_VAR=... sh -s - [server|agent] [k3s flags]
#
# Examples:
#   A server without traefik:
#     curl -sfL https://get.k3s.io | INSTALL_K3S_EXEC="--disable=traefik" sh -
#   An agent pointing at a server:
#     curl -sfL https://get.k3s.io | K3S_URL=https://server:6443 K3S_TOKEN=xxx sh -
#
# Environment variables:
#   - K3S_*                     kept for the systemd service (K3S_URL defaults the command to agent)
#   - INSTALL_K3S_VERSION       the release to install (default: the stable channel's)
#   - INSTALL_K3S_CHANNEL       stable or latest
#   - INSTALL_K3S_EXEC          command and flags put before the script's arguments
#   - INSTALL_K3S_SKIP_ENABLE   do not enable or start the service
#   - INSTALL_K3S_SKIP_START    do not start the service
#
# On the embedded lab (labsim) the simulated node performs the installation itself:
{INTERPRETER} "$@"
"""


class InstallError(Exception):
    pass


@script(MARKER)
async def install(ctx: CommandContext) -> CommandResult:
    """`sh -s - ARGS` fed the script; ctx.argv holds ARGS."""
    return await _run(ctx, ctx.argv)


@command(INTERPRETER)
async def install_from_file(ctx: CommandContext) -> CommandResult:
    """`sh install.sh ARGS`: the script's last line hands ARGS here."""
    return await _run(ctx, ctx.argv[1:])


async def _run(ctx: CommandContext, args: list[str]) -> CommandResult:
    out: list[str] = []
    try:
        await _install(ctx, args, out)
    except InstallError as e:
        return CommandResult(stdout="".join(out).encode(), stderr=f"[ERROR]  {e}\n".encode(), exit_status=1)
    except service.UnitStartFailed as e:
        return CommandResult(stdout="".join(out).encode(), stderr=str(e).encode(), exit_status=1)
    return CommandResult.ok("".join(out))


async def _install(ctx: CommandContext, args: list[str], out: list[str]) -> None:
    def info(msg: str) -> None:
        out.append(f"[INFO]  {msg}\n")

    env, node = ctx.env, ctx.node
    role, args = _command(env, args)
    unit = units.SERVER_UNIT if role == "server" else units.AGENT_UNIT
    await _install_binary(node, _release(env, info), info)
    info("Skipping installation of SELinux RPM")
    _write_files(node, unit, [role, *args], env, info)
    if _true(env.get("INSTALL_K3S_SKIP_ENABLE")):
        return
    info(f"systemd: Enabling {unit} unit")
    if not node.is_enabled(unit):
        out.append(f"Created symlink /etc/systemd/system/multi-user.target.wants/{unit}.service "
                   f"\u2192 /etc/systemd/system/{unit}.service.\n")
        node.enable_service(unit)
    if _true(env.get("INSTALL_K3S_SKIP_START")):
        return
    info(f"systemd: Starting {unit}")
    await service.restart(node, unit)


def _write_files(node, unit: str, exec_args: list[str], env: dict[str, str], info) -> None:
    """The links, the killall and uninstall scripts, the unit and its environment file."""
    for link in LINKS:
        if node.exists(f"{BIN_DIR}/{link}"):
            info(f"Skipping {BIN_DIR}/{link} symlink to k3s, already exists")
        else:
            info(f"Creating {BIN_DIR}/{link} symlink to k3s")
            os.symlink("k3s", node.host_path(f"{BIN_DIR}/{link}"))
    info(f"Creating killall script {KILLALL}")
    node.write(KILLALL, _stub("k3s-killall.sh"), mode=0o755)
    uninstall = f"{BIN_DIR}/{unit}-uninstall.sh"
    info(f"Creating uninstall script {uninstall}")
    node.write(uninstall, _stub(f"{unit}-uninstall.sh"), mode=0o755)
    info(f"env: Creating environment file {units.env_path(unit)}")
    node.write(units.env_path(unit), units.env_file(_kept_env(env)).encode(), mode=0o600)
    info(f"systemd: Creating service file {units.unit_path(unit)}")
    node.write(units.unit_path(unit), units.unit_file(exec_args).encode(), mode=0o755)
    service.attach(node)


def _command(env: dict[str, str], argv: list[str]) -> tuple[str, list[str]]:
    """The k3s command and its arguments: INSTALL_K3S_EXEC's words, then the script's."""
    url = env.get("K3S_URL")
    if url and not url.startswith("https://"):
        raise InstallError(f"Only https:// URLs are supported for K3S_URL (have {url})")
    words = shlex.split(env.get("INSTALL_K3S_EXEC", "")) + list(argv)
    if words and not words[0].startswith("-"):
        role, args = words[0], words[1:]
    elif url:
        if not env.get("K3S_TOKEN") and not env.get("K3S_TOKEN_FILE"):
            raise InstallError("Defaulted k3s exec command to 'agent' because K3S_URL is defined, "
                               "but K3S_TOKEN or K3S_TOKEN_FILE is not defined.")
        role, args = "agent", words
    else:
        role, args = "server", words
    if role not in ("server", "agent"):
        raise InstallError(f"Unsupported k3s command {role!r}: the embedded lab installs 'server' or 'agent'")
    if role == "server" and url:
        raise InstallError("Joining a second server (K3S_URL with 'server') is not modelled by the embedded lab")
    return role, args


def _release(env: dict[str, str], info) -> K3sVersion:
    text = env.get("INSTALL_K3S_VERSION")
    if not text:
        info(f"Finding release for channel {env.get('INSTALL_K3S_CHANNEL') or 'stable'}")
        text = STABLE
    info(f"Using {text} as release")
    info(f"Downloading hash {RELEASES}/{text}/sha256sum-amd64.txt")
    try:
        version = K3sVersion.parse(text)
    except VersionError as e:
        raise InstallError("Download failed") from e
    if not version.released:  # the release's sha256sum file answers 404: curl -f fails
        raise InstallError("Download failed")
    return version


async def _install_binary(node, version: K3sVersion, info) -> None:
    if units.installed_version(node) == version:
        info("Skipping binary downloaded, installed k3s matches hash")
        return
    info(f"Downloading binary {RELEASES}/{version}/k3s")
    await node.lab.clock.sleep(DOWNLOAD_SECONDS, f"{node.hostname} k3s {version} download")
    info("Verifying binary download")
    info(f"Installing k3s to {units.BINARY}")
    node.mkdir(BIN_DIR)
    node.write(units.BINARY, units.binary_content(version), mode=0o755)


def _kept_env(env: dict[str, str]) -> dict[str, str]:
    """What the installer copies into the unit's environment file."""
    return {k: v for k, v in env.items() if k.upper().startswith(("K3S_", "CONTAINERD_"))}


def _stub(name: str) -> bytes:
    return f"#!/bin/sh\n# {name}: written by the k3s installer (labsim runs it as a registered command)\n".encode()


def _true(value: str | None) -> bool:
    return (value or "").lower() == "true"
