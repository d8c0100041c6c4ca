"""Shell syntax: a command line (or script) into lists, and-or chains, pipelines and simple
commands with their words and redirections, as POSIX sh reads them.

Words keep their parts apart (literal text, ``$VAR``, ``$(...)``) with whether each was quoted,
so that expansion, field splitting and globbing happen when the command runs, as in a shell.
Compound commands: ``if``, ``case``, ``for``, ``while``/``until``, ``{ ...; }``, ``( ... )`` and
function definitions (``name() { ...; }``, ``function name { ...; }``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9?$#@!*-]")
FUNCTION_NAME = re.compile(r"[A-Za-z_][\w.-]*")  # bash also takes - and . in function names
OPERATORS = ("&&", "||", ";;", ";", "|", "&", "(", ")")
REDIRECT = re.compile(r"(\d*)(&>>|&>|>>|>&|>\||<<<|<<-|<<|<&|>|<)")
EOF = "end of file"
SEPARATORS = (("op", ";"), ("op", "&"), ("op", "\n"))


class ShellSyntaxError(Exception):
    def __init__(self, token: str) -> None:
        super().__init__("syntax error: unexpected end of file" if token == EOF
                         else f"syntax error near unexpected token `{token}'")
        self.token = token


@dataclass(frozen=True)
class Part:
    kind: str  # "lit" | "var" | "sub" (command substitution) | "arith" ($((...)))
    text: str
    quoted: bool


@dataclass
class Word:
    parts: list[Part] = field(default_factory=list)

    def assignment(self) -> tuple[str, Word] | None:
        """``NAME=value`` as a prefix assignment: the name and the value's word (``NAME+=value``
        appends: the name comes back as ``NAME+``)."""
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
    line: int = 1  # where it starts in the script, for error messages ("bash: line 3: ...")


@dataclass
class Compound:
    """``if``/``case``/``for``/``while``/``until``, a ``{ group; }``, a ``( subshell )`` or a
    ``function`` definition (its name, and its body as the one command of ``body``)."""

    kind: str
    branches: list[tuple[list[AndOr], list[AndOr]]] = field(default_factory=list)  # (condition, body)
    otherwise: list[AndOr] | None = None  # if's else
    name: str = ""  # for's variable, a function's name
    items: list[Word] | None = None  # for's words (None: "$@"); case's word
    patterns: list[list[Word]] = field(default_factory=list)  # case: each branch's patterns
    body: list[AndOr] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)


@dataclass
class Pipeline:
    commands: list[Command | Compound]
    negate: bool = False


@dataclass
class AndOr:
    first: Pipeline
    rest: list[tuple[str, Pipeline]] = field(default_factory=list)  # ("&&" | "||", pipeline)


class Lexer:
    """Splits text into words, operators and redirections; reads heredoc bodies at newlines.
    ``lines`` holds the line each token starts on."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.tokens: list[tuple[str, object]] = []
        self.lines: list[int] = []
        self.pending: list[HereDoc] = []
        self._counted, self._line = 0, 1

    def run(self) -> list[tuple[str, object]]:
        while self.pos < len(self.text):
            c = self.text[self.pos]
            line = self._line_at(self.pos)
            count = len(self.tokens)
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
                pass  # appended its token
            elif (op := self._operator()) is not None:
                self.tokens.append(("op", op))
            else:
                self.tokens.append(("word", self._word()))
            self.lines += [line] * (len(self.tokens) - count)
        if self.pending:
            self._read_heredocs()
        return self.tokens

    def _line_at(self, pos: int) -> int:
        self._line += self.text.count("\n", self._counted, pos)
        self._counted = pos
        return self._line

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
            if dup and dup.group(1) == "-":  # closing a descriptor: its output goes nowhere
                self.pos = dup.end()
                self.tokens.append(("redir", Redirect(fd, ">", Word([Part("lit", "/dev/null", True)]))))
                return True
            if dup:
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
        if text.startswith("$((", start):
            end = self._matching_paren(start + 2)
            if text[end - 1] == ")":
                self.pos = end + 1
                return Part("arith", text[start + 3:end - 1], quoted)
        if text.startswith("$(", start):
            end = self._matching_paren(start + 2)
            self.pos = end + 1
            return Part("sub", text[start + 2:end], quoted)
        if text.startswith("${", start):
            end = self._matching_brace(start + 2)
            self.pos = end + 1
            return Part("var", text[start + 2:end], quoted)
        match = NAME.match(text, start + 1)
        if not match:
            self.pos += 1
            return Part("lit", "$", quoted)
        self.pos = match.end()
        return Part("var", match.group(), quoted)

    def _matching_brace(self, pos: int) -> int:
        """The ``}`` closing a ``${``, past nested ``${...}`` (``${A:-${B}}``)."""
        depth = 1
        while pos < len(self.text):
            if self.text.startswith("${", pos):
                depth, pos = depth + 1, pos + 2
                continue
            if self.text[pos] == "}":
                depth -= 1
                if depth == 0:
                    return pos
            pos += 1
        raise ShellSyntaxError("${")

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
    lexer = Lexer(text)
    parser = Parser(lexer.run(), lexer.lines)
    lists = parser.list_until(())
    if parser.i < len(parser.tokens):
        raise ShellSyntaxError(parser.text_at(parser.i))
    return lists


