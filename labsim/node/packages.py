"""Debian packages on a node: dpkg's status file (``/var/lib/dpkg/status``, so it persists with
the node's files), ``apt-get``/``apt`` install, remove, update and upgrade from a small archive of
the packages a K3s lab asks for, ``apt list --upgradable``, and ``dpkg -s``/``dpkg -l``/``dpkg-query``.
Installing records the package; it does not add the package's programs to the node.

The archive holds security updates newer than the cloud image's packages (``UPDATES``), so a
fresh node has pending updates; upgrading one that needs a restart (systemd) writes
``/var/run/reboot-required`` as Ubuntu's update-notifier does, and a boot clears it (/run is a
tmpfs). The image has unattended-upgrades enabled (``/etc/apt/apt.conf.d/20auto-upgrades``), as
Ubuntu's cloud images do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labsim.node import image
from labsim.node.coreutils import parse_flags
from labsim.node.registry import CommandContext, CommandResult, command, on_boot

if TYPE_CHECKING:
    from labsim.node.model import NodeModel

STATUS = "/var/lib/dpkg/status"
# What the Ubuntu 22.04 cloud image has installed (the ones a provisioning tool looks at).
BASE = {
    "apt": "2.4.13", "bash": "5.1-6ubuntu1.1", "ca-certificates": "20240203~22.04.1",
    "cloud-init": "24.4-0ubuntu1~22.04.1", "coreutils": "8.32-4.1ubuntu1.2", "curl": "7.81.0-1ubuntu1.20",
    "iptables": "1.8.7-1ubuntu5.2", "openssh-server": "1:8.9p1-3ubuntu0.10", "python3": "3.10.6-1~22.04.1",
    "qemu-guest-agent": "1:6.2+dfsg-2ubuntu6.24", "sudo": "1.9.9-1ubuntu2.4", "systemd": "249.11-0ubuntu3.12",
    "tar": "1.34+dfsg-1ubuntu0.1.22.04.2", "util-linux": "2.37.2-4ubuntu3.4",
}
# The jammy archive, as far as the lab needs it.
ARCHIVE = BASE | {
    "nfs-common": "1:2.6.1-1ubuntu1.2", "open-iscsi": "2.1.5-1ubuntu1.1", "jq": "1.6-2.1ubuntu3",
    "git": "1:2.34.1-1ubuntu1.12", "htop": "3.0.5-7build2", "wget": "1.21.2-2ubuntu1.1", "unzip": "6.0-26ubuntu3.2",
    "net-tools": "1.60+git20181103.0eebece-1ubuntu5", "chrony": "4.2-2ubuntu2", "cifs-utils": "2:6.14-1ubuntu0.2",
    "postgresql-client": "14+238", "apt-transport-https": "2.4.13", "gnupg": "2.2.27-3ubuntu2.1",
    f"linux-modules-extra-{image.KERNEL}": "5.15.0-126.136",
}
# The programs a package puts on the node, for those modelled with ``command(installed_at=...)``.
PROGRAMS = {"nfs-common": ("/usr/sbin/showmount",)}
# jammy-security updates of the image's packages: name -> newer version.
UPDATES = {
    "openssh-server": "1:8.9p1-3ubuntu0.13", "systemd": "249.11-0ubuntu3.16", "sudo": "1.9.9-1ubuntu2.5",
    "curl": "7.81.0-1ubuntu1.21",
}
# Packages whose upgrade asks for a restart (update-notifier's list, as far as the archive goes).
NEEDS_REBOOT = frozenset({"systemd"})
REBOOT_REQUIRED = "/var/run/reboot-required"
AUTO_UPGRADES = "/etc/apt/apt.conf.d/20auto-upgrades"
AUTO_UPGRADES_TEXT = 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n'
LOCK_ERROR = ("E: Could not open lock file /var/lib/dpkg/lock-frontend - open (13: Permission denied)\n"
              "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), are you root?\n")
# Modelled seconds to download and set up one package.
INSTALL_SECONDS = 4.0


def installed(node: NodeModel) -> dict[str, str]:
    """Package name -> version, from dpkg's status file."""
    if not node.is_file(STATUS):
        return {}
    found, name = {}, None
    for line in node.read(STATUS).decode(errors="replace").splitlines():
        if line.startswith("Package: "):
            name = line.split(": ", 1)[1]
        elif line.startswith("Version: ") and name:
            found[name] = line.split(": ", 1)[1]
    return found


