"""Shell syntax: a command line (or script) into lists, and-or chains, pipelines and simple
commands with their words and redirections, as POSIX sh reads them.

Words keep their parts apart (literal text, ``$VAR``, ``$(...)``) with whether each was quoted,
so that expansion, field splitting and globbing happen when the command runs, as in a shell.
Compound commands (``if``, ``for``, functions) are not modelled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9?$#@!*-]")
OPERATORS = ("&&", "||", ";", "|", "&", "(", ")")
REDIRECT = re.compile(r"(\d*)(&>>|&>|>>|>&|>\||<<<|<<-|<<|<&|>|<)")
SEPARATORS = (("op", ";"), ("op", "&"), ("op", "\n"))


class ShellSyntaxError(Exception):
    def __init__(self, token: str) -> None:
        super().__init__(f"syntax error near unexpected token `{token}'")
        self.token = token


@dataclass(frozen=True)
class Part:
    kind: str  # "lit" | "var" | "sub" (command substitution)
    text: str
    quoted: bool


@dataclass
class Word:
    parts: list[Part] = field(default_factory=list)

    def assignment(self) -> tuple[str, Word] | None:
        """``NAME=value`` as a prefix assignment: the name and the value's word."""
        if not self.parts or self.parts[0].kind != "lit" or self.parts[0].quoted:
            return None
        match = ASSIGNMENT.match(self.parts[0].text)
        if not match:
            return None
        rest = self.parts[0].text[match.end():]
        value = ([Part("lit", rest, False)] if rest else []) + self.parts[1:]
        return match.group()[:-1], Word(value)

    def literal(self) -> str:
        """The word's text with quotes removed and nothing expanded (heredoc delimiters)."""
        return "".join(p.text if p.kind == "lit" else f"${p.text}" for p in self.parts)


@dataclass
class HereDoc:
    delimiter: str
    expand: bool
    strip_tabs: bool
    body: str = ""


@dataclass
class Redirect:
    fd: int
    op: str  # ">", ">>", "<", "<<<", "<<", ">&", "<&", "&>"
    target: Word | HereDoc | int


@dataclass
class Command:
    words: list[Word] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)


@dataclass
class Pipeline:
    commands: list[Command]
    negate: bool = False


@dataclass
class AndOr:
    first: Pipeline
    rest: list[tuple[str, Pipeline]] = field(default_factory=list)  # ("&&" | "||", pipeline)


