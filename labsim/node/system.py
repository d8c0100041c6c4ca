"""The system programs of the Ubuntu 22.04 cloud image: sudo and the shells, identity and sizes
(hostname, uname, nproc, free, df, ip), systemd (systemctl, journalctl) and cloud-init.
Sizes follow the VM's configuration; wording and exit statuses follow the real tools."""

from __future__ import annotations

import asyncio
import json
import math
import re
import shlex
import zlib
from datetime import UTC, datetime
from pathlib import Path

from labsim.node import image, registry
from labsim.node.coreutils import parse_flags
from labsim.node.model import normpath, unit_name
from labsim.node.registry import CommandContext, CommandResult, command
from labsim.node.shell import Shell, locate, login_env

SUDOERS = "/etc/sudoers.d/90-cloud-init-users"
SUDO_USAGE = "usage: sudo -h | -K | -k | -V\nusage: sudo [-AbEHknPS] [-u user] [VAR=value] [-i|-s] [<command>]\n"
SUDO_VALUED = {"-u", "-g", "-p", "-C", "-D", "-h", "-r", "-t", "-U"}


# --- sudo and the shells ----------------------------------------------------------------------------

@command("sudo")
async def sudo(ctx: CommandContext) -> CommandResult:
    args, target, keep_env = ctx.argv[1:], "root", False
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option == "--":
            break
        if option in SUDO_VALUED and args:
            value = args.pop(0)
            target = value if option == "-u" else target
        keep_env = keep_env or option.startswith("--preserve-env") or (
            not option.startswith("--") and "E" in option)
    assignments = {}
    while args and "=" in args[0] and not args[0].startswith("="):
        name, _, value = args.pop(0).partition("=")
        assignments[name] = value
    if not args:
        return CommandResult.fail(SUDO_USAGE)
    if ctx.user != "root" and not (ctx.user == ctx.node.spec.user and ctx.node.exists(SUDOERS)):
        return CommandResult.fail("sudo: a password is required\n")
    if not locate(ctx.node, args[0]):
        return CommandResult.fail(f"sudo: {args[0]}: command not found\n")
    env = login_env(ctx.node, target)
    if keep_env:
        env.update({k: v for k, v in ctx.env.items() if k not in ("HOME", "USER", "LOGNAME", "PATH")})
    env.update(assignments, SUDO_USER=ctx.user)
    # sudo's umask: the caller's, and at least 022 (sudoers' default umask)
    shell = Shell(ctx.node, target, env=env, cwd=ctx.cwd, umask=ctx.umask | 0o022)
    return await shell.execute(args, {}, ctx.stdin)


@command("sh", "bash", "dash")
async def sh(ctx: CommandContext) -> CommandResult:
    name = "sh" if ctx.argv[0].rsplit("/", 1)[-1] in ("sh", "dash") else "bash"
    args, options, from_stdin, command_mode = ctx.argv[1:], [], False, False
    while args and args[0].startswith(("-", "+")) and args[0] not in ("-", "--"):
        option = args.pop(0)
        if option.startswith("--"):
            continue  # --login, --noprofile, --norc
        from_stdin = from_stdin or "s" in option
        command_mode = command_mode or "c" in option
        letters = option[0] + option[1:].replace("s", "").replace("c", "").replace("i", "").replace("l", "")
        if len(letters) > 1:
            options += [letters, args.pop(0)] if "o" in letters and args else [letters]
    if command_mode:
        if not args:
            return CommandResult.fail(f"{name}: -c: option requires an argument\n", 2)
        script, rest = args[0], args[1:]
        shell = Shell(ctx.node, ctx.user, env=dict(ctx.env), cwd=ctx.cwd, args=rest[1:],
                      name=rest[0] if rest else name, umask=ctx.umask, dialect=name)
        return await _run_script(shell, options, script, ctx.stdin)
    if args and args[0] in ("-", "--"):
        args = args[1:]
    if from_stdin or not args:
        handler = registry.lookup_script(ctx.stdin)
        if handler is not None:
            return await handler(CommandContext(node=ctx.node, argv=args, env=dict(ctx.env), stdin=ctx.stdin,
                                                user=ctx.user, run=ctx.run, cwd=ctx.cwd, umask=ctx.umask))
        script = ctx.stdin.decode(errors="replace")
    else:
        try:
            script = ctx.node.read(normpath(args[0], ctx.cwd), ctx.user).decode(errors="replace")
        except OSError:
            return CommandResult.fail(f"{name}: {args[0]}: No such file or directory\n", 127)
        path, args = args[0], args[1:]
        shell = Shell(ctx.node, ctx.user, env=dict(ctx.env), cwd=ctx.cwd, args=args, name=path,
                      umask=ctx.umask, dialect=name)
        return await _run_script(shell, options, script, b"")
    shell = Shell(ctx.node, ctx.user, env=dict(ctx.env), cwd=ctx.cwd, args=args, name=name, umask=ctx.umask)
    return await _run_script(shell, options, script, b"")