def write_status(node: NodeModel, packages: dict[str, str]) -> None:
    blocks = [f"Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\n"
              for name, version in sorted(packages.items())]
    node.write(STATUS, "\n".join(blocks).encode(), mode=0o644)


@on_boot
async def seed(node: NodeModel) -> None:
    """First boot: the image's packages; the image's unattended-upgrades setting when missing (a
    node first booted by an older labsim gets it at its next boot); every boot: /run is empty
    again (no reboot pending)."""
    if not node.exists(STATUS):
        write_status(node, BASE)
    if not node.exists(AUTO_UPGRADES):
        node.mkdir("/etc/apt/apt.conf.d")
        node.write(AUTO_UPGRADES, AUTO_UPGRADES_TEXT.encode(), mode=0o644)
    for path in (REBOOT_REQUIRED, REBOOT_REQUIRED + ".pkgs"):
        if node.exists(path):
            node.remove(path)


def upgradable(have: dict[str, str]) -> dict[str, str]:
    """Installed packages with a newer version in the archive: name -> that version."""
    return {name: new for name, new in UPDATES.items() if name in have and have[name] != new}


@command("apt-get", "apt")
async def apt_get(ctx: CommandContext) -> CommandResult:
    flags, _, operands = parse_flags(ctx.argv[1:], valued="o")
    warning = "\nWARNING: apt does not have a stable CLI interface. Use with caution in scripts.\n\n" \
        if ctx.argv[0].endswith("apt") else ""
    verb, names = (operands[0] if operands else ""), operands[1:]
    if verb == "list" and ctx.argv[0].endswith("apt"):
        return _list(ctx, flags, warning)
    if verb not in ("update", "install", "remove", "purge", "upgrade"):
        return CommandResult.fail(f"{warning}E: Invalid operation {verb}\n", 100)
    if not ctx.is_root:
        return CommandResult.fail(warning + LOCK_ERROR, 100)
    if verb == "update":
        return CommandResult(b"Hit:1 http://archive.ubuntu.com/ubuntu jammy InRelease\n"
                             b"Hit:2 http://archive.ubuntu.com/ubuntu jammy-updates InRelease\n"
                             b"Hit:3 http://security.ubuntu.com/ubuntu jammy-security InRelease\n"
                             b"Reading package lists...\n", warning.encode())
    head = "Reading package lists...\nBuilding dependency tree...\nReading state information...\n"
    unknown = [n for n in names if n.split("=")[0] not in ARCHIVE]
    if unknown:
        return CommandResult.fail(f"{warning}E: Unable to locate package {unknown[0]}\n", 100, stdout=head)
    have = installed(ctx.node)
    wanted = [n.split("=")[0] for n in names]
    if verb == "install":
        return await _install(ctx, have, wanted, head, assume_yes=bool(flags & {"-y", "--yes", "--assume-yes"}),
                              warning=warning)
    if verb in ("remove", "purge"):
        gone = [n for n in wanted if n in have]
        for name in gone:
            del have[name]
            for path in PROGRAMS.get(name, ()):
                if ctx.node.exists(path):
                    ctx.node.remove(path)
        write_status(ctx.node, have)
        lines = "".join(f"Removing {n} ({ARCHIVE[n]}) ...\n" for n in gone)
        return CommandResult(f"{head}0 upgraded, 0 newly installed, {len(gone)} to remove and 0 not upgraded.\n"
                             f"{lines}".encode(), warning.encode())
    return await _upgrade(ctx, have, head, assume_yes=bool(flags & {"-y", "--yes", "--assume-yes"}), warning=warning)


async def _upgrade(ctx: CommandContext, have: dict[str, str], head: str, assume_yes: bool,
                   warning: str) -> CommandResult:
    newer = upgradable(have)
    lines = [head, "Calculating upgrade...\n"]
    if newer:
        lines.append("The following packages will be upgraded:\n  " + " ".join(sorted(newer)) + "\n")
    lines.append(f"{len(newer)} upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n")
    if newer and not assume_yes:
        return CommandResult.fail(warning, 1, stdout="".join(lines) + "Do you want to continue? [Y/n] Abort.\n")
    for name in sorted(newer):
        await ctx.node.clock.sleep(INSTALL_SECONDS, f"{ctx.node.hostname} apt install {name}")
        lines.append(f"Preparing to unpack .../{name}_{newer[name]}_amd64.deb ...\n"
                     f"Unpacking {name} ({newer[name]}) over ({have[name]}) ...\nSetting up {name} ({newer[name]}) ...\n")
        have[name] = newer[name]
    write_status(ctx.node, have)
    restart = sorted(NEEDS_REBOOT & newer.keys())
    if restart:
        ctx.node.mkdir("/var/run")
        ctx.node.write(REBOOT_REQUIRED, b"*** System restart required ***\n", mode=0o644)
        ctx.node.write(REBOOT_REQUIRED + ".pkgs", "".join(f"{n}\n" for n in restart).encode(), mode=0o644)
    return CommandResult("".join(lines).encode(), warning.encode())


