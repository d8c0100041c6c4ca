"""Running command lines on a node as bash runs them: lists, ``&&``/``||``, pipes, prefix
assignments, expansions (``$VAR``, ``$(...)``, ``~``, globs), redirections, functions, the
builtins scripts use, and each program looked up in the command registry. Output is buffered:
commands run to completion in turn. Errors are worded as Ubuntu 22.04's bash 5.1 words them for
``bash -c`` ("bash: line 3: ..."); builtins labsim does not model say so (status 2).
"""

from __future__ import annotations

import ast
import fnmatch
import glob
import operator
import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labsim.node import image, registry
from labsim.node.model import NodeModel, default_umask, normpath
from labsim.node.registry import CommandContext, CommandResult
from labsim.node.syntax import (
    AndOr,
    Command,
    Compound,
    HereDoc,
    Part,
    Pipeline,
    Redirect,
    ShellSyntaxError,
    Word,
    heredoc_word,
    parse,
)

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GLOB_CHARS = set("*?[")
PARAMETER = re.compile(r"([A-Za-z_]\w*|[0-9?$#@*!-])(:?[-=+?]|##?|%%?|//?|\^\^?|,,?|:)?(.*)", re.S)
DEFAULTING = {":-", "-", ":=", "=", ":+", "+", ":?", "?"}  # ${name-word} forms, which set -u allows
# A loop on a simulated node runs on the lab's event loop: cap it rather than spin forever.
LOOP_LIMIT = 100_000
# Programs that read their standard input when given no file arguments.
STDIN_READERS = {"cat", "tee", "sh", "bash", "grep", "head", "tail", "base64", "sha256sum", "wc", "sort",
                 "uniq", "cut", "tr"}


class Unwind(Exception):
    """exit, break, continue: leave enclosing commands, keeping what they printed so far."""

    output: CommandResult | None = None


class ExitShell(Unwind):
    def __init__(self, status: int) -> None:
        self.status = status


class LoopControl(Unwind):
    def __init__(self, kind: str, levels: int) -> None:
        self.kind, self.levels = kind, levels


class Return(Unwind):
    """``return``: leaves a function or a sourced file."""

    def __init__(self, status: int) -> None:
        self.status = status


def fatal(message: str, status: int) -> ExitShell:
    """An error that ends a non-interactive shell (bad substitution, unbound variable), printed."""
    exc = ExitShell(status)
    exc.output = CommandResult.fail(message, status)
    return exc


def login_env(node: NodeModel, user: str) -> dict[str, str]:
    """The environment sshd gives a login (and sudo gives root)."""
    home = image.home(node, user)
    return {"HOME": home, "USER": user, "LOGNAME": user, "SHELL": "/bin/bash", "PATH": PATH,
            "LANG": "C.UTF-8", "PWD": home}


Live = Callable[[bytes, int], None]  # output (data, fd 1 or 2) handed on as it is written


class _Emitted(bytearray):
    """Output that leaves as it is written (a container's log, ``kubectl logs -f``): kept nowhere."""

    def __init__(self, emit: Live, fd: int) -> None:
        super().__init__()
        self._emit, self._fd = emit, fd

    def __iadd__(self, data):  # type: ignore[override]
        if data:
            self._emit(bytes(data), self._fd)
        return self


@dataclass
class Output:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    live: Live | None = None  # where output goes as it is written, if it does

    def __post_init__(self) -> None:
        if self.live is not None:
            self.stdout, self.stderr = _Emitted(self.live, 1), _Emitted(self.live, 2)


