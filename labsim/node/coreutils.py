"""The file and text programs of Ubuntu's base system (coreutils, grep), on the node's files
and with its permissions, answering with GNU's wording and exit statuses."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import posixpath
import re
import shlex
from datetime import UTC, datetime

from labsim.node import image
from labsim.node.model import normpath
from labsim.node.registry import CommandContext, CommandResult, command
from labsim.node.shell import locate

REASONS = {FileNotFoundError: "No such file or directory", PermissionError: "Permission denied",
           IsADirectoryError: "Is a directory", NotADirectoryError: "Not a directory",
           FileExistsError: "File exists"}


def reason(exc: OSError) -> str:
    return REASONS.get(type(exc), exc.strerror or str(exc))


def parse_flags(args: list[str], valued: str = "") -> tuple[set[str], dict[str, str], list[str]]:
    """Short options (``-rf``), ``--long[=value]``, options in ``valued`` taking a value, and
    operands; ``--`` ends options."""
    flags: set[str] = set()
    values: dict[str, str] = {}
    operands: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            operands += args[i + 1:]
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if eq:
                values[name] = value
            else:
                flags.add(name)
        elif arg.startswith("-") and len(arg) > 1:
            for j, letter in enumerate(arg[1:]):
                if letter in valued:
                    rest = arg[j + 2:]
                    if not rest and i + 1 < len(args):
                        i += 1
                        rest = args[i]
                    values[f"-{letter}"] = rest
                    break
                flags.add(f"-{letter}")
        else:
            operands.append(arg)
        i += 1
    return flags, values, operands


def read_inputs(ctx: CommandContext, program: str, paths: list[str]) -> tuple[list[tuple[str, bytes]], str, int]:
    """The contents of each operand (``-`` or none: stdin), with errors as the program words them."""
    found, errors, status = [], [], 0
    for path in paths or ["-"]:
        if path == "-":
            found.append(("(standard input)", ctx.stdin))
            continue
        try:
            found.append((path, ctx.node.read(normpath(path, ctx.cwd), ctx.user)))
        except OSError as exc:
            errors.append(f"{program}: {path}: {reason(exc)}\n")
            status = 1 if program != "grep" else 2
    return found, "".join(errors), status


@command("true")
async def true(ctx: CommandContext) -> CommandResult:
    return CommandResult()


@command("false")
async def false(ctx: CommandContext) -> CommandResult:
    return CommandResult(exit_status=1)


@command("seq")
async def seq(ctx: CommandContext) -> CommandResult:
    """``seq [-s SEP] [-w] [FIRST [INCREMENT]] LAST``, integers only."""
    args, separator, width = ctx.argv[1:], "\n", False
    while args and (args[0] == "-w" or args[0].startswith("-s")):
        option = args.pop(0)
        if option == "-w":
            width = True
        else:
            separator = option[2:] or (args.pop(0) if args else "\n")
    try:
        numbers = [int(a) for a in args]
    except ValueError:
        bad = next(a for a in args if not re.fullmatch(r"-?\d+", a))
        return CommandResult.fail(f"seq: invalid floating point argument: '{bad}'\n"
                                  "Try 'seq --help' for more information.\n")
    if not 1 <= len(numbers) <= 3:
        return CommandResult.fail("seq: missing operand\nTry 'seq --help' for more information.\n")
    first, step, last = ([1, 1] + numbers if len(numbers) == 1 else [numbers[0], 1, numbers[1]]
                         if len(numbers) == 2 else numbers)
    if step == 0:
        return CommandResult.fail("seq: invalid Zero increment value: '0'\nTry 'seq --help' for more information.\n")
    values = [str(n) for n in range(first, last + (1 if step > 0 else -1), step)]
    if width and values:
        values = [v.zfill(max(len(str(first)), len(str(last)))) for v in values]
    return CommandResult.ok(separator.join(values) + "\n" if values else "")


def unescape(text: str) -> tuple[str, bool]:
    """Backslash escapes as ``echo -e`` and ``printf`` read them; ``\\c`` stops output."""
    out, i = [], 0
    table = {"n": "\n", "t": "\t", "\\": "\\", "r": "\r", "a": "\a", "b": "\b", "e": "\x1b",
             "f": "\f", "v": "\v", '"': '"'}
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "c":
                return "".join(out), True
            if nxt == "0" or nxt.isdigit():
                match = re.match(r"0?([0-7]{1,3})", text[i + 1:])
                if match:
                    out.append(chr(int(match.group(1), 8)))
                    i += 1 + match.end()
                    continue
            out.append(table.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out), False


@command("echo")
async def echo(ctx: CommandContext) -> CommandResult:
    args = ctx.argv[1:]
    newline, escapes = True, False
    while args and re.fullmatch(r"-[neE]+", args[0]):
        newline = newline and "n" not in args[0]
        escapes = "e" in args[0] or (escapes and "E" not in args[0])
        args = args[1:]
    text = " ".join(args)
    if escapes:
        text, stop = unescape(text)
        newline = newline and not stop
    return CommandResult.ok(text + ("\n" if newline else ""))


CONVERSION = re.compile(r"%([-+ #0]*\d*(?:\.\d+)?)([sdiouxXfFeEgGcbq%])")


def _format(fmt: str, args: list[str]) -> tuple[str, int]:
    """One pass of a printf format over ``args``: the text and how many arguments it used."""
    used = 0

    def convert(match: re.Match[str]) -> str:
        nonlocal used
        flags, kind = match.groups()
        if kind == "%":
            return "%"
        arg = args[used] if used < len(args) else ""
        used += 1
        if kind in "diouxX":
            return f"%{flags}{'d' if kind in 'iu' else kind}" % int(arg or 0)
        if kind in "fFeEgG":
            return f"%{flags}{kind}" % float(arg or 0)
        if kind == "b":
            return unescape(arg)[0]
        if kind == "q":
            return shlex.quote(arg)
        return f"%{flags}s" % (arg[:1] if kind == "c" else arg)

    text = CONVERSION.sub(convert, unescape(fmt)[0])
    return text, used


@command("printf")
async def printf(ctx: CommandContext) -> CommandResult:
    if len(ctx.argv) < 2:
        return CommandResult.fail("printf: usage: printf [-v var] format [arguments]\n", 2)
    fmt, args = ctx.argv[1], ctx.argv[2:]
    out: list[str] = []
    while True:
        try:
            text, used = _format(fmt, args)
        except ValueError as exc:
            return CommandResult.fail(f"printf: {exc}\n")
        out.append(text)
        args = args[used:]
        if not args or not used:
            return CommandResult.ok("".join(out))


@command("cat")
async def cat(ctx: CommandContext) -> CommandResult:
    _, _, paths = parse_flags(ctx.argv[1:])
    found, errors, status = read_inputs(ctx, "cat", paths)
    return CommandResult(b"".join(data for _, data in found), errors.encode(), status)


@command("tee")
async def tee(ctx: CommandContext) -> CommandResult:
    flags, _, paths = parse_flags(ctx.argv[1:])
    errors, status = [], 0
    for path in paths:
        try:
            ctx.node.write(normpath(path, ctx.cwd), ctx.stdin, user=ctx.user, append="-a" in flags, umask=ctx.umask)
        except OSError as exc:
            errors.append(f"tee: {path}: {reason(exc)}\n")
            status = 1
    return CommandResult(ctx.stdin, "".join(errors).encode(), status)


@command("mkdir")
async def mkdir(ctx: CommandContext) -> CommandResult:
    flags, values, paths = parse_flags(ctx.argv[1:], valued="m")
    mode = int(values["-m"], 8) if "-m" in values else None
    errors = []
    for path in paths:
        try:
            ctx.node.mkdir(normpath(path, ctx.cwd), parents="-p" in flags, mode=mode, user=ctx.user, umask=ctx.umask)
        except OSError as exc:
            errors.append(f"mkdir: cannot create directory '{path}': {reason(exc)}\n")
    if not paths:
        errors.append("mkdir: missing operand\n")
    return CommandResult(stderr="".join(errors).encode(), exit_status=1 if errors else 0)


def symbolic_mode(spec: str, mode: int, directory: bool) -> int:
    """``u+x``, ``go-w``, ``a=r``, ``+x`` (several comma-separated clauses) applied to ``mode``."""
    for clause in spec.split(","):
        match = re.fullmatch(r"([ugoa]*)([-+=])([rwxX]*)", clause)
        if not match:
            raise ValueError(spec)
        who, op, perms = match.groups()
        shifts = [{"u": 6, "g": 3, "o": 0}[w] for w in (who.replace("a", "ugo") or "ugo")]
        bits = sum({"r": 4, "w": 2, "x": 1, "X": 1 if directory or mode & 0o111 else 0}[p] for p in perms)
        mask = sum(bits << s for s in set(shifts))
        if op == "+":
            mode |= mask
        elif op == "-":
            mode &= ~mask
        else:
            mode = mode & ~sum(7 << s for s in set(shifts)) | mask
    return mode


@command("chmod")
async def chmod(ctx: CommandContext) -> CommandResult:
    flags, _, operands = parse_flags([a for a in ctx.argv[1:] if not re.fullmatch(r"-[rwxX]+", a)])
    spec = next((a for a in ctx.argv[1:] if re.fullmatch(r"-[rwxX]+", a)), None)
    if spec is None:
        if len(operands) < 2:
            return CommandResult.fail("chmod: missing operand\n")
        spec, operands = operands[0], operands[1:]
    errors = []
    for path in operands:
        target = normpath(path, ctx.cwd)
        try:
            for each in _walk(ctx, target) if "-R" in flags else [target]:
                current = ctx.node.mode(each)
                new = int(spec, 8) if re.fullmatch(r"[0-7]{1,4}", spec) else symbolic_mode(
                    spec, current, ctx.node.is_dir(each))
                ctx.node.chmod(each, new, user=ctx.user)
        except FileNotFoundError:
            errors.append(f"chmod: cannot access '{path}': No such file or directory\n")
        except PermissionError:
            errors.append(f"chmod: changing permissions of '{path}': Operation not permitted\n")
        except ValueError:
            return CommandResult.fail(f"chmod: invalid mode: '{spec}'\n")
    return CommandResult(stderr="".join(errors).encode(), exit_status=1 if errors else 0)


def _walk(ctx: CommandContext, path: str) -> list[str]:
    found = [path]
    if ctx.node.is_dir(path):
        for name in ctx.node.listdir(path):
            found += _walk(ctx, posixpath.join(path, name))
    return found


@command("chown")
async def chown(ctx: CommandContext) -> CommandResult:
    flags, _, operands = parse_flags(ctx.argv[1:])
    if len(operands) < 2:
        return CommandResult.fail("chown: missing operand\n")
    owner = operands[0].split(":")[0].split(".")[0]
    errors = []
    for path in operands[1:]:
        target = normpath(path, ctx.cwd)
        try:
            for each in _walk(ctx, target) if "-R" in flags else [target]:
                if owner:
                    ctx.node.chown(each, owner, user=ctx.user)
        except FileNotFoundError:
            errors.append(f"chown: cannot access '{path}': No such file or directory\n")
        except PermissionError:
            errors.append(f"chown: changing ownership of '{path}': Operation not permitted\n")
    return CommandResult(stderr="".join(errors).encode(), exit_status=1 if errors else 0)


@command("rm")
async def rm(ctx: CommandContext) -> CommandResult:
    flags, _, paths = parse_flags(ctx.argv[1:])
    recursive, force = bool({"-r", "-R", "--recursive"} & flags), bool({"-f", "--force"} & flags)
    errors = []
    for path in paths:
        try:
            ctx.node.remove(normpath(path, ctx.cwd), recursive=recursive, user=ctx.user)
        except FileNotFoundError:
            if not force:
                errors.append(f"rm: cannot remove '{path}': No such file or directory\n")
        except IsADirectoryError:
            errors.append(f"rm: cannot remove '{path}': Is a directory\n")
        except PermissionError:
            errors.append(f"rm: cannot remove '{path}': Permission denied\n")
    if not paths and not force:
        errors.append("rm: missing operand\n")
    return CommandResult(stderr="".join(errors).encode(), exit_status=1 if errors else 0)


@command("touch")
async def touch(ctx: CommandContext) -> CommandResult:
    _, _, paths = parse_flags(ctx.argv[1:])
    errors = []
    for path in paths:
        try:
            ctx.node.write(normpath(path, ctx.cwd), b"", user=ctx.user, append=True, umask=ctx.umask)
        except OSError as exc:
            errors.append(f"touch: cannot touch '{path}': {reason(exc)}\n")
    return CommandResult(stderr="".join(errors).encode(), exit_status=1 if errors else 0)


def _into(ctx: CommandContext, source: str, target: str) -> str:
    target = normpath(target, ctx.cwd)
    return posixpath.join(target, posixpath.basename(source)) if ctx.node.is_dir(target) else target


@command("cp")
async def cp(ctx: CommandContext) -> CommandResult:
    flags, _, operands = parse_flags(ctx.argv[1:])
    if len(operands) < 2:
        return CommandResult.fail("cp: missing destination file operand\n")
    errors = []
    for source in operands[:-1]:
        src = normpath(source, ctx.cwd)
        try:
            if ctx.node.is_dir(src) and not flags & {"-r", "-R", "-a"}:
                errors.append(f"cp: -r not specified; omitting directory '{source}'\n")
                continue
            _copy(ctx, src, _into(ctx, src, operands[-1]), keep_mode=bool(flags & {"-a", "-p"}))
        except OSError as exc:
            errors.append(f"cp: cannot copy '{source}': {reason(exc)}\n")
    return CommandResult(stderr="".join(errors).encode(), exit_status=1 if errors else 0)


def _copy(ctx: CommandContext, src: str, dst: str, keep_mode: bool) -> None:
    if ctx.node.is_dir(src):
        ctx.node.mkdir(dst, user=ctx.user, umask=ctx.umask)
        for name in ctx.node.listdir(src, ctx.user):
            _copy(ctx, posixpath.join(src, name), posixpath.join(dst, name), keep_mode)
        return
    data = ctx.node.read(src, ctx.user)
    ctx.node.write(dst, data, mode=ctx.node.mode(src) if keep_mode else None, user=ctx.user, umask=ctx.umask)


@command("mv")
async def mv(ctx: CommandContext) -> CommandResult:
    _, _, operands = parse_flags(ctx.argv[1:])
    if len(operands) < 2:
        return CommandResult.fail("mv: missing destination file operand\n")
    errors = []
    for source in operands[:-1]:
        src = normpath(source, ctx.cwd)
        try:
            ctx.node.rename(src, _into(ctx, src, operands[-1]), user=ctx.user)
        except OSError as exc:
            errors.append(f"mv: cannot move '{source}': {reason(exc)}\n")
    return CommandResult(stderr="".join(errors).encode(), exit_status=1 if errors else 0)


def _long_entry(ctx: CommandContext, path: str, name: str) -> str:
    node = ctx.node
    mode, real = node.mode(path), node.host_path(path)
    kind = "d" if node.is_dir(path) else "-"
    bits = "".join(ch if mode & (1 << (8 - i)) else "-" for i, ch in enumerate("rwxrwxrwx"))
    if mode & 0o1000:
        bits = bits[:-1] + ("t" if mode & 1 else "T")
    owner = node.owner(path)
    size = real.stat().st_size if real.exists() else 0
    when = datetime.fromtimestamp(real.stat().st_mtime if real.exists() else 0, UTC).strftime("%b %d %H:%M")
    return f"{kind}{bits} 1 {owner} {owner} {size:>6} {when} {name}\n"


@command("ls")
async def ls(ctx: CommandContext) -> CommandResult:
    flags, _, paths = parse_flags(ctx.argv[1:])
    out, errors = [], []
    for path in paths or ["."]:
        target = normpath(path, ctx.cwd)
        if not ctx.node.exists(target):
            errors.append(f"ls: cannot access '{path}': No such file or directory\n")
            continue
        if not ctx.node.is_dir(target) or "-d" in flags:
            out.append(_long_entry(ctx, target, path) if "-l" in flags else f"{path}\n")
            continue
        try:
            names = ctx.node.listdir(target, ctx.user)
        except PermissionError:
            errors.append(f"ls: cannot open directory '{path}': Permission denied\n")
            continue
        if "-a" in flags:
            names = [".", ".."] + names
        elif "-A" not in flags:
            names = [n for n in names if not n.startswith(".")]
        if len(paths) > 1:
            out.append(f"{path}:\n")
        for name in names:
            full = normpath(name, target)
            out.append(_long_entry(ctx, full, name) if "-l" in flags else f"{name}\n")
    return CommandResult("".join(out).encode(), "".join(errors).encode(), 2 if errors else 0)


def _test(ctx: CommandContext, args: list[str]) -> bool:
    if not args:
        return False
    if args[0] == "!":
        return not _test(ctx, args[1:])
    for joiner, combine in (("-o", any), ("-a", all)):
        if joiner in args[1:-1]:
            i = args.index(joiner, 1)
            return combine((_test(ctx, args[:i]), _test(ctx, args[i + 1:])))
    if len(args) == 1:
        return args[0] != ""
    if len(args) == 2:
        op, operand = args
        if op == "-n":
            return operand != ""
        if op == "-z":
            return operand == ""
        path = normpath(operand, ctx.cwd)
        node = ctx.node
        checks = {
            "-e": lambda: node.exists(path), "-f": lambda: node.is_file(path), "-d": lambda: node.is_dir(path),
            "-s": lambda: node.is_file(path) and len(node.read(path)) > 0,
            "-x": lambda: node.exists(path) and bool(node.mode(path) & 0o111) and node.can(path, ctx.user, "x"),
            "-r": lambda: node.exists(path) and node.can(path, ctx.user, "r"),
            "-w": lambda: node.exists(path) and node.can(path, ctx.user, "w"),
            "-L": lambda: node.host_path(path).is_symlink(), "-h": lambda: node.host_path(path).is_symlink(),
        }
        if op not in checks:
            raise ValueError(f"{op}: unary operator expected")
        return checks[op]()
    if len(args) == 3:
        left, op, right = args
        if op in ("=", "=="):
            return left == right
        if op == "!=":
            return left != right
        numeric = {"-eq": int.__eq__, "-ne": int.__ne__, "-lt": int.__lt__, "-le": int.__le__,
                   "-gt": int.__gt__, "-ge": int.__ge__}
        if op in numeric:
            try:
                return numeric[op](int(left), int(right))
            except ValueError as exc:
                raise ValueError(f"{left}: integer expression expected") from exc
    raise ValueError("too many arguments")


@command("test", "[")
async def test(ctx: CommandContext) -> CommandResult:
    args = ctx.argv[1:]
    if ctx.argv[0] == "[":
        if not args or args[-1] != "]":
            return CommandResult.fail("bash: [: missing `]'\n", 2)
        args = args[:-1]
    try:
        return CommandResult(exit_status=0 if _test(ctx, args) else 1)
    except ValueError as exc:
        return CommandResult.fail(f"bash: {ctx.argv[0]}: {exc}\n", 2)


def basic_regex(pattern: str) -> str:
    """A POSIX basic regular expression in Python's syntax: ``\\|``, ``\\+``, ``\\(`` are the
    operators, bare ``|+?(){}`` are literal."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append(nxt if nxt in "|+?(){}" else "\\" + nxt)
            i += 2
            continue
        out.append("\\" + c if c in "|+?(){}" else c)
        i += 1
    return "".join(out)