def _list(ctx: CommandContext, flags: set[str], warning: str) -> CommandResult:
    """`apt list --upgradable` (or `--installed`): apt's one line per package."""
    have = installed(ctx.node)
    if "--upgradable" in flags:
        rows = [f"{n}/jammy-updates,jammy-security {v} amd64 [upgradable from: {have[n]}]"
                for n, v in sorted(upgradable(have).items())]
    else:
        rows = [f"{n}/jammy,now {v} amd64 [installed]" for n, v in sorted(have.items())]
    return CommandResult(("Listing...\n" + "".join(r + "\n" for r in rows)).encode(), warning.encode())


async def _install(ctx: CommandContext, have: dict[str, str], wanted: list[str], head: str,
                   assume_yes: bool, warning: str) -> CommandResult:
    new = [n for n in dict.fromkeys(wanted) if n not in have]
    lines = [head] + [f"{n} is already the newest version ({have[n]}).\n" for n in wanted if n in have]
    if new:
        lines.append("The following NEW packages will be installed:\n  " + " ".join(new) + "\n")
    lines.append(f"0 upgraded, {len(new)} newly installed, 0 to remove and 0 not upgraded.\n")
    if new and not assume_yes:
        return CommandResult.fail(f"{warning}", 1, stdout="".join(lines) + "Do you want to continue? [Y/n] Abort.\n")
    for name in new:
        await ctx.node.clock.sleep(INSTALL_SECONDS, f"{ctx.node.hostname} apt install {name}")
        have[name] = ARCHIVE[name]
        for path in PROGRAMS.get(name, ()):
            ctx.node.mkdir(path.rsplit("/", 1)[0], parents=True)
            ctx.node.write(path, b"", mode=0o755)  # the shell finds the modelled program by this file
        lines.append(f"Setting up {name} ({ARCHIVE[name]}) ...\n")
    write_status(ctx.node, have)
    return CommandResult("".join(lines).encode(), warning.encode())


@command("dpkg", "dpkg-query")
async def dpkg(ctx: CommandContext) -> CommandResult:
    flags, values, names = parse_flags(ctx.argv[1:], valued="f")
    have = installed(ctx.node)
    missing = [n for n in names if n not in have]
    errors = "".join(f"dpkg-query: package '{n}' is not installed and no information is available\n"
                     for n in missing)
    if flags & {"-s", "--status"}:
        if missing:
            errors += "Use dpkg --info (= dpkg-deb --info) to examine archive files.\n"
        out = "".join(f"Package: {n}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {have[n]}\n\n"
                      for n in names if n in have)
        return CommandResult(out.encode(), errors.encode(), 1 if missing else 0)
    if flags & {"-W", "--show"}:
        fmt = values.get("-f") or values.get("--showformat") or "${Package}\t${Version}\n"
        shown = [n for n in names if n in have] if names else sorted(have)
        out = "".join(fmt.replace("${Package}", n).replace("${Version}", have[n])
                      .replace("${Status}", "install ok installed").replace("\\n", "\n") for n in shown)
        errors = "".join(f"dpkg-query: no packages found matching {n}\n" for n in missing)
        return CommandResult(out.encode(), errors.encode(), 1 if missing else 0)
    if flags & {"-l", "--list"}:
        shown = [n for n in names if n in have] if names else sorted(have)
        out = "".join(f"ii  {n:<40} {have[n]:<30} amd64        {n}\n" for n in shown)
        header = ("Desired=Unknown/Install/Remove/Purge/Hold\n| Status=Not/Inst/Conf-files/Unpacked/halF-conf/"
                  "Half-inst/trig-aWait/Trig-pend\n|/ Err?=(none)/Reinst-required (Status,Err: uppercase=bad)\n"
                  f"||/ {'Name':<40} {'Version':<30} Architecture Description\n")
        errors = "".join(f"dpkg-query: no packages found matching {n}\n" for n in missing)
        return CommandResult((header + out).encode() if shown else b"", errors.encode(), 1 if missing else 0)
    return CommandResult.fail("dpkg: error: need an action option\n", 2)
