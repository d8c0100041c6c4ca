"""The shell's builtins (cd, export, set, read, trap, source, type...), as Ubuntu 22.04's bash runs
them. Each takes the shell, its argv, the command's prefix assignments and its stdin; they are
registered with the command registry like programs (``registry.BUILTINS``), on import.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from typing import Any

from labsim.node import registry
from labsim.node.model import normpath
from labsim.node.registry import CommandResult
from labsim.node.shell import (
    ExitShell,
    LoopControl,
    Return,
    Shell,
    describe_error,
    fatal,
    locate,
)

KEYWORDS = {"if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
            "in", "{", "}", "!", "[[", "]]", "function", "select", "time", "coproc"}
SIGNALS = {"EXIT", "ERR", "DEBUG", "RETURN", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE",
           "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM", "TERM", "CHLD", "CONT", "STOP", "TSTP",
           "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS"}
PSEUDO_SIGNALS = {"EXIT", "ERR", "DEBUG", "RETURN"}
SIGNAL_NUMBERS = {"0": "EXIT", "1": "HUP", "2": "INT", "3": "QUIT", "9": "KILL", "15": "TERM"}
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _error(shell: Shell, message: str, status: int = 1) -> CommandResult:
    return CommandResult.fail(f"{shell.where()}{message}\n", status)


async def _cd(shell: Shell, argv: list[str], *_: Any) -> CommandResult:
    args = [a for a in argv[1:] if a not in ("-L", "-P", "--")]
    if len(args) > 1:
        return _error(shell, "cd: too many arguments")
    wanted = args[0] if args else shell.vars.get("HOME")
    if wanted is None or (wanted == "-" and "OLDPWD" not in shell.vars):
        return _error(shell, f"cd: {'HOME' if wanted is None else 'OLDPWD'} not set")
    if wanted == "":
        return CommandResult()  # bash: `cd ""` stays where it is
    target = normpath(shell.vars["OLDPWD"] if wanted == "-" else wanted, shell.cwd)
    reason = ("No such file or directory" if not shell.node.exists(target) else
              "Not a directory" if not shell.node.is_dir(target) else
              "Permission denied" if not shell.node.can(target, shell.user, "x") else None)
    if reason is not None:
        if shell.dialect == "sh":
            return _error(shell, f"cd: can't cd to {wanted}", 2)
        return _error(shell, f"cd: {wanted}: {reason}")
    shell.vars["OLDPWD"], shell.cwd = shell.cwd, target
    shell.vars["PWD"] = target
    return CommandResult.ok(target + "\n" if wanted == "-" else "")


def _declared(shell: Shell, name: str) -> str:
    flag = "-x" if name in shell.exported else "--"
    value = shell.vars[name].replace("\\", "\\\\").replace('"', '\\"')
    return f'declare {flag} {name}="{value}"\n'


def _assign(shell: Shell, builtin: str, operands: list[str], export: bool) -> CommandResult:
    """NAME[=VALUE] operands of export/declare/readonly: set, and export if asked."""
    errors = []
    for arg in operands:
        name, eq, value = arg.partition("=")
        if not IDENTIFIER.fullmatch(name):
            errors.append(f"{shell.where()}{builtin}: `{arg}': not a valid identifier\n")
            continue
        if eq:
            shell.vars[name] = value
        if export:
            shell.exported.add(name)
    return CommandResult(stderr="".join(errors).encode(), exit_status=int(bool(errors)))


async def _export(shell: Shell, argv: list[str], *_: Any) -> CommandResult:
    options = [a for a in argv[1:] if a.startswith("-")]
    names = [a for a in argv[1:] if not a.startswith("-")]
    if "-n" in options:
        shell.exported.difference_update(names)
        return CommandResult()
    if not names:
        return CommandResult.ok("".join(_declared(shell, n) for n in sorted(shell.exported) if n in shell.vars))
    return _assign(shell, "export", names, export=True)


async def _declare(shell: Shell, argv: list[str], *_: Any) -> CommandResult:
    """declare/typeset/readonly: variables (and exports); arrays and functions are not modelled."""
    options = "".join(a[1:] for a in argv[1:] if a.startswith(("-", "+")))
    names = [a for a in argv[1:] if not a.startswith(("-", "+"))]
    if set(options) & set("aAfFn"):
        return _error(shell, f"{argv[0]}: arrays, functions and namerefs are not modelled by labsim's node shell", 2)
    if "p" in options or not names:
        shown = names or sorted(shell.vars)
        return CommandResult.ok("".join(_declared(shell, n) for n in shown if n in shell.vars))
    return _assign(shell, argv[0], names, export="x" in options)


async def _unset(shell: Shell, argv: list[str], *_: Any) -> CommandResult:
    for name in argv[1:]:
        if not name.startswith("-"):
            shell.vars.pop(name, None)
            shell.exported.discard(name)
    return CommandResult()


async def _set(shell: Shell, argv: list[str], *_: Any) -> CommandResult:
    if len(argv) == 1:
        return CommandResult.ok("".join(f"{n}={shlex.quote(v)}\n" for n, v in sorted(shell.vars.items())))
    try:
        shell.set_options(argv[1:])
    except ValueError as exc:
        return _error(shell, f"set: {exc}", 2)
    return CommandResult()


async def _exit(shell: Shell, argv: list[str], *_: Any) -> CommandResult:
    if len(argv) > 2:
        return _error(shell, "exit: too many arguments")
    if len(argv) == 2 and not re.fullmatch(r"[-+]?\d+", argv[1]):
        raise fatal(f"{shell.where()}exit: {argv[1]}: numeric argument required\n", 2)
    raise ExitShell(int(argv[1]) % 256 if len(argv) == 2 else shell.status)


async def _return(shell: Shell, argv: list[str], *_: Any) -> CommandResult:
    if not shell.sourcing and not shell.frames:
        return _error(shell, "return: can only `return' from a function or sourced script")
    raise Return(int(argv[1]) % 256 if len(argv) > 1 and argv[1].lstrip("-").isdigit() else shell.status)


async def _local(shell: Shell, argv: list[str], *_: Any) -> CommandResult:
    """``local NAME[=VALUE]``: the name is the function's own until it returns."""
    if not shell.frames:
        return _error(shell, "local: can only be used in a function")
    frame = shell.frames[-1]
    for operand in (a for a in argv[1:] if not a.startswith("-")):
        name = operand.partition("=")[0]
        if IDENTIFIER.fullmatch(name) and name not in frame:
            frame[name] = shell.vars.get(name)
            shell.vars.pop(name, None)
    return _assign(shell, "local", [a for a in argv[1:] if not a.startswith("-")], export=False)