@command("grep", "egrep", "fgrep")
async def grep(ctx: CommandContext) -> CommandResult:
    flags, values, operands = parse_flags(ctx.argv[1:], valued="emA")
    patterns = [values["-e"]] if "-e" in values else operands[:1]
    files = operands if "-e" in values else operands[1:]
    if not patterns:
        return CommandResult.fail("Usage: grep [OPTION]... PATTERNS [FILE]...\n", 2)
    fixed = "-F" in flags or ctx.argv[0] == "fgrep"
    extended = "-E" in flags or ctx.argv[0] == "egrep"
    source = "|".join(re.escape(p) if fixed else p if extended else basic_regex(p)
                      for pattern in patterns for p in pattern.split("\n"))
    if "-x" in flags:
        source = f"^(?:{source})$"
    elif "-w" in flags:
        source = rf"\b(?:{source})\b"
    try:
        regex = re.compile(source, re.IGNORECASE if "-i" in flags else 0)
    except re.error:
        return CommandResult.fail(f"grep: Invalid regular expression '{patterns[0]}'\n", 2)
    found, errors, status = read_inputs(ctx, "grep", files)
    out, matched = [], 0
    for name, data in found:
        count = 0
        for number, line in enumerate(data.decode(errors="replace").splitlines(), 1):
            hit = bool(regex.search(line)) != ("-v" in flags)
            if not hit:
                continue
            count += 1
            if "-q" in flags or "-c" in flags or "-l" in flags:
                continue
            prefix = (f"{name}:" if len(found) > 1 else "") + (f"{number}:" if "-n" in flags else "")
            shown = [m.group() for m in regex.finditer(line)] if "-o" in flags else [line]
            out += [f"{prefix}{text}\n" for text in shown]
        matched += count
        if "-c" in flags:
            out.append((f"{name}:" if len(found) > 1 else "") + f"{count}\n")
        elif "-l" in flags and count:
            out.append(f"{name}\n")
    if "-s" in flags:
        errors = ""
    exit_status = status or (0 if matched else 1)
    return CommandResult("".join(out).encode(), errors.encode(), 0 if matched and "-q" in flags else exit_status)