class Shell:
    """One bash process: its user, variables, working directory and last exit status."""

    def __init__(self, node: NodeModel, user: str, env: dict[str, str] | None = None,
                 cwd: str | None = None, args: list[str] | None = None, name: str = "bash",
                 umask: int | None = None, dialect: str | None = None,
                 live: Live | None = None) -> None:
        self.node = node
        # Where this shell's own output goes as it is written (a container's main shell); output
        # captured by a pipe, a redirection, $(...) or a function is kept as usual.
        self.live = live
        self.user = user
        self.vars = dict(env if env is not None else login_env(node, user))
        self.exported = set(self.vars)
        self.cwd = cwd or self.vars.get("HOME", "/")
        self.args = args or []
        self.name = name  # $0, and what error messages start with
        self.dialect = dialect or ("sh" if name == "sh" else "bash")  # /bin/sh is dash
        self.line = 1  # of the command running, for error messages
        self.status = 0
        self.errexit = False
        self.options: set[str] = set()  # set -o: nounset, pipefail, noglob
        self.traps: dict[str, str] = {}
        self.functions: dict[str, list[AndOr]] = {}
        self.frames: list[dict[str, str | None]] = []  # per function call: the values its `local`s hid
        self.sourcing = 0  # depth of `source`, where `return` is allowed
        self.inputs: dict[int, tuple[bytes, int]] = {}  # how far `read` got in each input
        self.exited = False
        self._conditions = 0  # inside an if/while condition, where set -e does not apply
        self.pending_exit: int | None = None  # set by exec: the shell ends after this pipeline
        self._substitution_status = 0
        self._pending_stderr = bytearray()  # $(...)'s stderr (not captured) and set -x's trace
        self.umask = default_umask(user) if umask is None else umask

    async def run(self, text: str, stdin: bytes = b"") -> CommandResult:
        """Run a command line or script; stdout, stderr and the exit status of its last command
        (what was not already handed to ``live``)."""
        out = Output(live=self.live)
        try:
            lists = parse(text)
        except ShellSyntaxError as exc:
            return CommandResult(stderr=f"{self.name}: -c: line 1: {exc}\n".encode(), exit_status=2)
        try:
            await self._lists(lists, stdin, out)
        except ExitShell as exc:
            self.status, self.exited = exc.status, True
            self._keep(exc, out)
        except LoopControl:
            pass  # break/continue outside a loop: bash ignores them
        if "EXIT" in self.traps:
            await self._run_trap("EXIT", out)
        return CommandResult(bytes(out.stdout), bytes(out.stderr), self.status)

    def set_options(self, args: list[str]) -> None:
        """``set``'s arguments: -e/+e, -u, -f, -o NAME (pipefail, ...), then positional parameters."""
        args = list(args)
        while args and args[0][:1] in ("-", "+") and args[0] not in ("-", "--"):
            option = args.pop(0)
            for letter in option[1:]:
                if letter == "o":
                    name = args.pop(0) if args else ""
                    if name not in SET_NAMES:
                        raise ValueError(f"{name}: invalid option name")
                else:
                    name = SET_LETTERS.get(letter, "")
                    if not name:
                        raise ValueError(f"-{letter}: invalid option\n{SET_USAGE.rstrip()}")
                self._set_option(name, option[0] == "-")
        if args:
            self.args = args[1:] if args[0] in ("-", "--") else args

    def _set_option(self, name: str, on: bool) -> None:
        if name == "errexit":
            self.errexit = on
        elif on:
            self.options.add(name)
        else:
            self.options.discard(name)

    def read_input(self, stdin: bytes, delimiter: str, limit: int | None) -> tuple[str, bool]:
        """The next record of ``stdin`` for ``read``: this shell remembers how far it read each
        input, so ``while read line; do ...; done < file`` walks the file. Whether the delimiter
        ended it (else the input did)."""
        data, pos = self.inputs.get(id(stdin), (stdin, 0))
        if data is not stdin:
            pos = 0
        end = data.find(delimiter.encode(), pos)
        stop = len(data) if end < 0 else end
        if limit is not None and stop - pos > limit:
            stop, end = pos + limit, pos + limit - 1
        self.inputs[id(stdin)] = (stdin, len(data) if end < 0 else end + 1)
        return data[pos:stop].decode(errors="replace"), end >= 0

    async def run_here(self, text: str, stdin: bytes, label: str) -> CommandResult:
        """Commands of ``eval`` or ``source`` in this shell: its variables and directory change;
        ``exit`` there ends this shell, ``return`` ends the sourced file."""
        try:
            lists = parse(text)
        except ShellSyntaxError as exc:
            return CommandResult.fail(f"{self.where()}{label}{exc}\n", 2)
        return await self._body(lists, stdin)

    async def _body(self, lists: list, stdin: bytes) -> CommandResult:
        """Run a sourced file's or a function's command lists: ``return`` ends them with its status;
        ``exit`` (an Unwind) carries the output so far up to the shell that ends."""
        out = Output()
        try:
            await self._lists(lists, stdin, out)
        except Return as done:
            self.status = done.status
        except Unwind as unwind:
            before = unwind.output or CommandResult()
            unwind.output = CommandResult(bytes(out.stdout) + before.stdout, bytes(out.stderr) + before.stderr)
            raise
        return CommandResult(bytes(out.stdout), bytes(out.stderr), self.status)

    def where(self) -> str:
        """How this shell starts an error message: ``bash: line 3: `` (dash: ``sh: 3: ``)."""
        return f"{self.name}: {self.line}: " if self.dialect == "sh" else f"{self.name}: line {self.line}: "

    async def _run_trap(self, signal: str, out: Output) -> None:
        """Run a trap's command; it keeps the status it was called with, unless it exits."""
        action, status = self.traps.pop(signal) if signal == "EXIT" else self.traps[signal], self.status
        try:
            await self._lists(parse(action), b"", out)
            self.status = status
        except ShellSyntaxError as exc:
            out.stderr += f"{self.name}: {exc}\n".encode()
        except ExitShell as exc:
            self.status, self.exited = exc.status, True
            self._keep(exc, out)
        except Unwind:
            self.status = status

    @staticmethod
    def _keep(unwind: Unwind, out: Output) -> None:
        """What an unwinding error printed on its way out (fatal expansion errors)."""
        if unwind.output is not None:
            out.stdout += unwind.output.stdout
            out.stderr += unwind.output.stderr
            unwind.output = None

    async def _lists(self, lists: list[AndOr], stdin: bytes, out: Output) -> None:
        for chain in lists:
            last_ran = await self._and_or(chain, stdin, out)
            if self.status and last_ran and not self._conditions:
                if "ERR" in self.traps:
                    await self._run_trap("ERR", out)
                if self.errexit:
                    raise ExitShell(self.status)

    async def _condition(self, lists: list[AndOr], stdin: bytes, out: Output) -> bool:
        """Run an if/while condition (exempt from ``set -e``); whether it succeeded."""
        self._conditions += 1
        try:
            await self._lists(lists, stdin, out)
        finally:
            self._conditions -= 1
        return self.status == 0

    async def _and_or(self, chain: AndOr, stdin: bytes, out: Output) -> bool:
        """Run an and-or list; whether its last pipeline ran (only its failure trips ``set -e``)."""
        await self._pipeline(chain.first, stdin, out)
        ran_last = not chain.rest
        for i, (op, pipeline) in enumerate(chain.rest):
            if (op == "&&") == (self.status == 0):
                await self._pipeline(pipeline, stdin, out)
                ran_last = i == len(chain.rest) - 1
        return ran_last and not chain.first.negate

    async def _pipeline(self, pipeline: Pipeline, stdin: bytes, out: Output) -> None:
        if len(pipeline.commands) == 1:
            try:
                result = await self._one(pipeline.commands[0], stdin, out.live)
            except Unwind as unwind:
                self._keep(unwind, out)
                raise
            out.stdout += result.stdout
            out.stderr += result.stderr
        else:
            await self._pipe(pipeline.commands, stdin, out)
        if self.pending_exit is not None:
            raise ExitShell(self.pending_exit)
        if pipeline.negate:
            self.status = int(self.status == 0)

    async def _pipe(self, commands: list[Command | Compound], stdin: bytes, out: Output) -> None:
        """``a | b``: each command in a subshell, as bash runs them (``cd``, ``read`` or ``exit``
        there leave this shell as it was); the status is the last one's, or with pipefail the
        last failure's."""
        data, statuses = stdin, []
        for i, cmd in enumerate(commands):
            child = self.fork()
            try:
                result = await child._one(cmd, data)
            except Unwind as unwind:
                done = unwind.output or CommandResult()
                result = CommandResult(done.stdout, done.stderr,
                                       unwind.status if isinstance(unwind, ExitShell | Return) else child.status)
            out.stderr += result.stderr
            if i == len(commands) - 1:
                out.stdout += result.stdout
            data = result.stdout
            statuses.append(result.exit_status)
        failed = [status for status in statuses if status]
        self.status = failed[-1] if failed and "pipefail" in self.options else statuses[-1]

    async def _one(self, cmd: Command | Compound, stdin: bytes, live: Live | None = None
                   ) -> CommandResult:
        """One command of a pipeline; what its ``$(...)`` printed on stderr comes first. A compound
        command whose output is not captured hands it to ``live`` as it runs."""
        result = await (self._compound(cmd, stdin, live) if isinstance(cmd, Compound)
                        else self._command(cmd, stdin))
        errors, self._pending_stderr = bytes(self._pending_stderr), bytearray()
        return CommandResult(result.stdout, errors + result.stderr, result.exit_status)

    # --- compound commands ----------------------------------------------------------------------

    async def _compound(self, cmd: Compound, stdin: bytes, live: Live | None = None
                        ) -> CommandResult:
        try:
            stdin, sinks = await self._redirections(cmd.redirects, stdin)
        except OSError as exc:
            self.status = 1
            return CommandResult(stderr=f"{self.where()}{describe_error(exc)}\n".encode(), exit_status=1)
        out = Output(live=live if sinks == {1: "out", 2: "err"} else None)  # not redirected: it goes on
        try:
            await self._compound_body(cmd, stdin, out)
        except Unwind as unwind:
            self._keep(unwind, out)
            unwind.output = self._route(CommandResult(bytes(out.stdout), bytes(out.stderr), self.status), sinks)
            raise
        return self._route(CommandResult(bytes(out.stdout), bytes(out.stderr), self.status), sinks)

    async def _compound_body(self, cmd: Compound, stdin: bytes, out: Output) -> None:
        if cmd.kind == "subshell":
            child = self.fork()
            try:
                await child._lists(cmd.body, stdin, out)
            except (ExitShell, Return) as exc:  # both end the subshell only
                self._keep(exc, out)
                child.status = exc.status
            self.status = child.status
        elif cmd.kind == "group":
            await self._lists(cmd.body, stdin, out)
        elif cmd.kind == "function":
            self.functions[cmd.name] = cmd.body
            self.status = 0
        elif cmd.kind == "if":
            await self._if(cmd, stdin, out)
        elif cmd.kind == "case":
            await self._case(cmd, stdin, out)
        else:
            await self._loop(cmd, stdin, out)

    async def _if(self, cmd: Compound, stdin: bytes, out: Output) -> None:
        for condition, body in cmd.branches:
            if await self._condition(condition, stdin, out):
                await self._lists(body, stdin, out)
                return
        if cmd.otherwise is not None:
            await self._lists(cmd.otherwise, stdin, out)
        else:
            self.status = 0

    async def _case(self, cmd: Compound, stdin: bytes, out: Output) -> None:
        assert cmd.items is not None
        subject = "".join(await self.expand(cmd.items[0], split=False))
        for patterns, (_, body) in zip(cmd.patterns, cmd.branches, strict=True):
            for pattern in patterns:
                if fnmatch.fnmatchcase(subject, await self._pattern(pattern)):
                    await self._lists(body, stdin, out)
                    return
        self.status = 0

    async def _pattern(self, word: Word) -> str:
        """A case pattern: expanded, its quoted parts matching literally."""
        parts = [(await self._part(part, tilde=i == 0), part.quoted) for i, part in enumerate(word.parts)]
        return "".join(glob.escape(text) if quoted else text for text, quoted in parts)

    async def _loop(self, cmd: Compound, stdin: bytes, out: Output) -> None:
        if cmd.kind == "for":
            items = list(self.args) if cmd.items is None else [f for w in cmd.items for f in await self.expand(w)]
        status = 0
        for turn in range(LOOP_LIMIT):
            if cmd.kind == "for":
                if turn >= len(items):
                    break
                self.vars[cmd.name] = items[turn]
            else:
                condition, _ = cmd.branches[0]
                if await self._condition(condition, stdin, out) != (cmd.kind == "while"):
                    break
            try:
                await self._lists(cmd.body if cmd.kind == "for" else cmd.branches[0][1], stdin, out)
            except LoopControl as control:
                if control.levels > 1:
                    control.levels -= 1
                    raise
                if control.kind == "break":
                    break
            status = self.status
        else:
            out.stderr += f"{self.name}: labsim stops loops after {LOOP_LIMIT} turns\n".encode()
            status = 1
        self.status = status

    # --- simple commands ------------------------------------------------------------------------

    async def _command(self, cmd: Command, stdin: bytes) -> CommandResult:
        assignments: dict[str, str] = {}
        words = list(cmd.words)
        argv: list[str] = []
        self.line = cmd.line
        self._substitution_status = 0  # a bare assignment's status is its last $(...)'s
        while words and (pair := words[0].assignment()):
            name, value = pair[0].rstrip("+"), " ".join(await self.expand(pair[1], split=False))
            assignments[name] = self.vars.get(name, "") + value if pair[0].endswith("+") else value
            words.pop(0)
        for word in words:
            argv += await self.expand(word)
        if "xtrace" in self.options:
            self._pending_stderr += _trace(assignments, argv)
        try:
            stdin, sinks = await self._redirections(cmd.redirects, stdin)
        except OSError as exc:
            self.status = 1
            return CommandResult(stderr=f"{self.where()}{describe_error(exc)}\n".encode(), exit_status=1)
        if not argv:
            self.vars.update(assignments)
            result = CommandResult(exit_status=self._substitution_status)
        else:
            result = await self.execute(argv, assignments, stdin)
        routed = self._route(result, sinks)
        self.status = routed.exit_status
        return routed

    async def execute(self, argv: list[str], assignments: dict[str, str], stdin: bytes) -> CommandResult:
        """Run one expanded command: a builtin of this shell, or a program of the registry."""
        if argv[0] in self.functions:
            return await self._call(argv, stdin)
        builtin = registry.BUILTINS.get(argv[0])
        if builtin is not None:
            return await builtin(self, argv, assignments, stdin)
        if argv[0] in UNMODELLED:
            return CommandResult.fail(f"{self.where()}{argv[0]}: not modelled by labsim's node shell\n", 2)
        handler = self.find(argv[0])
        tools = getattr(self.node, "tools", None)  # a real program's container: its client tools are real
        if handler is None and tools is not None and tools.has(argv[0]):
            env = {name: value for name, value in self.vars.items() if name in self.exported}
            return await tools.run(argv, {**env, **assignments}, stdin)
        if handler is None:
            if "/" in argv[0] and not self.node.exists(normpath(argv[0], self.cwd)):
                return CommandResult.fail(f"{self.where()}{argv[0]}: No such file or directory\n", 127)
            if self.dialect == "sh":  # /bin/sh is dash on Ubuntu, which words it so
                return CommandResult.fail(f"{self.where()}{argv[0]}: not found\n", 127)
            return CommandResult.fail(f"{self.where()}{argv[0]}: command not found\n", 127)
        return await self.program(handler, argv, assignments, stdin)

    async def program(self, handler: registry.Handler, argv: list[str], assignments: dict[str, str],
                      stdin: bytes) -> CommandResult:
        """Run a program of the registry with this shell's exported variables and directory."""
        env = {name: value for name, value in self.vars.items() if name in self.exported}
        env.update(assignments)
        ctx = CommandContext(node=self.node, argv=argv, env=env, stdin=stdin, user=self.user,
                             run=self._nested, cwd=self.cwd, umask=self.umask)
        return await handler(ctx)

    async def _call(self, argv: list[str], stdin: bytes) -> CommandResult:
        """A function: its body with the arguments as $1..., its ``local`` variables restored after."""
        saved, self.args = self.args, argv[1:]
        self.frames.append({})
        try:
            return await self._body(self.functions[argv[0]], stdin)
        finally:
            self.args = saved
            for name, value in self.frames.pop().items():
                if value is None:
                    self.vars.pop(name, None)
                else:
                    self.vars[name] = value

    def find(self, program: str) -> registry.Handler | None:
        """The registry's handler, if the program exists on this node."""
        handler = registry.lookup(program)
        return handler if handler is not None and locate(self.node, program) else None

    def fork(self) -> Shell:
        """A subshell: a copy of this shell's variables, options and directory."""
        child = Shell(self.node, self.user, env=dict(self.vars), cwd=self.cwd, args=self.args,
                      name=self.name, umask=self.umask, dialect=self.dialect)
        child.exported, child.errexit, child.options = set(self.exported), self.errexit, set(self.options)
        child.line, child.status, child.functions = self.line, self.status, dict(self.functions)
        child.frames = [{} for _ in self.frames]  # inside a function: `local` and `return` still work
        return child

    async def _nested(self, line: str, stdin: bytes = b"", user: str | None = None,
                      env: dict[str, str] | None = None) -> CommandResult:
        user = user or self.user
        if env is None:
            env = {n: v for n, v in self.vars.items() if n in self.exported}
        umask = self.umask if user == self.user else self.umask | 0o022
        child = Shell(self.node, user, env=env, cwd=self.cwd, name=self.name, umask=umask, dialect=self.dialect)
        return await child.run(line, stdin)

    # --- expansion ---------------------------------------------------------------------------------

    async def expand(self, word: Word, split: bool = True) -> list[str]:
        """A word into fields: parameters and command substitutions expanded, unquoted results
        split on blanks, tildes and globs resolved against the node's files. A bad substitution
        or arithmetic ends the shell, as it ends a non-interactive bash."""
        try:
            return await self._expand(word, split)
        except ValueError as exc:
            raise fatal(f"{self.where()}{exc}\n", 1) from None

    async def _expand(self, word: Word, split: bool) -> list[str]:
        fields: list[list[tuple[str, bool]]] = []
        current: list[tuple[str, bool]] | None = None
        if not self.args and _only_all_args(word):
            return []  # "$@" without arguments is no word at all
        for i, part in enumerate(word.parts):
            if part.kind == "var" and part.text == "@" and part.quoted and split:
                for j, arg in enumerate(self.args):  # "$@": one word per argument
                    if j > 0 and current is not None:
                        fields.append(current)
                        current = None
                    current = (current or []) + [(arg, True)]
                continue
            text = await self._part(part, tilde=i == 0)
            if part.kind == "lit" or part.quoted or not split:
                current = (current if current is not None else [])
                current.append((text, part.quoted or part.kind != "lit"))
                continue
            pieces = text.split()
            if not pieces:
                continue
            if text[0].isspace() and current is not None:
                fields.append(current)
                current = None
            for j, piece in enumerate(pieces):
                if j > 0 and current is not None:
                    fields.append(current)
                    current = None
                current = (current if current is not None else []) + [(piece, True)]
            if text[-1].isspace():
                fields.append(current)
                current = None
        if current is not None:
            fields.append(current)
        return [name for f in fields for name in self._glob(f)]

    async def _part(self, part: Part, tilde: bool) -> str:
        if part.kind == "lit":
            if tilde and not part.quoted and (part.text == "~" or part.text.startswith("~/")):
                return self.vars.get("HOME", "/") + part.text[1:]
            return part.text
        if part.kind == "sub":
            result = await self.fork().run(part.text)
            self._substitution_status = result.exit_status
            self._pending_stderr += result.stderr
            return result.stdout.decode(errors="replace").rstrip("\n")
        if part.kind == "arith":
            return str(arithmetic(part.text, self._parameter))
        match = PARAMETER.fullmatch(part.text)
        if match and match.group(2) in DEFAULTING and set(match.group(3)) & set("$`'\""):
            name, op, text = match.groups()
            present = bool(self._value(name, strict=False)) if op[0] == ":" else self._is_set(name)
            if present == op.endswith("+"):  # the word is used, so expanded (only then, as in bash)
                return self._parameter(f"{name}{op}", await self._word_of(text))
        return self._parameter(part.text)

    async def _word_of(self, text: str) -> str:
        """The word of ``${name:-word}`` and its kin, expanded: ``$VAR``, ``$(...)``, quotes."""
        if len(text) > 1 and text[0] == text[-1] == "'":
            return text[1:-1]
        if len(text) > 1 and text[0] == text[-1] == '"':
            text = text[1:-1]
        return "".join(await self.expand(heredoc_word(text), split=False))

    def _parameter(self, spec: str, word: str | None = None) -> str:
        """``$name`` and the ``${...}`` forms scripts use: ``#name``, ``name:-word``, ``name-word``,
        ``name:=word``, ``name:+word``, ``name:?word``, ``name#pat``, ``name##pat``, ``name%pat``,
        ``name%%pat``, ``name/pat/rep``, ``name//pat/rep``, ``name:offset:length``, ``name^^``,
        ``name,,``."""
        if spec.startswith("#") and len(spec) > 1:
            return str(len(self._value(spec[1:])))
        match = PARAMETER.fullmatch(spec)
        if match is None or (match.group(3) and not match.group(2)):
            raise ValueError(f"${{{spec}}}: bad substitution")
        name, op, text = match.groups()
        word = text if word is None else word  # (given expanded by _part)
        is_set = self._is_set(name)
        value = self._value(name, strict=op not in DEFAULTING)  # set -u spares ${name-word}
        if op in (":-", "-"):
            return value if (value if op == ":-" else is_set) else word
        if op in (":=", "="):
            if not (value if op == ":=" else is_set):
                self.vars[name] = value = word
            return value
        if op in (":+", "+"):
            return word if (value if op == ":+" else is_set) else ""
        if op in (":?", "?"):
            if not (value if op == ":?" else is_set):
                raise fatal(f"{self.where()}{name}: {word or 'parameter null or not set'}\n", 127)
            return value
        if op in ("/", "//"):
            return _replace_pattern(value, word, every=op == "//")
        if op == ":":
            offset, _, length = word.partition(":")
            start = arithmetic(offset, self._parameter)
            start = max(len(value) + start, 0) if start < 0 else start
            end = len(value) if not length else arithmetic(length, self._parameter)
            return value[start:end if end < 0 else start + end]
        if op and op[0] in "^,":
            convert = str.upper if op[0] == "^" else str.lower
            return convert(value) if len(op) == 2 else convert(value[:1]) + value[1:]
        if op:
            return _strip_pattern(value, op, word)
        return value

    def _is_set(self, name: str) -> bool:
        return name in self.vars or name in "?$#@*0" or (name.isdigit() and int(name) <= len(self.args))

    def _value(self, name: str, strict: bool = True) -> str:
        special = {"?": str(self.status), "$": "4242", "#": str(len(self.args)), "0": self.name,
                   "@": " ".join(self.args), "*": " ".join(self.args)}
        if name in special:
            return special[name]
        if name.isdigit() and 0 < int(name) <= len(self.args):
            return self.args[int(name) - 1]
        if name in self.vars:
            return self.vars[name]
        if strict and "nounset" in self.options:
            raise fatal(f"{self.where()}{'$' if name.isdigit() else ''}{name}: unbound variable\n", 127)
        return ""

    def _glob(self, parts: list[tuple[str, bool]]) -> list[str]:
        text = "".join(t for t, _ in parts)
        if "noglob" in self.options or not any(GLOB_CHARS & set(t) for t, quoted in parts if not quoted):
            return [text]
        pattern = "".join(glob.escape(t) if quoted else t for t, quoted in parts)
        absolute = normpath(pattern, self.cwd)  # never above the node's /
        root = str(self.node.root)
        matches = sorted(m[len(root):] for m in glob.glob(glob.escape(root) + absolute))
        if not matches:
            return [text]
        if pattern.startswith("/"):
            return matches
        return [posixpath.relpath(m, self.cwd) for m in matches]

    # --- redirections ------------------------------------------------------------------------------

    async def _redirections(self, redirects: list[Redirect], stdin: bytes) -> tuple[bytes, dict[int, Any]]:
        """Apply redirections in order: the command's stdin, and where fds 1 and 2 go
        ("out", "err", or a path opened for writing)."""
        sinks: dict[int, Any] = {1: "out", 2: "err"}
        for r in redirects:
            if isinstance(r.target, int):
                if r.op == ">&":
                    sinks[r.fd] = sinks.get(r.target, "out" if r.target == 1 else "err")
                continue
            if isinstance(r.target, HereDoc):
                body = r.target.body
                if r.target.expand:
                    body = "".join(await self.expand(heredoc_word(body), split=False))
                stdin = body.encode()
                continue
            target = " ".join(await self.expand(r.target, split=False))
            path = normpath(target, self.cwd)
            if r.op == "<":
                stdin = self.node.read(path, self.user)
            elif r.op == "<<<":
                stdin = (target + "\n").encode()
            else:
                append = r.op in (">>", "&>>")
                # create (with the umask) or truncate now, or refuse before the command runs
                self.node.write(path, b"", user=self.user, append=append, umask=self.umask)
                for fd in ((1, 2) if r.op.startswith("&") else (r.fd,)):
                    sinks[fd] = path
        return stdin, sinks

    def _route(self, result: CommandResult, sinks: dict[int, Any]) -> CommandResult:
        out, err = bytearray(), bytearray()
        files: dict[str, bytearray] = {}
        for fd, data in ((1, result.stdout), (2, result.stderr)):
            sink = sinks.get(fd, "out")
            if sink == "out":
                out += data
            elif sink == "err":
                err += data
            else:
                files.setdefault(sink, bytearray()).extend(data)
        status = result.exit_status
        for path, data in files.items():
            try:
                self.node.write(path, bytes(data), user=self.user, append=True)
            except OSError as exc:  # the command's write failed (a full disk): it says so and fails
                err += f"{self.where()}{describe_error(exc)}\n".encode()
                status = 1
        return CommandResult(bytes(out), bytes(err), status)