class Parser:
    """Recursive descent over the lexer's tokens (POSIX's grammar)."""

    def __init__(self, tokens: list[tuple[str, object]], lines: list[int]) -> None:
        self.tokens = tokens
        self.lines = lines
        self.i = 0

    def text_at(self, i: int) -> str:
        if i >= len(self.tokens):
            return EOF
        kind, value = self.tokens[i]
        return value.literal() if isinstance(value, Word) else "newline" if value == "\n" else str(value)

    def reserved(self, *names: str) -> str | None:
        """The reserved word at the cursor, if it is one of ``names`` (only unquoted words count)."""
        if self.i < len(self.tokens) and self.tokens[self.i][0] == "word":
            word = self.tokens[self.i][1]
            assert isinstance(word, Word)
            if len(word.parts) == 1 and word.parts[0].kind == "lit" and not word.parts[0].quoted:
                text = word.parts[0].text
                return text if text in names else None
        return None

    def expect(self, name: str) -> None:
        self.skip_separators()
        if self.reserved(name) is None:
            raise ShellSyntaxError(self.text_at(self.i))
        self.i += 1

    def skip_separators(self) -> None:
        while self.i < len(self.tokens) and self.tokens[self.i] in SEPARATORS:
            self.i += 1

    def list_until(self, stops: tuple[str, ...], closing: str | None = None) -> list[AndOr]:
        """And-or lists up to one of the reserved words ``stops`` (or ``closing``, an operator)."""
        lists: list[AndOr] = []
        while True:
            self.skip_separators()
            if self.i >= len(self.tokens) or self.reserved(*stops) or self.tokens[self.i] == ("op", closing):
                return lists
            lists.append(self.and_or())
            if self.i < len(self.tokens) and self.tokens[self.i] not in SEPARATORS \
                    and self.tokens[self.i] != ("op", closing):
                raise ShellSyntaxError(self.text_at(self.i))

    def and_or(self) -> AndOr:
        chain = AndOr(self.pipeline())
        while self.i < len(self.tokens) and self.tokens[self.i] in (("op", "&&"), ("op", "||")):
            op = str(self.tokens[self.i][1])
            self.i += 1
            while self.i < len(self.tokens) and self.tokens[self.i] == ("op", "\n"):
                self.i += 1
            chain.rest.append((op, self.pipeline()))
        return chain

    def pipeline(self) -> Pipeline:
        negate = self.reserved("!") is not None
        self.i += negate
        commands = [self.command()]
        while self.i < len(self.tokens) and self.tokens[self.i] == ("op", "|"):
            self.i += 1
            while self.i < len(self.tokens) and self.tokens[self.i] == ("op", "\n"):
                self.i += 1
            commands.append(self.command())
        return Pipeline(commands, negate)

    def command(self) -> Command | Compound:
        definition = self.function_name()
        if definition is not None:
            self.skip_separators()
            body = self.command()
            if not isinstance(body, Compound):
                raise ShellSyntaxError(self.text_at(self.i - 1))
            return Compound("function", name=definition, body=[AndOr(Pipeline([body]))])
        word = self.reserved("if", "case", "for", "while", "until", "{")
        if word is not None or (self.i < len(self.tokens) and self.tokens[self.i] == ("op", "(")):
            self.i += 1
            compound = {"if": self.if_clause, "case": self.case_clause, "for": self.for_clause,
                        "while": self.while_clause, "until": self.until_clause, "{": self.group,
                        None: self.subshell}[word]()
            while self.i < len(self.tokens) and self.tokens[self.i][0] == "redir":
                compound.redirects.append(self.tokens[self.i][1])  # type: ignore[arg-type]
                self.i += 1
            return compound
        cmd = Command(line=self.lines[self.i] if self.i < len(self.lines) else 1)
        while self.i < len(self.tokens) and self.tokens[self.i][0] != "op":
            kind, value = self.tokens[self.i]
            (cmd.words if kind == "word" else cmd.redirects).append(value)  # type: ignore[arg-type]
            self.i += 1
        if not cmd.words and not cmd.redirects:
            raise ShellSyntaxError(self.text_at(self.i))
        return cmd

    def function_name(self) -> str | None:
        """``name ()`` or ``function name [()]`` at the cursor: the name, the cursor past it."""
        keyword = self.reserved("function") is not None
        start = self.i + keyword
        if start >= len(self.tokens) or self.tokens[start][0] != "word":
            return None
        word = self.tokens[start][1]
        assert isinstance(word, Word)
        name = word.literal() if len(word.parts) == 1 and not word.parts[0].quoted else ""
        parens = self.tokens[start + 1:start + 3] == [("op", "("), ("op", ")")]
        if not FUNCTION_NAME.fullmatch(name) or not (parens or keyword):
            return None
        self.i = start + 1 + 2 * parens
        return name

    def body(self, *stops: str) -> list[AndOr]:
        lists = self.list_until(stops)
        if not lists:
            raise ShellSyntaxError(self.text_at(self.i))
        return lists

    def if_clause(self) -> Compound:
        branches = []
        while True:
            condition = self.body("then")
            self.expect("then")
            branches.append((condition, self.body("elif", "else", "fi")))
            word = self.reserved("elif", "else", "fi")
            if word is None:
                raise ShellSyntaxError(self.text_at(self.i))
            self.i += 1
            if word == "elif":
                continue
            otherwise = self.body("fi") if word == "else" else None
            if word == "else":
                self.expect("fi")
            return Compound("if", branches=branches, otherwise=otherwise)

    def case_clause(self) -> Compound:
        """``case WORD in PATTERN[|PATTERN]) LIST ;; ... esac``."""
        subject = self.word()
        self.expect("in")
        compound = Compound("case", items=[subject])
        while True:
            self.skip_separators()
            if self.reserved("esac"):
                self.i += 1
                return compound
            self.i += self.i < len(self.tokens) and self.tokens[self.i] == ("op", "(")
            patterns = [self.word()]
            while self.i < len(self.tokens) and self.tokens[self.i] == ("op", "|"):
                self.i += 1
                patterns.append(self.word())
            if self.i >= len(self.tokens) or self.tokens[self.i] != ("op", ")"):
                raise ShellSyntaxError(self.text_at(self.i))
            self.i += 1
            compound.patterns.append(patterns)
            compound.branches.append(([], self.list_until(("esac",), closing=";;")))
            if self.i < len(self.tokens) and self.tokens[self.i] == ("op", ";;"):
                self.i += 1
            elif not self.reserved("esac"):
                raise ShellSyntaxError(self.text_at(self.i))

    def word(self) -> Word:
        if self.i >= len(self.tokens) or self.tokens[self.i][0] != "word":
            raise ShellSyntaxError(self.text_at(self.i))
        self.i += 1
        return self.tokens[self.i - 1][1]  # type: ignore[return-value]

    def for_clause(self) -> Compound:
        if self.i >= len(self.tokens) or self.tokens[self.i][0] != "word":
            raise ShellSyntaxError(self.text_at(self.i))
        name = self.tokens[self.i][1].literal()  # type: ignore[union-attr]
        self.i += 1
        items: list[Word] | None = None
        if self.reserved("in"):
            self.i += 1
            items = []
            while self.i < len(self.tokens) and self.tokens[self.i][0] == "word":
                items.append(self.tokens[self.i][1])  # type: ignore[arg-type]
                self.i += 1
        self.expect("do")
        body = self.body("done")
        self.expect("done")
        return Compound("for", name=name, items=items, body=body)

    def while_clause(self, until: bool = False) -> Compound:
        condition = self.body("do")
        self.expect("do")
        body = self.body("done")
        self.expect("done")
        return Compound("until" if until else "while", branches=[(condition, body)])

    def until_clause(self) -> Compound:
        return self.while_clause(until=True)

    def group(self) -> Compound:
        body = self.body("}")
        self.expect("}")
        return Compound("group", body=body)

    def subshell(self) -> Compound:
        body = self.list_until((), closing=")")
        if not body or self.i >= len(self.tokens) or self.tokens[self.i] != ("op", ")"):
            raise ShellSyntaxError(self.text_at(self.i))
        self.i += 1
        return Compound("subshell", body=body)