def _count(args: list[str]) -> tuple[str | None, list[str]]:
    """``-n N``, ``-nN``, ``-N`` and ``--lines=N``: the count, and the remaining arguments."""
    rest, count = [], None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-n" and i + 1 < len(args):
            count, i = args[i + 1], i + 2
            continue
        if re.fullmatch(r"-n[+-]?\d+", arg):
            count = arg[2:]
        elif re.fullmatch(r"-\d+", arg):
            count = arg[1:]
        elif arg.startswith("--lines="):
            count = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return count, rest


@command("head", "tail")
async def head_tail(ctx: CommandContext) -> CommandResult:
    program = ctx.argv[0].rsplit("/", 1)[-1]
    count, args = _count(ctx.argv[1:])
    _, _, paths = parse_flags(args)
    found, errors, status = read_inputs(ctx, program, paths)
    out = []
    for name, data in found:
        lines = data.splitlines(keepends=True)
        n = count or "10"
        if program == "head":
            picked = lines[:int(n)]  # a negative count: all but the last -n
        elif n.startswith("+"):
            picked = lines[max(0, int(n) - 1):]
        else:
            picked = lines[-int(n):] if int(n) else []
        if len(found) > 1:
            out.append(f"==> {name} <==\n".encode())
        out += picked
    return CommandResult(b"".join(out), errors.encode(), status)