async def _shift(shell: Shell, argv: list[str], *_: Any) -> CommandResult:
    if len(argv) > 1 and not argv[1].isdigit():
        return _error(shell, f"shift: {argv[1]}: numeric argument required")
    count = int(argv[1]) if len(argv) > 1 else 1
    if count > len(shell.args):
        return CommandResult(exit_status=1)  # bash fails silently (shift_verbose is off)
    shell.args = shell.args[count:]
    return CommandResult()


async def _read(shell: Shell, argv: list[str], assignments: dict[str, str], stdin: bytes) -> CommandResult:
    """``read [-r] [-s] [-p PROMPT] [-t SECS] [-n N] [-d DELIM] [NAME...]``: one line of the input,
    split on IFS over the names (the last takes the rest); 1 at the end of the input."""
    args, raw, delimiter, limit = argv[1:], False, "\n", None
    while args and args[0].startswith("-") and len(args[0]) > 1:
        option = args.pop(0)
        if option == "--":
            break
        for i, letter in enumerate(option[1:]):
            if letter in "rs":
                raw = raw or letter == "r"
                continue
            if letter not in "ptnd":
                return _error(shell, f"read: -{letter}: not modelled by labsim's node shell", 2)
            value = option[i + 2:] or (args.pop(0) if args else "")
            delimiter = (value[:1] or "\0") if letter == "d" else delimiter
            limit = int(value) if letter == "n" and value.isdigit() else limit
            break  # the rest of the word was the option's value
    names = args or ["REPLY"]
    bad = [n for n in names if not IDENTIFIER.fullmatch(n)]
    if bad:
        return _error(shell, f"read: `{bad[0]}': not a valid identifier")
    text, complete = shell.read_input(stdin, delimiter, limit)
    if not raw:
        text = re.sub(r"\\(.)", r"\1", text.replace("\\\n", ""), flags=re.S)
    ifs = assignments.get("IFS", shell.vars.get("IFS", " \t\n"))
    fields = _split_ifs(text, ifs, len(names)) if args else [text]  # REPLY keeps the whole line
    for i, name in enumerate(names):
        shell.vars[name] = fields[i] if i < len(fields) else ""
    return CommandResult(exit_status=0 if complete else 1)


