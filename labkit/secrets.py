"""Secret references and redaction.

A lab file never holds a secret, only a reference to one:

- ``env:NAME``: the environment variable NAME;
- ``file:PATH#key``: key ``key`` of a YAML mapping or KEY=VALUE file at PATH;
- ``file:PATH``: the whole file (an SSH private key, say), trailing newline kept off.

Relative paths resolve against the lab file's folder; ``~`` expands. Every value resolved here is
registered for redaction, so that logs, errors and executed notebooks can be scrubbed of it.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from labkit import localfiles, yamlfile
from labkit.errors import SecretError

_REF = re.compile(r"^(?:env:(?P<env>[A-Za-z_][A-Za-z0-9_]*)|file:(?P<path>[^#]+)(?:#(?P<key>[A-Za-z0-9_.-]+))?)$")
MASK = "***"


@dataclass(frozen=True)
class SecretRef:
    """A parsed reference. ``str()`` gives the reference back, never a value."""

    text: str
    env: str | None = None
    path: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        return self.text


def is_reference(text: str) -> bool:
    return bool(_REF.match(text))


def parse(text: str) -> SecretRef:
    match = _REF.match(text)
    if not match:
        # Never echo the text: it may be a pasted secret.
        raise SecretError("not a secret reference; write env:NAME or file:PATH#key")
    return SecretRef(text, match["env"], match["path"], match["key"])


def resolve(ref: str | SecretRef, base_dir: Path | None = None) -> str:
    """The value behind a reference, registered for redaction."""
    ref = parse(ref) if isinstance(ref, str) else ref
    value = _read_env(ref) if ref.env else _read_file(ref, base_dir or Path.cwd())
    if not value:
        raise SecretError(f"secret {ref} is empty")
    register(value)
    return value


def _read_env(ref: SecretRef) -> str:
    value = os.environ.get(ref.env or "")
    if value is None:
        raise SecretError(f"secret {ref}: environment variable {ref.env} is not set; export it before running")
    return value


def _read_file(ref: SecretRef, base_dir: Path) -> str:
    path = resolve_path(ref.path or "", base_dir)
    try:
        text = localfiles.read_text(path)
    except FileNotFoundError:
        raise SecretError(f"secret {ref}: file {path} does not exist") from None
    except localfiles.FileProblem as exc:  # /dev/zero, a folder, a disk image, binary data
        raise SecretError(f"secret {ref}: {exc}") from None
    except OSError as exc:
        raise SecretError(f"secret {ref}: cannot read {path}: {exc.strerror}") from None
    if ref.key is None:
        return text.rstrip("\n")
    entries = _parse_entries(text)
    if ref.key not in entries:
        raise SecretError(f"secret {ref}: key '{ref.key}' not found in {path}")
    return str(entries[ref.key])


def _parse_entries(text: str) -> dict[str, object]:
    """A YAML mapping, or KEY=VALUE lines (comments and ``export`` allowed)."""
    try:
        doc = yamlfile.load(text)
    except yamlfile.YamlProblem:  # not YAML (or a bomb): read as KEY=VALUE lines
        doc = None
    if isinstance(doc, dict):
        return {str(k): v for k, v in doc.items()}
    entries: dict[str, object] = {}
    for line in text.splitlines():
        line = line.strip().removeprefix("export ").strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            entries[key.strip()] = value.strip().strip("'\"")
    return entries


def resolve_path(text: str | Path, base_dir: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


# -- redaction -------------------------------------------------------------------------------------

_registered: set[str] = set()
# Set by the runner in its notebooks' kernels only: a file (0600, in the run's private scratch
# folder) where register() reports each secret, so that the runner scrubs what the kernel learnt
# (the node token, kubeconfig keys, generated passwords) without it passing through the notebook.
SINK_ENV = "LABKIT_SECRETS_SINK"


def register(value: str) -> None:
    """Remember a secret so that ``redact`` masks it, along with its base64 form."""
    if len(value) < 6 or value in _registered:  # too short to mask without mangling ordinary text
        return
    _registered.add(value)
    _registered.add(base64.b64encode(value.encode()).decode())
    sink = os.environ.get(SINK_ENV)
    if sink:
        fd = os.open(sink, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(value) + "\n").encode())  # one write: lines from threads stay whole
        finally:
            os.close(fd)


def learnt(sink: Path) -> frozenset[str]:
    """Register what a kernel reported to ``sink``; every secret known here."""
    if sink.exists():
        for line in sink.read_text().splitlines():
            register(json.loads(line))
    return registered()


# What a secret looks like when pasted where it does not belong (a -p value, say).
SECRET_SHAPES = {
    "a private key": re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----"),
    "a k3s token": re.compile(r"K10[0-9a-f]{64}::"),
    "an API token with its secret (user@realm!name=SECRET)": re.compile(r"\S+@\S+!\S+=\S+"),
    "a UUID, as a PVE token secret is": re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                                                   re.IGNORECASE),
    "a JSON web token": re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\."),
    "a long hex key": re.compile(r"\b[0-9a-f]{32,}\b"),
    "a random string": re.compile(r"(?<![\w/.])(?=[\w+=-]*[a-z])(?=[\w+=-]*[A-Z])(?=[\w+=-]*\d)[\w+=-]{20,}"),
}


def secret_shape(text: str) -> str | None:
    """What secret ``text`` looks like, or None."""
    return next((what for what, shape in SECRET_SHAPES.items() if shape.search(text)), None)


def registered() -> frozenset[str]:
    return frozenset(_registered)


def redact(text: str, secrets: frozenset[str] | set[str] | None = None) -> str:
    for value in sorted(secrets if secrets is not None else _registered, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def forget_all() -> None:
    """Drop every registered secret (tests, and a new lab in the same process)."""
    _registered.clear()
