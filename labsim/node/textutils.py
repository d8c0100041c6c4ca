"""sed and awk as one-liners use them: sed's ``s///``, ``d``, ``p`` and ``q`` with line, ``$``
and ``/regex/`` addresses (``-n``, ``-i``, ``-E``); awk's ``[pattern] { print ... }`` rules over
fields (``-F``, ``$N``, ``NF``, ``NR``, ``BEGIN``/``END``). Anything beyond that fails loudly
rather than pretending."""

from __future__ import annotations

import re
from dataclasses import dataclass

from labsim.node.coreutils import basic_regex, parse_flags, read_inputs, reason
from labsim.node.model import normpath
from labsim.node.registry import CommandContext, CommandResult, command


class ScriptError(ValueError):
    pass


# --- sed -------------------------------------------------------------------------------------------

@dataclass
class SedCommand:
    address: str | None  # "3", "$", or "/regex"
    name: str  # "s" | "d" | "p" | "q"
    regex: re.Pattern[str] | None = None
    replacement: str = ""
    count: int = 1  # 0: every match (g)
    print_after: bool = False


def _sed_regex(source: str, extended: bool, flags: int = 0) -> re.Pattern[str]:
    try:
        return re.compile(source if extended else basic_regex(source), flags)
    except re.error as exc:
        raise ScriptError(f"-e expression #1: {exc}") from None


def _delimited(text: str, pos: int, delimiter: str) -> tuple[str, int]:
    """Text up to an unescaped ``delimiter``, and the position after it."""
    out = []
    while pos < len(text):
        c = text[pos]
        if c == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1] if text[pos + 1] == delimiter else text[pos:pos + 2])
            pos += 2
            continue
        if c == delimiter:
            return "".join(out), pos + 1
        out.append(c)
        pos += 1
    raise ScriptError("-e expression #1: unterminated `s' command")


def parse_sed(script: str, extended: bool) -> list[SedCommand]:
    commands, pos = [], 0
    while pos < len(script):
        if script[pos] in " \t\n;":
            pos += 1
            continue
        address = None
        if script[pos] == "/":
            address, pos = _delimited(script, pos + 1, "/")
            address = f"/{address}"
        elif (match := re.compile(r"\d+|\$").match(script, pos)):
            address, pos = match.group(), match.end()
        name = script[pos] if pos < len(script) else ""
        pos += 1
        if name == "s":
            delimiter = script[pos]
            source, pos = _delimited(script, pos + 1, delimiter)
            replacement, pos = _delimited(script, pos, delimiter)
            flags = re.match(r"[gIip0-9]*", script[pos:]).group()
            pos += len(flags)
            regex = _sed_regex(source, extended, re.IGNORECASE if set(flags) & {"I", "i"} else 0)
            repl = re.sub(r"\\(\d)", r"\\g<\1>", replacement.replace("\\&", "\x00")).replace("&", r"\g<0>")
            commands.append(SedCommand(address, "s", regex, repl.replace("\x00", "&"),
                                       0 if "g" in flags else int(re.sub(r"\D", "", flags) or 1), "p" in flags))
        elif name in ("d", "p", "q"):
            commands.append(SedCommand(address, name))
        else:
            raise ScriptError(f"-e expression #1, char {pos}: unknown command: `{name}'")
    return commands


def run_sed(commands: list[SedCommand], text: str, quiet: bool, extended: bool) -> str:
    lines = text.splitlines()
    out = []
    for number, line in enumerate(lines, 1):
        deleted = False
        for cmd in commands:
            if not _sed_matches(cmd.address, line, number, len(lines), extended):
                continue
            if cmd.name == "s" and cmd.regex is not None:
                line, made = cmd.regex.subn(cmd.replacement, line, count=cmd.count)
                if made and cmd.print_after:
                    out.append(line)
            elif cmd.name == "d":
                deleted = True
                break
            elif cmd.name == "p":
                out.append(line)
            elif cmd.name == "q":
                if not quiet:
                    out.append(line)
                return "".join(f"{x}\n" for x in out)
        if not deleted and not quiet:
            out.append(line)
    return "".join(f"{x}\n" for x in out)


def _sed_matches(address: str | None, line: str, number: int, last: int, extended: bool) -> bool:
    if address is None:
        return True
    if address == "$":
        return number == last
    if address.startswith("/"):
        return bool(_sed_regex(address[1:], extended).search(line))
    return number == int(address)


@command("sed")
async def sed(ctx: CommandContext) -> CommandResult:
    in_place = any(a.startswith("-i") or a.startswith("--in-place") for a in ctx.argv[1:])
    args, scripts = [], []
    rest = iter(a for a in ctx.argv[1:] if not (a.startswith("-i") or a.startswith("--in-place")))
    for arg in rest:
        if arg == "-e" or arg == "--expression":
            scripts.append(next(rest, ""))
        elif arg.startswith("--expression="):
            scripts.append(arg.split("=", 1)[1])
        else:
            args.append(arg)
    flags, _, operands = parse_flags(args)
    files = operands if scripts else operands[1:]
    scripts = scripts or operands[:1]
    if not scripts:
        return CommandResult.fail("Usage: sed [OPTION]... {script-only-if-no-other-script} [input-file]...\n", 1)
    extended = bool(flags & {"-E", "-r"})
    try:
        commands = parse_sed("\n".join(scripts), extended)
    except ScriptError as exc:
        return CommandResult.fail(f"sed: {exc}\n")
    quiet = "-n" in flags
    if not in_place:
        found, errors, status = read_inputs(ctx, "sed", files)
        text = "".join(data.decode(errors="replace") for _, data in found)
        return CommandResult(run_sed(commands, text, quiet, extended).encode(), errors.encode(), status)
    for path in files:
        target = normpath(path, ctx.cwd)
        try:
            text = ctx.node.read(target, ctx.user).decode(errors="replace")
            ctx.node.write(target, run_sed(commands, text, quiet, extended).encode(), user=ctx.user)
        except OSError as exc:
            return CommandResult.fail(f"sed: couldn't edit {path}: {reason(exc)}\n", 4)
    return CommandResult()