class Lexer:
    """Splits text into words, operators and redirections; reads heredoc bodies at newlines."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.tokens: list[tuple[str, object]] = []
        self.pending: list[HereDoc] = []

    def run(self) -> list[tuple[str, object]]:
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\n":
                self.pos += 1
                self._read_heredocs()
                self.tokens.append(("op", "\n"))
            elif c in " \t":
                self.pos += 1
            elif c == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            elif self._redirect():
                continue
            elif (op := self._operator()) is not None:
                self.tokens.append(("op", op))
            else:
                self.tokens.append(("word", self._word()))
        if self.pending:
            self._read_heredocs()
        return self.tokens

    def _operator(self) -> str | None:
        for op in OPERATORS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        return None

    def _redirect(self) -> bool:
        match = REDIRECT.match(self.text, self.pos)
        if not match:
            return False
        digits, op = match.groups()
        self.pos = match.end()
        fd = int(digits) if digits else (0 if op.startswith("<") else 1)
        if op in (">&", "<&"):
            dup = re.compile(r"\s*(\d+|-)").match(self.text, self.pos)
            if dup and dup.group(1) != "-":
                self.pos = dup.end()
                self.tokens.append(("redir", Redirect(fd, op, int(dup.group(1)))))
                return True
            op = "&>" if op == ">&" else "<"  # `>& file` is `&> file`
        if op in ("<<", "<<-"):
            self._skip_blanks()
            word = self._word()
            doc = HereDoc(word.literal(), all(not p.quoted for p in word.parts), op == "<<-")
            self.pending.append(doc)
            self.tokens.append(("redir", Redirect(0, "<<", doc)))
            return True
        self._skip_blanks()
        if self.pos >= len(self.text) or self.text[self.pos] in "\n;&|<>()":
            raise ShellSyntaxError(self.text[self.pos] if self.pos < len(self.text) else "newline")
        self.tokens.append(("redir", Redirect(fd, ">" if op == ">|" else op, self._word())))
        return True

    def _skip_blanks(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def _read_heredocs(self) -> None:
        for doc in self.pending:
            lines = []
            while self.pos < len(self.text):
                end = self.text.find("\n", self.pos)
                line = self.text[self.pos:] if end < 0 else self.text[self.pos:end]
                self.pos = len(self.text) if end < 0 else end + 1
                if doc.strip_tabs:
                    line = line.lstrip("\t")
                if line == doc.delimiter:
                    break
                lines.append(line + "\n")
            doc.body = "".join(lines)
        self.pending = []

    def _word(self) -> Word:
        parts: list[Part] = []
        lit: list[str] = []

        def flush(quoted: bool) -> None:
            if lit:
                parts.append(Part("lit", "".join(lit), quoted))
                lit.clear()

        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c in " \t\n;&|<>()":
                break
            if c == "\\":
                flush(False)
                if self.pos + 1 < len(text) and text[self.pos + 1] != "\n":
                    parts.append(Part("lit", text[self.pos + 1], True))
                self.pos += 2
            elif c == "'":
                end = text.find("'", self.pos + 1)
                if end < 0:
                    raise ShellSyntaxError("'")
                flush(False)
                parts.append(Part("lit", text[self.pos + 1:end], True))
                self.pos = end + 1
            elif c == '"':
                flush(False)
                self.pos += 1
                parts.extend(self._double_quoted())
            elif c in "$`":
                flush(False)
                parts.append(self._expansion(quoted=False))
            else:
                lit.append(c)
                self.pos += 1
        flush(False)
        return Word(parts)

    def _double_quoted(self, closed: bool = True) -> list[Part]:
        """The inside of "...": only $, ` and \\ are special (``closed=False``: up to the end of
        the text, as in a heredoc's body)."""
        parts: list[Part] = [Part("lit", "", True)]  # "" is an (empty) word
        lit: list[str] = []
        text = self.text
        while True:
            if self.pos >= len(text):
                if closed:
                    raise ShellSyntaxError('"')
                break
            c = text[self.pos]
            if c == '"' and closed:
                self.pos += 1
                break
            if c == "\\" and self.pos + 1 < len(text) and text[self.pos + 1] in '$`"\\\n':
                if text[self.pos + 1] != "\n":
                    lit.append(text[self.pos + 1])
                self.pos += 2
            elif c in "$`" and self._starts_expansion():
                if lit:
                    parts.append(Part("lit", "".join(lit), True))
                    lit = []
                parts.append(self._expansion(quoted=True))
            else:
                lit.append(c)
                self.pos += 1
        if lit:
            parts.append(Part("lit", "".join(lit), True))
        return parts

    def _starts_expansion(self) -> bool:
        nxt = self.text[self.pos + 1:self.pos + 2]
        return self.text[self.pos] == "`" or nxt in ("(", "{") or bool(nxt and NAME.match(nxt))

    def _expansion(self, quoted: bool) -> Part:
        text, start = self.text, self.pos
        if text[start] == "`":
            end = text.find("`", start + 1)
            if end < 0:
                raise ShellSyntaxError("`")
            self.pos = end + 1
            return Part("sub", text[start + 1:end], quoted)
        if text.startswith("$(", start):
            end = self._matching_paren(start + 2)
            self.pos = end + 1
            return Part("sub", text[start + 2:end], quoted)
        if text.startswith("${", start):
            end = text.find("}", start + 2)
            if end < 0:
                raise ShellSyntaxError("${")
            self.pos = end + 1
            return Part("var", text[start + 2:end], quoted)
        match = NAME.match(text, start + 1)
        if not match:
            self.pos += 1
            return Part("lit", "$", quoted)
        self.pos = match.end()
        return Part("var", match.group(), quoted)

    def _matching_paren(self, pos: int) -> int:
        depth, quote = 1, ""
        while pos < len(self.text):
            c = self.text[pos]
            if quote:
                if c == quote:
                    quote = ""
                elif c == "\\" and quote == '"':
                    pos += 1
            elif c in "'\"":
                quote = c
            elif c == "\\":
                pos += 1
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    return pos
            pos += 1
        raise ShellSyntaxError("$(")


def heredoc_word(body: str) -> Word:
    """An unquoted heredoc's body as one word, for its expansions."""
    return Word(Lexer(body)._double_quoted(closed=False))


def parse(text: str) -> list[AndOr]:
    """The and-or lists of a command line or script, in order."""
    tokens = Lexer(text).run()
    lists: list[AndOr] = []
    i = 0

    def pipeline() -> Pipeline:
        nonlocal i
        negate = False
        if i < len(tokens) and tokens[i][0] == "word" and _is_bang(tokens[i][1]):
            negate, i = True, i + 1
        commands = [simple()]
        while i < len(tokens) and tokens[i] == ("op", "|"):
            i += 1
            commands.append(simple())
        return Pipeline(commands, negate)

    def simple() -> Command:
        nonlocal i
        cmd = Command()
        while i < len(tokens) and tokens[i][0] != "op":
            kind, value = tokens[i]
            (cmd.words if kind == "word" else cmd.redirects).append(value)  # type: ignore[arg-type]
            i += 1
        if not cmd.words and not cmd.redirects:
            raise ShellSyntaxError(str(tokens[i][1]) if i < len(tokens) else "newline")
        return cmd

    while i < len(tokens):
        if tokens[i] in SEPARATORS:
            i += 1
            continue
        chain = AndOr(pipeline())
        while i < len(tokens) and tokens[i][0] == "op" and tokens[i][1] in ("&&", "||"):
            op = str(tokens[i][1])
            i += 1
            while i < len(tokens) and tokens[i] == ("op", "\n"):
                i += 1
            chain.rest.append((op, pipeline()))
        if i < len(tokens) and tokens[i] not in SEPARATORS:
            raise ShellSyntaxError(str(tokens[i][1]))
        lists.append(chain)
    return lists


def _is_bang(word: object) -> bool:
    return isinstance(word, Word) and len(word.parts) == 1 and word.parts[0] == Part("lit", "!", False)
