"""The kernel's knobs a K3s preflight touches: ``sysctl`` (defaults, /etc/sysctl.d applied at
boot and by ``--system``, runtime writes until the next boot), ``modprobe``/``lsmod`` and swap
(the cloud image has none)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labsim.node import image
from labsim.node.coreutils import parse_flags
from labsim.node.registry import CommandContext, CommandResult, command, on_boot

if TYPE_CHECKING:
    from labsim.node.model import NodeModel

SYSCTL_DEFAULTS = {
    "net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0", "vm.swappiness": "60",
    "vm.overcommit_memory": "0", "kernel.panic": "0", "fs.inotify.max_user_instances": "128",
    "fs.inotify.max_user_watches": "65536", "net.core.somaxconn": "4096",
}
BRIDGE_KEYS = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables")
MODULES = {"overlay", "br_netfilter", "nf_conntrack", "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh",
           "iscsi_tcp", "nfs", "nfsv4", "rbd", "wireguard", "vxlan", "ip_tables", "iptable_nat"}
BOOT_MODULES = {"overlay", "nf_conntrack", "ip_tables"}
SYSCTL_FILES = ("/etc/sysctl.conf", "/etc/sysctl.d")


@on_boot
async def boot(node: NodeModel) -> None:
    """Fresh kernel state: defaults, /etc/modules-load.d, then /etc/sysctl.d (as systemd does)."""
    node.kernel_modules = set(BOOT_MODULES)
    for path in _conf_files(node, "/etc/modules-load.d"):
        node.kernel_modules.update(line.strip() for line in _lines(node, path) if line.strip() in MODULES)
    node.sysctl = dict(SYSCTL_DEFAULTS)
    _apply_files(node)


def _lines(node: NodeModel, path: str) -> list[str]:
    return [line for line in node.read(path).decode(errors="replace").splitlines()
            if line.strip() and not line.lstrip().startswith(("#", ";"))]


def _conf_files(node: NodeModel, folder: str) -> list[str]:
    if not node.is_dir(folder):
        return []
    return [f"{folder}/{name}" for name in node.listdir(folder) if name.endswith(".conf")]


def _apply_files(node: NodeModel) -> list[str]:
    applied = []
    files = ([SYSCTL_FILES[0]] if node.is_file(SYSCTL_FILES[0]) else []) + _conf_files(node, SYSCTL_FILES[1])
    for path in files:
        applied.append(f"* Applying {path} ...")
        for line in _lines(node, path):
            key, _, value = line.partition("=")
            if _set(node, key.strip(), value.strip()):
                applied.append(f"{key.strip()} = {value.strip()}")
    return applied


def _known(node: NodeModel, key: str) -> bool:
    return key in node.sysctl or (key in BRIDGE_KEYS and "br_netfilter" in node.kernel_modules)


def _set(node: NodeModel, key: str, value: str) -> bool:
    if not _known(node, key):
        return False
    node.sysctl[key] = value
    return True


def _get(node: NodeModel, key: str) -> str:
    return node.sysctl.get(key, "1" if key in BRIDGE_KEYS else "0")


@command("sysctl")
async def sysctl(ctx: CommandContext) -> CommandResult:
    flags, _, operands = parse_flags(ctx.argv[1:])
    node, out, errors = ctx.node, [], []
    if flags & {"--system", "-p", "--load"}:
        if not ctx.is_root:
            return CommandResult.fail("sysctl: permission denied on key 'net.ipv4.ip_forward'\n", 255)
        return CommandResult.ok("".join(f"{line}\n" for line in _apply_files(node)))
    for operand in operands:
        key, eq, value = operand.partition("=")
        key = key.replace("/", ".")
        if not _known(node, key):
            errors.append(f"sysctl: cannot stat /proc/sys/{key.replace('.', '/')}: No such file or directory\n")
        elif eq or "-w" in flags:
            if not ctx.is_root:
                errors.append(f"sysctl: permission denied on key '{key}'\n")
                continue
            _set(node, key, value)
            out.append(f"{key} = {value}\n")
        else:
            out.append(f"{_get(node, key)}\n" if "-n" in flags else f"{key} = {_get(node, key)}\n")
    if "-a" in flags:
        out += [f"{k} = {v}\n" for k, v in sorted(node.sysctl.items())]
    return CommandResult("".join(out).encode(), "".join(errors).encode(), 255 if errors else 0)


@command("modprobe")
async def modprobe(ctx: CommandContext) -> CommandResult:
    _, _, names = parse_flags(ctx.argv[1:])
    if not ctx.is_root:
        return CommandResult.fail(f"modprobe: ERROR: could not insert '{names[0] if names else ''}': "
                                  "Operation not permitted\n")
    for name in names:
        if name.replace("-", "_") not in MODULES:
            return CommandResult.fail(f"modprobe: FATAL: Module {name} not found in directory "
                                      f"/lib/modules/{image.KERNEL}\n")
        ctx.node.kernel_modules.add(name.replace("-", "_"))
    return CommandResult()


@command("lsmod")
async def lsmod(ctx: CommandContext) -> CommandResult:
    rows = "".join(f"{name:<24}{16384 + 4096 * len(name):>8}  0\n" for name in sorted(ctx.node.kernel_modules))
    return CommandResult.ok("Module                  Size  Used by\n" + rows)


@command("swapoff", "swapon")
async def swap(ctx: CommandContext) -> CommandResult:
    flags, _, _ = parse_flags(ctx.argv[1:])
    if ctx.argv[0].endswith("swapon") and flags & {"--show", "-s", "--summary"}:
        return CommandResult()  # no swap on the cloud image
    if not ctx.is_root:
        return CommandResult.fail(f"{ctx.argv[0]}: Not superuser.\n", 2)
    return CommandResult()