def _split_ifs(text: str, ifs: str, count: int) -> list[str]:
    """Fields for ``read``: IFS whitespace around them is dropped; the last field keeps the rest."""
    if not ifs or count == 1:
        return [text.strip(" \t\n") if ifs else text]
    blanks = "".join(c for c in ifs if c in " \t\n")
    others = "".join(c for c in ifs if c not in " \t\n")
    text = text.strip(blanks) if blanks else text
    if not text:
        return []
    around = f"[{re.escape(blanks)}]*" if blanks else ""
    pattern = f"{around}[{re.escape(others)}]{around}" if others else f"[{re.escape(blanks)}]+"
    return re.split(pattern, text, maxsplit=count - 1)


async def _trap(shell: Shell, argv: list[str], *_: Any) -> CommandResult:
    """``trap ACTION SIGNAL...``: EXIT runs when the shell ends and ERR after a failing command;
    other signals never reach a simulated shell, so their traps are kept and never run."""
    args = argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    if not args or args[0] in ("-p", "-l"):
        return CommandResult.ok("".join(f"trap -- {shlex.quote(a)} {'' if s in PSEUDO_SIGNALS else 'SIG'}{s}\n"
                                        for s, a in shell.traps.items()))
    action, signals = ("-", args) if len(args) == 1 else (args[0], args[1:])
    errors = []
    for signal in signals:
        name = SIGNAL_NUMBERS.get(signal) or signal.upper().removeprefix("SIG")
        if name not in SIGNALS:
            errors.append(f"{shell.where()}trap: {signal}: invalid signal specification\n")
        elif action == "-":
            shell.traps.pop(name, None)
        else:
            shell.traps[name] = action
    return CommandResult(stderr="".join(errors).encode(), exit_status=int(bool(errors)))


async def _source(shell: Shell, argv: list[str], _: dict[str, str], stdin: bytes) -> CommandResult:
    """``. FILE [ARGS]`` / ``source``: the file's commands in this shell; ``return`` ends it."""
    if len(argv) < 2:
        return _error(shell, f"{argv[0]}: filename argument required\n{argv[0]}: usage: {argv[0]} filename [arguments]", 2)
    path = _source_path(shell, argv[1])
    try:
        text = shell.node.read(path, shell.user).decode(errors="replace")
    except OSError as exc:
        return _error(shell, f"{argv[1]}: {describe_error(exc).split(': ', 1)[-1]}")
    saved = shell.args
    if len(argv) > 2:
        shell.args = argv[2:]
    shell.sourcing += 1
    try:
        return await shell.run_here(text, stdin, f"{argv[1]}: ")
    finally:
        shell.sourcing -= 1
        if len(argv) > 2:
            shell.args = saved


def _source_path(shell: Shell, name: str) -> str:
    """A name without a slash is looked for in $PATH first, then in the working directory."""
    if "/" not in name:
        for folder in shell.vars.get("PATH", "").split(":"):
            if folder and shell.node.is_file(posixpath.join(folder, name)):
                return posixpath.join(folder, name)
    return normpath(name, shell.cwd)


async def _eval(shell: Shell, argv: list[str], _: dict[str, str], stdin: bytes) -> CommandResult:
    return await shell.run_here(" ".join(argv[1:]), stdin, "eval: ")