# --- awk -------------------------------------------------------------------------------------------

@dataclass
class AwkRule:
    pattern: str  # "", "BEGIN", "END", "/regex/" or a comparison like "NR==2", "$1==\"x\""
    items: list[list[str]]  # print's comma-separated items, each a list of concatenated terms


AWK_RULE = re.compile(r"\s*(BEGIN|END|/(?:[^/\\]|\\.)*/|[^{]*?)\s*\{\s*print\b([^}]*)\}\s*;?")
AWK_TERM = re.compile(r'"((?:[^"\\]|\\.)*)"|\$\(?NF(?:-(\d+))?\)?|\$(\d+)|\bNR\b|\bNF\b')


def parse_awk(program: str) -> list[AwkRule]:
    rules, pos = [], 0
    program = program.strip()
    while pos < len(program):
        match = AWK_RULE.match(program, pos)
        if not match or match.end() == pos:
            raise ScriptError(f"labsim's awk runs `[pattern] {{ print ... }}` rules only: {program!r}")
        pattern, body = match.group(1).strip(), match.group(2)
        items = [[m.group() for m in AWK_TERM.finditer(item)] for item in _split_commas(body)] \
            if body.strip() else []
        rules.append(AwkRule(pattern, items))
        pos = match.end()
    return rules


def _split_commas(text: str) -> list[str]:
    parts, quote, current = [], False, []
    for c in text:
        if c == '"':
            quote = not quote
        if c == "," and not quote:
            parts.append("".join(current))
            current = []
            continue
        current.append(c)
    parts.append("".join(current))
    return parts


def _awk_value(term: str, fields: list[str], record: str, nr: int) -> str:
    if term.startswith('"'):
        return term[1:-1].replace('\\"', '"').replace("\\t", "\t").replace("\\n", "\n")
    if term == "NR":
        return str(nr)
    if term == "NF":
        return str(len(fields))
    if "NF" in term:
        back = re.search(r"NF-(\d+)", term)
        index = len(fields) - (int(back.group(1)) if back else 0)
    else:
        index = int(term[1:])
    if index == 0:
        return record
    return fields[index - 1] if 0 < index <= len(fields) else ""


def _awk_matches(pattern: str, fields: list[str], record: str, nr: int) -> bool:
    if not pattern:
        return True
    if pattern.startswith("/"):
        return bool(re.search(pattern[1:-1], record))
    match = re.fullmatch(r'(\$\d+|NR|NF)\s*(==|!=|>=|<=|>|<)\s*("(?:[^"]*)"|\S+)', pattern)
    if not match:
        raise ScriptError(f"labsim's awk cannot evaluate the pattern {pattern!r}")
    left = _awk_value(match.group(1), fields, record, nr)
    right = match.group(3).strip('"')
    both_numbers = re.fullmatch(r"-?\d+(\.\d+)?", left) and re.fullmatch(r"-?\d+(\.\d+)?", right)
    a, b = (float(left), float(right)) if both_numbers else (left, right)
    return {"==": a == b, "!=": a != b, ">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b}[match.group(2)]


def run_awk(rules: list[AwkRule], text: str, separator: str | None) -> str:
    out: list[str] = []

    def emit(rule: AwkRule, fields: list[str], record: str, nr: int) -> None:
        if not rule.items:
            out.append(record)
        else:
            out.append(" ".join("".join(_awk_value(t, fields, record, nr) for t in item) for item in rule.items))

    lines = text.splitlines()
    for rule in (r for r in rules if r.pattern == "BEGIN"):
        emit(rule, [], "", 0)
    for nr, record in enumerate(lines, 1):
        fields = record.split(separator) if separator else record.split()
        for rule in rules:
            if rule.pattern not in ("BEGIN", "END") and _awk_matches(rule.pattern, fields, record, nr):
                emit(rule, fields, record, nr)
    for rule in (r for r in rules if r.pattern == "END"):
        emit(rule, lines[-1].split(separator) if lines else [], lines[-1] if lines else "", len(lines))
    return "".join(f"{line}\n" for line in out)


@command("awk", "gawk", "mawk")
async def awk(ctx: CommandContext) -> CommandResult:
    _, values, operands = parse_flags(ctx.argv[1:], valued="Fv")
    if not operands:
        return CommandResult.fail("usage: awk [-F fs][-v var=value][prog | -f progfile][file ...]\n", 2)
    separator = values.get("-F")
    try:
        rules = parse_awk(operands[0])
        found, errors, status = read_inputs(ctx, "awk", operands[1:])
        text = "".join(data.decode(errors="replace") for _, data in found)
        return CommandResult(run_awk(rules, text, separator).encode(), errors.encode(), status)
    except ScriptError as exc:
        return CommandResult.fail(f"awk: {exc}\n", 2)