@command("wc")
async def wc(ctx: CommandContext) -> CommandResult:
    flags, _, paths = parse_flags(ctx.argv[1:])
    found, errors, status = read_inputs(ctx, "wc", paths)
    out = []
    for name, data in found:
        counts = {"-l": data.count(b"\n"), "-w": len(data.split()), "-c": len(data)}
        shown = [str(v) for k, v in counts.items() if k in flags or not flags & set(counts)]
        suffix = f" {name}" if paths else ""
        out.append(" ".join(shown) + suffix + "\n")
    return CommandResult("".join(out).encode(), errors.encode(), status)


@command("sha256sum")
async def sha256sum(ctx: CommandContext) -> CommandResult:
    _, _, paths = parse_flags(ctx.argv[1:])
    found, errors, status = read_inputs(ctx, "sha256sum", paths)
    out = "".join(f"{hashlib.sha256(data).hexdigest()}  {'-' if not paths else name}\n" for name, data in found)
    return CommandResult(out.encode(), errors.encode(), status)


@command("base64")
async def base64_(ctx: CommandContext) -> CommandResult:
    flags, _, paths = parse_flags(ctx.argv[1:])
    found, errors, status = read_inputs(ctx, "base64", paths)
    data = b"".join(d for _, d in found)
    if flags & {"-d", "--decode"}:
        return CommandResult(base64.b64decode(b"".join(data.split())), errors.encode(), status)
    encoded = base64.b64encode(data)
    wrapped = b"\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    return CommandResult(wrapped + b"\n" if wrapped else b"", errors.encode(), status)