async def _run_script(shell: Shell, options: list[str], script: str, stdin: bytes) -> CommandResult:
    """Run with the options given on the command line (-e, -u, -o pipefail, ...)."""
    try:
        shell.set_options(options)
    except ValueError as exc:
        return CommandResult.fail(f"{shell.dialect}: {exc}\n", 2)
    return await shell.run(script, stdin)


@command("timeout")
async def timeout(ctx: CommandContext) -> CommandResult:
    """``timeout DURATION CMD...``: DURATION in lab time, so at time_scale 0 (where modelled
    waits take no time) the command always finishes first."""
    args = [a for a in ctx.argv[1:] if not a.startswith("-")]
    match = re.fullmatch(r"(\d+(?:\.\d*)?)([smhd]?)", args[0]) if args else None
    if match is None or len(args) < 2:
        return CommandResult.fail("Try 'timeout --help' for more information.\n", 125)
    seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    assert ctx.run is not None
    work = asyncio.ensure_future(ctx.run(shlex.join(args[1:]), ctx.stdin, ctx.user))
    if ctx.node.clock.time_scale == 0:
        return await work
    expiry = asyncio.ensure_future(ctx.node.clock.sleep(seconds))
    done, _ = await asyncio.wait({work, expiry}, return_when=asyncio.FIRST_COMPLETED)
    if work in done:
        expiry.cancel()
        return work.result()
    work.cancel()
    return CommandResult(exit_status=124)


# --- identity and sizes -----------------------------------------------------------------------------

@command("hostname")
async def hostname(ctx: CommandContext) -> CommandResult:
    flags, _, _ = parse_flags(ctx.argv[1:])
    spec = ctx.node.spec
    if flags & {"-I", "--all-ip-addresses"}:
        return CommandResult.ok(f"{spec.ip} \n")
    if flags & {"-i", "--ip-address"}:
        return CommandResult.ok("127.0.1.1\n")
    if flags & {"-f", "--fqdn", "--long"}:
        return CommandResult.ok(spec.fqdn + "\n")
    if flags & {"-d", "--domain"}:
        return CommandResult.ok((spec.searchdomain or "") + "\n")
    return CommandResult.ok(ctx.node.hostname + "\n")


@command("uname")
async def uname(ctx: CommandContext) -> CommandResult:
    flags, _, _ = parse_flags(ctx.argv[1:])
    fields = [("-s", "Linux"), ("-n", ctx.node.hostname), ("-r", image.KERNEL), ("-v", image.KERNEL_BUILD),
              ("-m", "x86_64"), ("-p", "x86_64"), ("-i", "x86_64"), ("-o", "GNU/Linux")]
    if "-a" in flags or "--all" in flags:
        shown = [value for _, value in fields]
    else:
        shown = [value for flag, value in fields if flag in flags] or ["Linux"]
    return CommandResult.ok(" ".join(shown) + "\n")


@command("nproc")
async def nproc(ctx: CommandContext) -> CommandResult:
    return CommandResult.ok(f"{ctx.node.spec.cores}\n")


def human(size: int) -> str:
    """Sizes as ``-h`` shows them: powers of 1024, one decimal below 10, rounded up."""
    value, unit = float(size), ""
    for unit in ("", "K", "M", "G", "T", "P"):
        if value < 1024 or unit == "P":
            break
        value /= 1024
    if not unit:
        return str(size)
    return f"{math.ceil(value * 10) / 10:.1f}{unit}" if value < 10 else f"{math.ceil(value)}{unit}"