def _trace(assignments: dict[str, str], argv: list[str]) -> bytes:
    """``set -x``: the command as it runs, on stderr (assignments on lines of their own)."""
    lines = [f"+ {name}={shlex.quote(value)}\n" for name, value in assignments.items()]
    lines += [f"+ {shlex.join(argv)}\n"] if argv else []
    return "".join(lines).encode()


def _replace_pattern(value: str, spec: str, every: bool) -> str:
    """``${v/pat/rep}`` (``//``: every match; a pattern starting ``#``/``%`` is anchored at the
    start/end); the longest match wins, as in bash."""
    pattern, _, replacement = spec.partition("/")
    anchor = pattern[:1] if pattern[:1] in ("#", "%") and not every else ""
    regex = fnmatch.translate(pattern[len(anchor):]).removesuffix(r"\Z")
    regex = {"#": f"^{regex}", "%": f"{regex}$"}.get(anchor, regex)
    return re.sub(regex, lambda _: replacement, value, count=0 if every else 1) if pattern else value


def _strip_pattern(value: str, op: str, pattern: str) -> str:
    """``#``/``##`` remove the shortest/longest matching prefix, ``%``/``%%`` the suffix."""
    regex = re.compile(fnmatch.translate(pattern))  # anchored at both ends
    cuts = range(len(value) + 1)
    if op in ("#", "##"):
        for n in (reversed(cuts) if op == "##" else cuts):
            if regex.match(value[:n]):
                return value[n:]
    else:
        for n in (cuts if op == "%%" else reversed(cuts)):
            if regex.match(value[n:]):
                return value[:n]
    return value