@command("basename")
async def basename(ctx: CommandContext) -> CommandResult:
    if len(ctx.argv) < 2:
        return CommandResult.fail("basename: missing operand\n")
    name = posixpath.basename(ctx.argv[1].rstrip("/")) or "/"
    if len(ctx.argv) > 2 and name != ctx.argv[2]:
        name = name.removesuffix(ctx.argv[2])
    return CommandResult.ok(name + "\n")


@command("dirname")
async def dirname(ctx: CommandContext) -> CommandResult:
    if len(ctx.argv) < 2:
        return CommandResult.fail("dirname: missing operand\n")
    return CommandResult.ok((posixpath.dirname(ctx.argv[1].rstrip("/")) or ".") + "\n")


@command("sleep")
async def sleep(ctx: CommandContext) -> CommandResult:
    total = 0.0
    for arg in ctx.argv[1:]:
        if arg in ("inf", "infinity"):  # a container's "keep running" (GNU and busybox sleep)
            total = math.inf
            continue
        match = re.fullmatch(r"(\d+(?:\.\d*)?)([smhd]?)", arg)
        if not match:
            return CommandResult.fail(f"sleep: invalid time interval '{arg}'\n")
        total += float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if len(ctx.argv) < 2:
        return CommandResult.fail("sleep: missing operand\n")
    if total == math.inf:
        await asyncio.Event().wait()
    await ctx.node.clock.sleep(total)
    return CommandResult()