@command("free")
async def free(ctx: CommandContext) -> CommandResult:
    flags, _, _ = parse_flags(ctx.argv[1:])
    divisor = next((d for f, d in (("-b", 1), ("--bytes", 1), ("-k", 1024), ("-m", 1024 ** 2),
                                   ("--mebi", 1024 ** 2), ("-g", 1024 ** 3), ("--gibi", 1024 ** 3)) if f in flags), 1024)
    m = image.memory(ctx.node)

    def show(n: int) -> str:
        if "-h" in flags:
            return human(n) + "i" if n >= 1024 else f"{n}B"
        return str(n // divisor)

    mem = [m["total"], m["used"], m["free"], m["shared"], m["buff_cache"], m["available"]]
    lines = ["               total        used        free      shared  buff/cache   available",
             "Mem:   " + "".join(f" {show(v):>11}" for v in mem),
             "Swap:  " + "".join(f" {show(0):>11}" for _ in range(3))]
    return CommandResult.ok("\n".join(lines) + "\n")


def _mounts(ctx: CommandContext) -> list[tuple[str, str, int, int, int, str]]:
    """(source, type, size, used, available, mount point) in bytes, as on the cloud image."""
    root, mem = image.root_fs(ctx.node), image.memory(ctx.node)["total"]
    run = mem // 10 // 4096 * 4096
    return [
        ("tmpfs", "tmpfs", run, 1_064_960, run - 1_064_960, "/run"),
        ("/dev/sda1", "ext4", root["size"], root["used"], root["avail"], "/"),
        ("tmpfs", "tmpfs", mem // 2 // 4096 * 4096, 0, mem // 2 // 4096 * 4096, "/dev/shm"),
        ("tmpfs", "tmpfs", 5_242_880, 0, 5_242_880, "/run/lock"),
        ("/dev/sda15", "vfat", 109_422_592, 6_330_368, 103_092_224, "/boot/efi"),
    ]


@command("df")
async def df(ctx: CommandContext) -> CommandResult:
    flags, values, paths = parse_flags(ctx.argv[1:], valued="Bt")
    block = values.get("-B") or values.get("--block-size") or ("1M" if "-m" in flags else "1K")
    scale = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "": 1}
    size_of = int(block[:-1] or 1) * scale[block[-1]] if block[-1] in "KMG" else int(block)
    header = "Size" if "-h" in flags else ("1B-blocks" if size_of == 1 else f"{block}-blocks")
    mounts, errors, rows = _mounts(ctx), [], []
    for path in paths or [None]:
        if path is None:
            rows += mounts
            continue
        target = normpath(path, ctx.cwd)
        if not ctx.node.exists(target):
            errors.append(f"df: {path}: No such file or directory\n")
            continue
        rows.append(max((m for m in mounts if target == m[5] or target.startswith(m[5].rstrip("/") + "/")),
                        key=lambda m: len(m[5])))

    def size(n: int) -> str:
        return human(n) if "-h" in flags else str(math.ceil(n / size_of))

    columns = {"source": ("Filesystem", lambda r: r[0]), "fstype": ("Type", lambda r: r[1]),
               "size": (header, lambda r: size(r[2])), "used": ("Used", lambda r: size(r[3])),
               "avail": ("Avail" if "-h" in flags else "Available", lambda r: size(r[4])),
               "pcent": ("Use%", lambda r: f"{math.ceil(r[3] * 100 / max(1, r[3] + r[4]))}%"),
               "target": ("Mounted on", lambda r: r[5])}
    wanted = values.get("--output", "").split(",") if "--output" in values else (
        ["source"] + (["fstype"] if "-T" in flags else []) + ["size", "used", "avail", "pcent", "target"])
    table = [[columns[c][0] for c in wanted]] + [[columns[c][1](r) for c in wanted] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(wanted))]
    text = "".join(" ".join(cell.ljust(w) if c in ("source", "fstype", "target") else cell.rjust(w)
                            for cell, w, c in zip(line, widths, wanted, strict=True)).rstrip() + "\n"
                   for line in table)
    return CommandResult(text.encode() if rows else b"", "".join(errors).encode(), 1 if errors else 0)


def _mac(ctx: CommandContext) -> str:
    # Proxmox VE's own OUI, then bytes derived from the VM id: stable for the VM's life.
    tail = zlib.crc32(str(ctx.node.spec.vmid).encode()).to_bytes(4, "big")[1:]
    return "bc:24:11:" + ":".join(f"{b:02x}" for b in tail)