async def _type(shell: Shell, argv: list[str], *_: Any) -> CommandResult:
    """``type [-t|-p|-P] NAME...``: keyword, builtin or file, as bash words them."""
    options = "".join(a[1:] for a in argv[1:] if a.startswith("-"))
    out, errors, status = [], [], 0
    for name in (a for a in argv[1:] if not a.startswith("-")):
        kind = ("keyword" if name in KEYWORDS else "function" if name in shell.functions
                else "builtin" if name in registry.BUILTINS else None)
        path = None if kind else locate(shell.node, name)
        if kind is None and path is None:
            status = 1
            errors += [] if options else [f"{shell.where()}type: {name}: not found\n"]
        elif "t" in options:
            out.append(f"{kind or 'file'}\n")
        elif "p" in options.lower():
            out += [f"{path}\n"] if path else []
        else:
            out.append(f"{name} is {path}\n" if path else f"{name} is a function\n" if kind == "function"
                       else f"{name} is a shell {kind}\n")
    return CommandResult("".join(out).encode(), "".join(errors).encode(), status)


async def _command(shell: Shell, argv: list[str], assignments: dict[str, str], stdin: bytes) -> CommandResult:
    """``command -v NAME``: where a program is; ``command NAME ...`` runs it past builtins."""
    if len(argv) > 2 and argv[1] in ("-v", "-V"):
        found = [_where(shell, name) for name in argv[2:]]
        lines = "".join(f"{path}\n" for path in found if path)
        return CommandResult(stdout=lines.encode(), exit_status=0 if all(found) else 1)
    if len(argv) < 2:
        return CommandResult()
    return await shell.execute(argv[1:], assignments, stdin)


async def _builtin(shell: Shell, argv: list[str], assignments: dict[str, str], stdin: bytes) -> CommandResult:
    if len(argv) < 2:
        return CommandResult()
    if argv[1] not in registry.BUILTINS:
        return _error(shell, f"builtin: {argv[1]}: not a shell builtin")
    return await registry.BUILTINS[argv[1]](shell, argv[1:], assignments, stdin)


def _where(shell: Shell, name: str) -> str | None:
    return name if name in registry.BUILTINS or name in KEYWORDS else locate(shell.node, name)


async def _exec(shell: Shell, argv: list[str], assignments: dict[str, str], stdin: bytes) -> CommandResult:
    """``exec CMD``: the command replaces the shell, so the shell ends with its status."""
    if len(argv) < 2:
        return CommandResult()
    result = await shell.execute(argv[1:], assignments, stdin)
    shell.pending_exit = result.exit_status
    return result


async def _loop_control(shell: Shell, argv: list[str], *_: Any) -> CommandResult:
    raise LoopControl(argv[0], int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else 1)


async def _printf(shell: Shell, argv: list[str], assignments: dict[str, str], stdin: bytes) -> CommandResult:
    """bash's printf: coreutils' formatting, and ``-v NAME`` puts the result in a variable."""
    handler = registry.lookup("printf")
    assert handler is not None
    if len(argv) < 3 or argv[1] != "-v":
        return await shell.program(handler, argv, assignments, stdin)
    if not IDENTIFIER.fullmatch(argv[2]):
        return _error(shell, f"printf: `{argv[2]}': not a valid identifier", 2)
    result = await shell.program(handler, [argv[0], *argv[3:]], assignments, stdin)
    shell.vars[argv[2]] = result.stdout.decode(errors="replace")
    return CommandResult(stderr=result.stderr, exit_status=result.exit_status)


async def _pwd(shell: Shell, argv: list[str], *_: Any) -> CommandResult:
    return CommandResult.ok(shell.cwd + "\n")


async def _umask(shell: Shell, argv: list[str], *_: Any) -> CommandResult:
    if len(argv) < 2:
        return CommandResult.ok(f"{shell.umask:04o}\n")
    try:
        shell.umask = int(argv[1], 8) & 0o777
    except ValueError:
        return _error(shell, f"umask: {argv[1]}: octal number out of range")
    return CommandResult()


async def _noop(shell: Shell, argv: list[str], *_: Any) -> CommandResult:
    return CommandResult()


registry.BUILTINS.update({
    "cd": _cd, "pwd": _pwd, "export": _export, "unset": _unset, "set": _set, "exit": _exit,
    "command": _command, "builtin": _builtin, "exec": _exec, "break": _loop_control,
    "continue": _loop_control, ":": _noop, "shopt": _noop, "umask": _umask, "hash": _noop, "wait": _noop,
    "read": _read, "local": _local, "return": _return, "shift": _shift, "trap": _trap, "source": _source,
    ".": _source, "eval": _eval, "type": _type, "declare": _declare, "typeset": _declare, "readonly": _declare,
    "printf": _printf,
})
