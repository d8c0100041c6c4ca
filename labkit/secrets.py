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


def register(value: str) -> None:
    """Remember a secret so that ``redact`` masks it, along with its base64 form."""
    if len(value) < 6:  # too short to mask without mangling ordinary text
        return
    _registered.add(value)
    _registered.add(base64.b64encode(value.encode()).decode())


def registered() -> frozenset[str]:
    return frozenset(_registered)


def redact(text: str, secrets: frozenset[str] | set[str] | None = None) -> str:
    for value in sorted(secrets if secrets is not None else _registered, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def forget_all() -> None:
    """Drop every registered secret (tests, and a new lab in the same process)."""
    _registered.clear()