@command("which")
async def which(ctx: CommandContext) -> CommandResult:
    _, _, names = parse_flags(ctx.argv[1:])
    found = [locate(ctx.node, name) for name in names]
    out = "".join(f"{path}\n" for path in found if path)
    return CommandResult(out.encode(), exit_status=0 if names and all(found) else 1)


@command("id")
async def id_(ctx: CommandContext) -> CommandResult:
    flags, _, operands = parse_flags(ctx.argv[1:])
    user = operands[0] if operands else ctx.user
    if user not in ("root", ctx.node.spec.user):
        return CommandResult.fail(f"id: '{user}': no such user\n")
    number = image.uid(ctx.node, user)
    names = bool(flags & {"-n", "--name"})
    if flags & {"-u", "-g", "--user", "--group"}:
        return CommandResult.ok(f"{user if names else number}\n")
    if flags & {"-G", "--groups"}:
        groups = ["root"] if user == "root" else [user, "adm", "sudo"]
        ids = ["0"] if user == "root" else [str(number), "4", "27"]
        return CommandResult.ok(" ".join(groups if names else ids) + "\n")
    extra = "" if user == "root" else ",4(adm),24(cdrom),27(sudo),30(dip),105(lxd)"
    return CommandResult.ok(f"uid={number}({user}) gid={number}({user}) groups={number}({user}){extra}\n")


