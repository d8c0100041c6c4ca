"""The Ubuntu 22.04.5 cloud image a node boots: its file tree, what cloud-init writes from
the VM's config, the kernel's /proc files, and the sizes it reports for the VM's hardware."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labsim.node.model import NodeModel

# The kernel release and OS name: what `uname -r` and /etc/os-release say, and what k3s (labsim.kube)
# reports in each Node's status.nodeInfo.
KERNEL = "5.15.0-126-generic"
KERNEL_BUILD = "#136-Ubuntu SMP Wed Nov 6 10:38:22 UTC 2024"
OS_NAME = "Ubuntu 22.04.5 LTS"
MIB = 1024 * 1024
UID = {"root": 0}
USER_UID = 1000
# Units running on a fresh cloud image; they start at every boot.
BASE_SERVICES = (
    "ssh", "cron", "rsyslog", "systemd-journald", "systemd-networkd", "systemd-resolved",
    "systemd-timesyncd", "qemu-guest-agent", "unattended-upgrades", "snapd", "multipathd",
)
# The image's own footprint on its root file system, and a booted system's memory use.
BASE_DISK_USED = 1_950 * MIB
BASE_MEMORY_USED = 210 * MIB
SERVICE_MEMORY_USED = 300 * MIB
BUFF_CACHE = 420 * MIB

OS_RELEASE = f"""\
PRETTY_NAME="{OS_NAME}"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.5 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=jammy
"""
LSB_RELEASE = f"""\
DISTRIB_ID=Ubuntu
DISTRIB_RELEASE=22.04
DISTRIB_CODENAME=jammy
DISTRIB_DESCRIPTION="{OS_NAME}"
"""
# /etc/skel: what a new user's home holds.
SKELETON = {
    ".bash_logout": "# ~/.bash_logout: executed by bash(1) when login shell exits.\n",
    ".bashrc": "# ~/.bashrc: executed by bash(1) for non-login shells.\n[ -z \"$PS1\" ] && return\n",
    ".profile": "# ~/.profile: executed by the command interpreter for login shells.\n",
}
DIRECTORIES = {
    "/": 0o755, "/etc": 0o755, "/etc/systemd": 0o755, "/etc/systemd/system": 0o755,
    "/etc/sudoers.d": 0o750, "/etc/ssh": 0o755, "/etc/sysctl.d": 0o755, "/etc/modules-load.d": 0o755,
    "/etc/apt": 0o755, "/var/lib/dpkg": 0o755, "/home": 0o755, "/root": 0o700, "/tmp": 0o1777,
    "/usr": 0o755, "/usr/bin": 0o755, "/usr/sbin": 0o755, "/usr/local": 0o755,
    "/usr/local/bin": 0o755, "/var": 0o755, "/var/lib": 0o755, "/var/log": 0o755,
    "/var/tmp": 0o1777, "/run": 0o755, "/opt": 0o755, "/srv": 0o755, "/mnt": 0o755, "/dev": 0o755,
}


def uid(model: NodeModel, user: str) -> int:
    return UID.get(user, USER_UID if user == model.spec.user else USER_UID + 1)


def home(model: NodeModel, user: str) -> str:
    return "/root" if user == "root" else f"/home/{user}"


def install(model: NodeModel) -> None:
    """First boot lays down the image; every boot applies cloud-init from the VM's config."""
    for path, mode in DIRECTORIES.items():
        if not model.is_dir(path):
            model.mkdir(path, mode=mode)
    first_boot = {
        "/etc/os-release": (OS_RELEASE, 0o644),
        "/etc/lsb-release": (LSB_RELEASE, 0o644),
        "/etc/issue": (f"{OS_NAME} \\n \\l\n\n", 0o644),
        "/etc/machine-id": (uuid.uuid4().hex + "\n", 0o444),
        "/etc/shadow": ("root:*:20000:0:99999:7:::\n", 0o640),
    }
    for path, (text, mode) in first_boot.items():
        if not model.exists(path):
            model.write(path, text.encode(), mode=mode)
    for name in BASE_SERVICES:
        if not model.is_enabled(name):
            model.enable_service(name)
    _apply_cloud_init(model)