@command("ip")
async def ip(ctx: CommandContext) -> CommandResult:
    brief = bool({"-br", "-brief"} & set(ctx.argv))
    flags, _, operands = parse_flags([a for a in ctx.argv[1:] if a not in ("-br", "-brief")])
    obj = operands[0] if operands else "help"
    spec, mac = ctx.node.spec, _mac(ctx)
    gateway = spec.ip.rsplit(".", 1)[0] + ".1"
    if obj in ("r", "ro", "route"):
        return CommandResult.ok(f"default via {gateway} dev eth0 proto static\n"
                                f"{spec.ip.rsplit('.', 1)[0]}.0/24 dev eth0 proto kernel scope link src {spec.ip}\n")
    if obj not in ("a", "addr", "address"):
        return CommandResult.fail(f'Object "{obj}" is unknown, try "ip help".\n', 255)
    rest = [o for o in operands[1:] if o not in ("show", "list", "dev")]
    links = [("1", "lo", "127.0.0.1", 8, "host", "<LOOPBACK,UP,LOWER_UP>", 65536, "noqueue", "UNKNOWN",
              "00:00:00:00:00:00", "loopback"),
             ("2", "eth0", spec.ip, 24, "global", "<BROADCAST,MULTICAST,UP,LOWER_UP>", 1500, "fq_codel", "UP",
              mac, "ether")]
    if rest and rest[0] not in ("scope", "up"):
        links = [link for link in links if link[1] == rest[0]]
        if not links:
            return CommandResult.fail(f'Device "{rest[0]}" does not exist.\n', 1)
    if "scope" in rest and rest.index("scope") + 1 < len(rest):
        links = [link for link in links if link[4] == rest[rest.index("scope") + 1]]
    if "-6" in flags:
        links = []
    if "-j" in flags:
        doc = [{"ifindex": int(n), "ifname": name, "flags": fl.strip("<>").split(","), "mtu": mtu, "qdisc": q,
                "operstate": st, "link_type": lt, "address": hw,
                "addr_info": [{"family": "inet", "local": addr, "prefixlen": plen, "scope": scope, "label": name,
                               "valid_life_time": 4294967295, "preferred_life_time": 4294967295}]}
               for n, name, addr, plen, scope, fl, mtu, q, st, hw, lt in links]
        return CommandResult.ok(json.dumps(doc) + "\n")
    out = []
    for n, name, addr, plen, scope, fl, mtu, q, st, hw, lt in links:
        brd = f" brd {addr.rsplit('.', 1)[0]}.255" if name != "lo" else ""
        if brief:
            out.append(f"{name:<16} {st:<14} {addr}/{plen} \n")
        elif "-o" in flags:
            out.append(f"{n}: {name}    inet {addr}/{plen}{brd} scope {scope} {name}\\       "
                       f"valid_lft forever preferred_lft forever\n")
        else:
            out.append(f"{n}: {name}: {fl} mtu {mtu} qdisc {q} state {st} group default qlen 1000\n")
            if "-4" not in flags:
                out.append(f"    link/{lt} {hw} brd {'ff:ff:ff:ff:ff:ff' if lt == 'ether' else hw}\n")
            if name == "eth0":
                out.append("    altname enp0s18\n")
            out.append(f"    inet {addr}/{plen}{brd} scope {scope} {name}\n"
                       "       valid_lft forever preferred_lft forever\n")
    return CommandResult.ok("".join(out))


@command("uptime")
async def uptime(ctx: CommandContext) -> CommandResult:
    now = ctx.node.clock.now()
    up = int(max(0.0, now - ctx.node.booted_at))
    if "-p" in ctx.argv:
        return CommandResult.ok(f"up {max(1, up // 60)} minutes\n")
    clock = datetime.fromtimestamp(now, UTC).strftime("%H:%M:%S")
    return CommandResult.ok(f" {clock} up {up // 3600}:{up % 3600 // 60:02d},  1 user,  load average: 0.08, 0.03, 0.01\n")


