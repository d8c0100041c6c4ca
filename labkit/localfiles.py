"""The local files a lab file points at (secrets, the SSH public key, the PVE CA), read with
care: a regular file of sane size and UTF-8 text, of the form its field wants. Problems are
messages that name the file and the fix and never quote its content (it may be a secret)."""

from __future__ import annotations

import stat
from pathlib import Path

import asyncssh
from cryptography import x509

from labkit.errors import LabError

MAX_BYTES = 1 << 20  # keys, CAs and secrets files are a few KB; /dev/zero or a disk image is not one
PRIVATE_KEY_MARKS = ("PRIVATE KEY-----", "PuTTY-User-Key-File-")


class FileProblem(LabError, ValueError):
    """A local file is unusable; the message names the file, never its content."""


def read_text(path: Path) -> str:
    """The text of a regular, bounded, UTF-8 file. FileNotFoundError passes through."""
    info = path.stat()
    if stat.S_ISDIR(info.st_mode):
        raise FileProblem(f"{path} is a directory; give a file")
    if not stat.S_ISREG(info.st_mode):
        raise FileProblem(f"{path} is not a regular file (a device, pipe or socket); give a file")
    if info.st_size > MAX_BYTES:
        raise FileProblem(f"{path} is {info.st_size} bytes; at most {MAX_BYTES} bytes are read (is it the right file?)")
    try:
        with path.open("rb") as source:
            data = source.read(MAX_BYTES + 1)
    except OSError as exc:
        raise FileProblem(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_BYTES:  # grew since stat
        raise FileProblem(f"{path} is over {MAX_BYTES} bytes (is it the right file?)")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise FileProblem(f"{path} is not UTF-8 text") from None


def public_key_line(path: Path) -> str:
    """The one OpenSSH public key line (``type base64 [comment]``) of ``path``."""
    text = read_text(path)
    if any(mark in text for mark in PRIVATE_KEY_MARKS):
        raise FileProblem(f"{path} is a PRIVATE key, which must never leave this machine; "
                          f"give the public key beside it ({path.name}.pub, or `ssh-keygen -y -f {path}`)")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) != 1:
        raise FileProblem(f"{path} holds {len(lines)} key lines; give a file with one OpenSSH public key line")
    try:
        # The line's type must be the key's own: an RFC 4716 or PEM public key is not a line.
        if asyncssh.import_public_key(lines[0]).get_algorithm() != lines[0].split()[0]:
            raise ValueError
    except (asyncssh.KeyImportError, ValueError):
        raise FileProblem(f"{path} is not an OpenSSH public key line (TYPE BASE64 [comment], as in "
                          "~/.ssh/id_ed25519.pub)") from None
    return lines[0]


def check_pem_certificate(path: Path) -> None:
    """``path`` holds at least one PEM certificate (a CA to verify a server with)."""
    text = read_text(path)
    if any(mark in text for mark in PRIVATE_KEY_MARKS):
        raise FileProblem(f"{path} holds a PRIVATE key; give the CA certificate (PEM) only")
    try:
        x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise FileProblem(f"{path} is not a PEM certificate (-----BEGIN CERTIFICATE-----...); "
                          "give the PVE CA, /etc/pve/pve-root-ca.pem on the host") from None