def _apply_cloud_init(model: NodeModel) -> None:
    spec, user = model.spec, model.spec.user
    user_home = home(model, user)
    if not model.is_dir(user_home):
        model.mkdir(user_home, mode=0o750)
        model.chown(user_home, user)
    for name, text in SKELETON.items():
        if not model.exists(f"{user_home}/{name}"):
            model.write(f"{user_home}/{name}", text.encode(), mode=0o644)
            model.chown(f"{user_home}/{name}", user)
    if not model.is_dir(f"{user_home}/.ssh"):
        model.mkdir(f"{user_home}/.ssh", mode=0o700)
        model.chown(f"{user_home}/.ssh", user)
    files = {
        "/etc/hostname": (f"{spec.name}\n", 0o644),
        "/etc/hosts": (f"127.0.0.1 localhost\n127.0.1.1 {spec.fqdn} {spec.name}\n", 0o644),
        "/etc/resolv.conf": (_resolv_conf(model), 0o644),
        "/etc/passwd": (_passwd(model), 0o644),
        "/etc/sudoers.d/90-cloud-init-users": (f"{user} ALL=(ALL) NOPASSWD:ALL\n", 0o440),
        f"{user_home}/.ssh/authorized_keys": ("".join(k.strip() + "\n" for k in spec.authorized_keys), 0o600),
    }
    for path, (text, mode) in files.items():
        model.write(path, text.encode(), mode=mode)
    model.chown(f"{user_home}/.ssh/authorized_keys", user)


def _resolv_conf(model: NodeModel) -> str:
    spec = model.spec
    lines = [f"nameserver {ns}" for ns in spec.nameservers] or ["nameserver 127.0.0.53"]
    if spec.searchdomain:
        lines.append(f"search {spec.searchdomain}")
    return "\n".join(lines) + "\n"


def _passwd(model: NodeModel) -> str:
    user = model.spec.user
    return (
        "root:x:0:0:root:/root:/bin/bash\n"
        "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        f"{user}:x:{USER_UID}:{USER_UID}:Ubuntu:/home/{user}:/bin/bash\n"
    )


# --- sizes the VM's config decides -----------------------------------------------------------------

def memory(model: NodeModel) -> dict[str, int]:
    """Bytes as ``free -b`` reports them: the kernel keeps ~2.3% of the VM's memory."""
    total = model.spec.memory_mib * MIB - model.spec.memory_mib * 24 * 1024
    running = sum(1 for name in model.active_services() if name not in BASE_SERVICES)
    used = min(total, BASE_MEMORY_USED + SERVICE_MEMORY_USED * running)
    cache = min(BUFF_CACHE, total - used)
    return {"total": total, "used": used, "free": total - used - cache, "shared": 1_200_000,
            "buff_cache": cache, "available": total - used}


def root_fs(model: NodeModel) -> dict[str, int]:
    """Bytes of ``/`` (ext4 on /dev/sda1): the disk minus the boot partitions and ext4's
    metadata; 5% is reserved for root, as mkfs.ext4 leaves it."""
    size = int((model.spec.disk_bytes - 117 * MIB) * 0.984) // 4096 * 4096
    used = min(size, BASE_DISK_USED + model.disk_used())
    return {"size": size, "used": used, "avail": max(0, size - used - size // 20)}


# --- kernel files ----------------------------------------------------------------------------------

def is_virtual(path: str) -> bool:
    return path in _VIRTUAL


def virtual_file(model: NodeModel, path: str) -> bytes | None:
    """Files the kernel makes up on read; None for a path of the real tree."""
    render = _VIRTUAL.get(path)
    return None if render is None else render(model).encode()


def _cpuinfo(model: NodeModel) -> str:
    block = ("processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: QEMU Virtual CPU version 2.5+\n"
             "cpu cores\t: {cores}\n\n")
    return "".join(block.format(n=n, cores=model.spec.cores) for n in range(model.spec.cores))


def _meminfo(model: NodeModel) -> str:
    m = memory(model)
    return (f"MemTotal:       {m['total'] // 1024} kB\nMemFree:        {m['free'] // 1024} kB\n"
            f"MemAvailable:   {m['available'] // 1024} kB\nSwapTotal:             0 kB\n")


def _uptime(model: NodeModel) -> str:
    up = max(0.0, model.clock.now() - model.booted_at)
    return f"{up:.2f} {up * model.spec.cores * 0.9:.2f}\n"


_VIRTUAL = {
    "/dev/null": lambda model: "",
    "/proc/cpuinfo": _cpuinfo,
    "/proc/meminfo": _meminfo,
    "/proc/uptime": _uptime,
    "/proc/loadavg": lambda model: "0.08 0.03 0.01 1/123 4567\n",
    "/proc/version": lambda model: f"Linux version {KERNEL} (buildd@lcy02-amd64-001) {KERNEL_BUILD}\n",
    "/proc/sys/kernel/hostname": lambda model: model.hostname + "\n",
    "/proc/sys/kernel/random/boot_id": lambda model: str(uuid.UUID(int=int(model.booted_at * 1e6))) + "\n",
}