@command("lsb_release")
async def lsb_release(ctx: CommandContext) -> CommandResult:
    flags, _, _ = parse_flags(ctx.argv[1:])
    fields = [("-i", "Distributor ID", "Ubuntu"), ("-d", "Description", "Ubuntu 22.04.5 LTS"),
              ("-r", "Release", "22.04"), ("-c", "Codename", "jammy")]
    chosen = [f for f in fields if f[0] in flags or "-a" in flags] or fields[1:2]
    short = "-s" in flags
    return CommandResult.ok("".join(f"{value}\n" if short else f"{label}:\t{value}\n" for _, label, value in chosen))


# --- systemd -----------------------------------------------------------------------------------------

def _description(ctx: CommandContext, name: str) -> str:
    path = f"/etc/systemd/system/{name}.service"
    if ctx.node.is_file(path):
        for line in ctx.node.read(path).decode(errors="replace").splitlines():
            if line.startswith("Description="):
                return line.split("=", 1)[1]
    return name


def _status(ctx: CommandContext, name: str) -> str:
    node = ctx.node
    state = node.service_state(name)
    enabled = "enabled" if node.is_enabled(name) else "disabled"
    path = f"/etc/systemd/system/{name}.service" if node.exists(f"/etc/systemd/system/{name}.service") \
        else f"/lib/systemd/system/{name}.service"
    active = {"active": "active (running)", "failed": "failed (Result: exit-code)", "inactive": "inactive (dead)"}
    dot = {"active": "●", "failed": "×", "inactive": "○"}[state]  # noqa: RUF001  (systemctl's own glyph)
    lines = [f"{dot} {name}.service - {_description(ctx, name)}",
             f"     Loaded: loaded ({path}; {enabled}; vendor preset: enabled)",
             f"     Active: {active[state]}"]
    journal = node.journal(name)[-10:]
    return "\n".join(lines + ([""] + journal if journal else [])) + "\n"


@command("systemctl")
async def systemctl(ctx: CommandContext) -> CommandResult:
    flags, _, operands = parse_flags(ctx.argv[1:])
    if not operands:
        return CommandResult.ok("  UNIT LOAD ACTIVE SUB DESCRIPTION\n")
    verb, units = operands[0], [unit_name(u) for u in operands[1:]]
    node, quiet = ctx.node, bool(flags & {"-q", "--quiet"})
    if verb in ("is-active", "is-failed"):
        states = [node.service_state(u) if node.has_service(u) else "inactive" for u in units]
        wanted = "active" if verb == "is-active" else "failed"
        text = "" if quiet else "".join(f"{s}\n" for s in states)
        return CommandResult(text.encode(), exit_status=0 if states and wanted in states else (3 if verb == "is-active" else 1))
    if verb == "is-enabled":
        missing = [u for u in units if not node.has_service(u)]
        if missing:
            return CommandResult.fail(f"Failed to get unit file state for {missing[0]}.service: No such file or directory\n")
        states = ["enabled" if node.is_enabled(u) else "disabled" for u in units]
        return CommandResult(b"" if quiet else "".join(f"{s}\n" for s in states).encode(),
                             exit_status=0 if all(s == "enabled" for s in states) else 1)
    if verb == "status":
        missing = [u for u in units if not node.has_service(u)]
        if missing:
            return CommandResult.fail(f"Unit {missing[0]}.service could not be found.\n", 4)
        text = "\n".join(_status(ctx, u) for u in units)
        return CommandResult(text.encode(), exit_status=0 if all(node.service_state(u) == "active" for u in units) else 3)
    if verb not in ("start", "stop", "restart", "reload", "try-restart", "reload-or-restart", "enable",
                    "disable", "daemon-reload", "reset-failed", "mask", "unmask"):
        return CommandResult.fail(f'Unknown command verb {verb}.\n')
    if not ctx.is_root:
        action = {"daemon-reload": "reload daemon"}.get(verb, f"{verb} {units[0] if units else ''}.service")
        return CommandResult.fail(f"Failed to {action}: Interactive authentication required.\n"
                                  f"See system logs and 'systemctl status {units[0] if units else ''}.service' for details.\n")
    if verb in ("daemon-reload", "reset-failed", "mask", "unmask"):
        return CommandResult()
    return await _change(ctx, verb, units, now="--now" in flags)