def _only_all_args(word: Word) -> bool:
    return any(p.kind == "var" and p.text == "@" for p in word.parts) and all(
        (p.kind == "var" and p.text == "@") or (p.kind == "lit" and not p.text) for p in word.parts)


def describe_error(exc: OSError) -> str:
    reason = {FileNotFoundError: "No such file or directory", PermissionError: "Permission denied",
              IsADirectoryError: "Is a directory", NotADirectoryError: "Not a directory"}
    return f"{exc.filename}: {reason.get(type(exc), exc.strerror or str(exc))}"


ARITH_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Mod: operator.mod,
             ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow, ast.Lt: operator.lt, ast.LtE: operator.le,
             ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne,
             ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}


def arithmetic(expression: str, lookup: Callable[[str], str]) -> int:
    """``$((...))``: integer arithmetic over shell variables (unset or empty: 0)."""
    text = re.sub(r"\$\{?(\w+)\}?", lambda m: lookup(m.group(1)) or "0", expression)
    text = re.sub(r"[A-Za-z_]\w*", lambda m: lookup(m.group()) or "0", text)
    text = text.replace("&&", " and ").replace("||", " or ").replace("/", "//")
    text = re.sub(r"!(?!=)", " not ", text)
    try:
        return int(_evaluate(ast.parse(text.strip() or "0", mode="eval").body))
    except (SyntaxError, ValueError, ZeroDivisionError, KeyError, TypeError):
        raise ValueError(f"{expression}: syntax error in expression") from None