@command("whoami")
async def whoami(ctx: CommandContext) -> CommandResult:
    return CommandResult.ok(ctx.user + "\n")


@command("env", "printenv")
async def env(ctx: CommandContext) -> CommandResult:
    args = ctx.argv[1:]
    variables = dict(ctx.env)
    while args and "=" in args[0] and not args[0].startswith("-"):
        name, _, value = args.pop(0).partition("=")
        variables[name] = value
    if ctx.argv[0] == "printenv" and args:
        values = [variables[a] for a in args if a in variables]
        return CommandResult(("".join(f"{v}\n" for v in values)).encode(), exit_status=0 if values else 1)
    if not args:
        return CommandResult.ok("".join(f"{k}={v}\n" for k, v in variables.items()))
    assert ctx.run is not None
    return await ctx.run(shlex.join(args), ctx.stdin, ctx.user, env=variables)  # type: ignore[call-arg]


@command("date")
async def date(ctx: CommandContext) -> CommandResult:
    now = datetime.fromtimestamp(ctx.node.clock.now(), UTC)
    fmt = next((a[1:] for a in ctx.argv[1:] if a.startswith("+")), "%a %b %d %H:%M:%S UTC %Y")
    return CommandResult.ok(now.strftime(fmt.replace("%s", str(int(now.timestamp())))) + "\n")


@command("stat")
async def stat_(ctx: CommandContext) -> CommandResult:
    _, values, paths = parse_flags(ctx.argv[1:], valued="c")
    fmt = values.get("-c") or values.get("--format") or "%n %s %a %U"
    out, errors = [], []
    for path in paths:
        target = normpath(path, ctx.cwd)
        if not ctx.node.exists(target):
            errors.append(f"stat: cannot statx '{path}': No such file or directory\n")
            continue
        real = ctx.node.host_path(target)
        fields = {"n": path, "s": str(real.stat().st_size), "a": f"{ctx.node.mode(target):o}",
                  "U": ctx.node.owner(target), "G": ctx.node.owner(target),
                  "u": str(image.uid(ctx.node, ctx.node.owner(target))), "Y": str(int(real.stat().st_mtime)),
                  "F": "directory" if ctx.node.is_dir(target) else "regular file", "%": "%"}
        out.append(re.sub(r"%(.)", lambda m, f=fields: f.get(m.group(1), m.group()), fmt) + "\n")
    return CommandResult("".join(out).encode(), "".join(errors).encode(), 1 if errors else 0)


@command("install")
async def install(ctx: CommandContext) -> CommandResult:
    """``install [-D] [-m MODE] [-o OWNER] [-g GROUP] SRC DEST`` and ``install -d DIR...``."""
    flags, values, operands = parse_flags(ctx.argv[1:], valued="mog")
    mode = int(values.get("-m", "755"), 8)
    owner = values.get("-o")
    try:
        if "-d" in flags:
            for path in operands:
                ctx.node.mkdir(normpath(path, ctx.cwd), mode=mode, user=ctx.user)
            return CommandResult()
        if len(operands) < 2:
            return CommandResult.fail("install: missing destination file operand\n")
        source, target = normpath(operands[0], ctx.cwd), _into(ctx, operands[0], operands[1])
        if "-D" in flags:
            ctx.node.mkdir(posixpath.dirname(target), user=ctx.user, umask=ctx.umask)
        data = ctx.node.read(source, ctx.user)
        if ctx.node.exists(target):
            ctx.node.remove(target, user=ctx.user)  # install replaces the file, as unlink + create
        ctx.node.write(target, data, mode=mode, user=ctx.user)
        if owner:
            ctx.node.chown(target, owner, user=ctx.user)
    except OSError as exc:
        return CommandResult.fail(f"install: cannot create '{exc.filename}': {reason(exc)}\n")
    return CommandResult()