async def _change(ctx: CommandContext, verb: str, units: list[str], now: bool) -> CommandResult:
    node, messages = ctx.node, []
    for unit in units:
        if not node.has_service(unit):
            return CommandResult.fail(f"Failed to {verb} {unit}.service: Unit {unit}.service not found.\n", 5)
        if verb in ("enable", "disable"):
            if node.is_enabled(unit) != (verb == "enable"):
                link = f"/etc/systemd/system/multi-user.target.wants/{unit}.service"
                messages.append(f"Created symlink {link} → /etc/systemd/system/{unit}.service.\n"
                                if verb == "enable" else f"Removed {link}.\n")
            node.enable_service(unit, verb == "enable")
            if not now:
                continue
            verb_now = "start" if verb == "enable" else "stop"
        else:
            verb_now = verb
        state = node.service_state(unit)
        if verb_now == "try-restart" and state != "active":
            continue
        if verb_now == "reload":
            if state != "active":
                return CommandResult.fail(f"Failed to reload {unit}.service: Unit {unit}.service is not active.\n")
            continue
        if verb_now != "start":
            await node.stop_service(unit)
        if verb_now != "stop" and not await node.start_service(unit):
            return CommandResult.fail(
                f"Job for {unit}.service failed because the control process exited with error code.\n"
                f'See "systemctl status {unit}.service" and "journalctl -xeu {unit}.service" for details.\n')
    return CommandResult(stderr="".join(messages).encode())


@command("journalctl")
async def journalctl(ctx: CommandContext) -> CommandResult:
    flags, values, operands = parse_flags(ctx.argv[1:], valued="un")
    units = [values["-u"]] if "-u" in values else []
    units += [v for k, v in values.items() if k == "--unit"]
    count = values.get("-n") or values.get("--lines")
    if units:
        lines = [line for unit in units for line in ctx.node.journal(unit)]
    else:
        folder = ctx.node.folder / "journal"
        names = sorted(p.stem for p in folder.glob("*.log")) if folder.is_dir() else []
        lines = [line for unit in names for line in ctx.node.journal(unit)]
    if len(units) != 1:
        lines.sort(key=lambda line: line[:15])  # merge units by their time stamps
    if count is not None and count != "all":
        if not count.isdigit():
            return CommandResult.fail(f"Failed to parse lines '{count}'\n")
        lines = lines[-int(count):] if int(count) else []
    if not lines:
        return CommandResult.ok("" if "-q" in flags else "-- No entries --\n")
    return CommandResult.ok("".join(f"{line}\n" for line in lines))


# --- processes: one per running unit -------------------------------------------------------------

PROCESS_NAMES = {"ssh": "sshd", "cron": "cron", "rsyslog": "rsyslogd", "qemu-guest-agent": "qemu-ga"}


def _processes(ctx: CommandContext) -> list[tuple[int, str, str, str]]:
    """(pid, user, name, command line) of the running units: the unit file's ExecStart, if any."""
    found = []
    for unit in sorted(ctx.node.active_services()):
        name = PROCESS_NAMES.get(unit, unit)
        cmdline = f"/usr/sbin/{name}"
        path = f"/etc/systemd/system/{unit}.service"
        if ctx.node.is_file(path):
            for line in ctx.node.read(path).decode(errors="replace").splitlines():
                if line.startswith("ExecStart="):
                    cmdline = " ".join(line.split("=", 1)[1].replace("\\", " ").split())
                    name = cmdline.split()[0].rsplit("/", 1)[-1] if cmdline else name
        found.append((300 + zlib.crc32(unit.encode()) % 30000, "root", name, cmdline))
    return found


@command("ps")
async def ps(ctx: CommandContext) -> CommandResult:
    rows = [(1, "root", "systemd", "/sbin/init")] + _processes(ctx)
    lines = ["USER         PID COMMAND"] + [f"{user:<8} {pid:>7} {cmd}" for pid, user, _, cmd in rows]
    return CommandResult.ok("\n".join(lines) + "\n")


@command("pgrep", "pidof")
async def pgrep(ctx: CommandContext) -> CommandResult:
    flags, _, operands = parse_flags(ctx.argv[1:])
    if not operands:
        return CommandResult.fail("pgrep: no matching criteria specified\n", 2)
    pattern = operands[0]
    exact = "-x" in flags or ctx.argv[0].endswith("pidof")
    full = "-f" in flags
    pids = [str(pid) for pid, _, name, cmd in _processes(ctx)
            if (name == pattern if exact else pattern in (cmd if full else name))]
    separator = " " if ctx.argv[0].endswith("pidof") else "\n"
    return CommandResult(stdout=(separator.join(pids) + "\n").encode() if pids else b"",
                         exit_status=0 if pids else 1)