def _evaluate(node: ast.AST) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.BinOp):
        return ARITH_OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp):
        return int(ARITH_OPS[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        return int(ARITH_OPS[type(node.ops[0])](_evaluate(node.left), _evaluate(node.comparators[0])))
    if isinstance(node, ast.BoolOp):
        values = [_evaluate(v) for v in node.values]
        return int(all(values) if isinstance(node.op, ast.And) else any(values))
    raise ValueError(ast.dump(node))


def reads_stdin(line: str) -> bool:
    """Whether running ``line`` would read the session's stdin: an SSH server waits for the
    client's EOF only then, so a command that doesn't read returns at once, as under sshd."""
    try:
        lists = parse(line)
    except ShellSyntaxError:
        return False
    return _lists_read_stdin(lists)


def _lists_read_stdin(lists: list[AndOr]) -> bool:
    for chain in lists:
        for pipeline in [chain.first] + [p for _, p in chain.rest]:
            first = pipeline.commands[0]
            if any(r.fd == 0 for r in first.redirects):
                continue
            if isinstance(first, Compound) and first.kind == "function":
                continue  # defining a function reads nothing (a call's reading is not foreseen)
            if isinstance(first, Compound):
                parts = [first.body, first.otherwise or []] + [lst for pair in first.branches for lst in pair]
                if any(_lists_read_stdin(part) for part in parts):
                    return True
            elif _argv_reads_stdin([w.literal() for w in first.words if w.assignment() is None]):
                return True
    return False


def _argv_reads_stdin(argv: list[str]) -> bool:
    while argv and argv[0] in ("sudo", "env", "exec", "nohup", "time", "timeout"):
        wrapper, argv = argv[0], argv[1:]
        while argv and (argv[0].startswith("-") or "=" in argv[0]):
            argv = argv[2:] if wrapper == "sudo" and argv[0] in ("-u", "-g", "-C", "-D", "-p") else argv[1:]
        if wrapper == "timeout":
            argv = argv[1:]  # the duration
    if not argv:
        return False
    program, args = argv[0].rsplit("/", 1)[-1], argv[1:]
    if program in registry.BUILTINS:
        return program == "read"
    if "-" in args or program == "tr":  # `kubectl apply -f -`, `tar xf -`: "-" names stdin
        return True
    if program in ("sh", "bash"):
        if "-c" in args:
            index = args.index("-c")
            return index + 1 < len(args) and reads_stdin(args[index + 1])
        return "-s" in args or not [a for a in args if not a.startswith("-")]
    if program in STDIN_READERS:
        operands = [a for a in args if not a.startswith("-") or a == "-"]
        if program == "grep":
            operands = operands[1:]
        if program == "tee":
            return True
        return not operands or "-" in operands
    return program in registry.READS_STDIN


# Builtins are registered by labsim.node.builtins (registry.BUILTINS); the shell dispatches to them.
# Builtins labsim does not model: they fail with a message that says so, never as a missing program.
UNMODELLED = {"[[", "let", "alias", "unalias", "getopts", "ulimit", "function", "select", "mapfile",
              "readarray", "pushd", "popd", "dirs", "jobs", "fg", "bg", "disown", "coproc", "caller",
              "enable", "complete", "compgen", "history", "fc", "bind", "suspend", "times", "logout"}
# set's single-letter options and the -o names it accepts (only the first three change behaviour
# besides errexit; the rest are accepted and have no effect here).
SET_LETTERS = {"e": "errexit", "u": "nounset", "f": "noglob", "x": "xtrace", "v": "verbose",
               "h": "hashall", "B": "braceexpand", "C": "noclobber", "a": "allexport", "b": "notify",
               "H": "histexpand", "m": "monitor", "P": "physical", "T": "functrace", "E": "errtrace"}
SET_NAMES = set(SET_LETTERS.values()) | {"pipefail", "posix", "ignoreeof", "nolog", "vi", "emacs"}
SET_USAGE = "set: usage: set [-abefhkmnptuvxBCEHPT] [-o option-name] [--] [-] [arg ...]\n"


def locate(node: NodeModel, name: str) -> str | None:
    """Where a program lives on the node (``which``): its install path, else /usr/bin."""
    in_image = getattr(node, "program_path", None)  # a container: only its image's programs
    if in_image is not None:
        return in_image(name)
    handler = registry.lookup(name)
    if handler is None:
        path = normpath(name) if "/" in name else None
        return path if path and node.is_file(path) and node.mode(path) & 0o111 else None
    key = name if name in registry.INSTALLED_AT else name.rsplit("/", 1)[-1]
    installed = registry.INSTALLED_AT.get(key)
    if installed is not None:
        return installed if node.is_file(installed) else None
    return name if name.startswith("/") else f"/usr/bin/{name}"