def _leading_number(line: str) -> float:
    match = re.match(r"\s*(-?\d+(?:\.\d+)?)", line)
    return float(match.group(1)) if match else 0.0


@command("sort")
async def sort(ctx: CommandContext) -> CommandResult:
    flags, _, paths = parse_flags(ctx.argv[1:])
    found, errors, status = read_inputs(ctx, "sort", paths)
    lines = [line for _, data in found for line in data.decode(errors="replace").splitlines()]
    lines = sorted(lines, key=_leading_number if "-n" in flags else None, reverse="-r" in flags)
    if "-u" in flags:
        lines = list(dict.fromkeys(lines))
    return CommandResult("".join(f"{line}\n" for line in lines).encode(), errors.encode(), status)


@command("uniq")
async def uniq(ctx: CommandContext) -> CommandResult:
    flags, _, paths = parse_flags(ctx.argv[1:])
    found, errors, status = read_inputs(ctx, "uniq", paths[:1])
    runs: list[list] = []
    for line in (line for _, data in found for line in data.decode(errors="replace").splitlines()):
        if runs and runs[-1][0] == line:
            runs[-1][1] += 1
        else:
            runs.append([line, 1])
    out = "".join(f"{count:>7} {line}\n" if "-c" in flags else f"{line}\n" for line, count in runs)
    return CommandResult(out.encode(), errors.encode(), status)


@command("cut")
async def cut(ctx: CommandContext) -> CommandResult:
    _, values, paths = parse_flags(ctx.argv[1:], valued="dfc")
    delimiter = values.get("-d", "\t")
    wanted: list[int] = []
    for part in (values.get("-f") or values.get("-c") or "").split(","):
        low, _, high = part.partition("-")
        if part:
            wanted += range(int(low or 1), int(high or 999) + 1) if "-" in part else [int(part)]
    found, errors, status = read_inputs(ctx, "cut", paths)
    out = []
    for line in (line for _, data in found for line in data.decode(errors="replace").splitlines()):
        if "-c" in values:
            out.append("".join(line[i - 1] for i in wanted if i <= len(line)))
        else:
            fields = line.split(delimiter)
            out.append(delimiter.join(fields[i - 1] for i in wanted if i <= len(fields)) if len(fields) > 1 else line)
    return CommandResult("".join(f"{line}\n" for line in out).encode(), errors.encode(), status)


def _tr_set(spec: str) -> str:
    spec = unescape(spec)[0]
    classes = {"[:upper:]": "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "[:lower:]": "abcdefghijklmnopqrstuvwxyz",
               "[:digit:]": "0123456789", "[:space:]": " \t\n\r\f\v"}
    for name, chars in classes.items():
        spec = spec.replace(name, chars)
    return re.sub(r"(.)-(.)", lambda m: "".join(chr(c) for c in range(ord(m.group(1)), ord(m.group(2)) + 1)), spec)


@command("tr")
async def tr(ctx: CommandContext) -> CommandResult:
    flags, _, sets = parse_flags(ctx.argv[1:])
    text = ctx.stdin.decode(errors="replace")
    if not sets:
        return CommandResult.fail("tr: missing operand\n")
    source = _tr_set(sets[0])
    if "-d" in flags:
        return CommandResult.ok("".join(c for c in text if c not in source))
    if "-s" in flags and len(sets) == 1:
        return CommandResult.ok(re.sub(f"([{re.escape(source)}])\\1+", r"\1", text))
    target = _tr_set(sets[1]) if len(sets) > 1 else ""
    if not target:
        return CommandResult.fail(f"tr: missing operand after '{sets[0]}'\n")
    target = target + target[-1] * (len(source) - len(target))
    return CommandResult.ok(text.translate(str.maketrans(source, target[:len(source)])))