@command("hostnamectl")
async def hostnamectl(ctx: CommandContext) -> CommandResult:
    _, _, operands = parse_flags(ctx.argv[1:])
    if operands and operands[0] in ("hostname", "--static"):
        return CommandResult.ok(ctx.node.hostname + "\n")
    if operands and operands[0] == "set-hostname":
        return CommandResult.fail("Could not set hostname: the simulated node takes its name from the VM\n")
    return CommandResult.ok(
        f" Static hostname: {ctx.node.hostname}\n       Icon name: computer-vm\n         Chassis: vm\n"
        f"  Virtualization: kvm\nOperating System: Ubuntu 22.04.5 LTS\n          Kernel: Linux {image.KERNEL}\n"
        "    Architecture: x86-64\n Hardware Vendor: QEMU\n  Hardware Model: Standard PC _i440FX + PIIX, 1996_\n")


# --- cloud-init ---------------------------------------------------------------------------------------

@command("cloud-init")
async def cloud_init(ctx: CommandContext) -> CommandResult:
    flags, values, operands = parse_flags(ctx.argv[1:])
    if "--version" in flags:
        return CommandResult.ok("/usr/bin/cloud-init 24.4-0ubuntu1~22.04.1\n")
    if not operands or operands[0] != "status":
        return CommandResult.fail("usage: cloud-init [-h] [--version] [--debug] [--force] {status,...} ...\n", 2)
    dots = ""
    if "--wait" in flags or "-w" in flags:
        if not ctx.node.cloud_init_done:
            dots = "."
        await ctx.node.wait_cloud_init()
        dots = dots and dots + "\n"
    status = "done" if ctx.node.cloud_init_done else "running"
    if values.get("--format") == "json" or "--format=json" in ctx.argv:
        doc = {"status": status, "extended_status": status, "boot_status_code": "enabled-by-generator",
               "datasource": "nocloud", "errors": [], "recoverable_errors": {}}
        return CommandResult.ok(json.dumps(doc, indent=1) + "\n")
    if "--long" in flags or "-l" in flags:
        return CommandResult.ok(f"{dots}status: {status}\nextended_status: {status}\n"
                                "boot_status_code: enabled-by-generator\ndetail:\n"
                                "DataSourceNoCloud [seed=/dev/sr0][dsmode=net]\nerrors: []\nrecoverable_errors: {}\n")
    return CommandResult.ok(f"{dots}status: {status}\n")



@command("du")
async def du(ctx: CommandContext) -> CommandResult:
    """Disk usage of the real files behind node paths: 1K blocks (``-k``), ``-h``, bytes of
    apparent size (``-b``), totals only (``-s``) or directories down to ``-d N``, post-order."""
    flags, values, paths = parse_flags(ctx.argv[1:], valued="d")
    depth = 0 if "-s" in flags else int(values.get("-d") or values.get("--max-depth") or 10 ** 6)
    apparent = bool(flags & {"-b", "--apparent-size"})
    lines, errors = [], []
    for path in paths or ["."]:
        target = normpath(path, ctx.cwd)
        if not ctx.node.exists(target):
            errors.append(f"du: cannot access '{path}': No such file or directory\n")
            continue
        _du(ctx.node.host_path(target), path.rstrip("/") or "/", 0, depth, apparent, lines)

    def shown(n: int) -> str:
        return human(n) if "-h" in flags else str(n if "-b" in flags else math.ceil(n / 1024))
    out = "".join(f"{shown(n)}\t{p}\n" for n, p in lines)
    return CommandResult(out.encode(), "".join(errors).encode(), 1 if errors else 0)


def _du(real: Path, shown: str, level: int, depth: int, apparent: bool, lines: list[tuple[int, str]]) -> int:
    info = real.lstat()
    total = info.st_size if apparent else info.st_blocks * 512
    if real.is_dir() and not real.is_symlink():
        for child in sorted(real.iterdir()):
            total += _du(child, f"{shown.rstrip('/')}/{child.name}", level + 1, depth, apparent, lines)
        if level <= depth:
            lines.append((total, shown))
    elif level == 0:
        lines.append((total, shown))
    return total
