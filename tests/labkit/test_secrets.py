"""Secret references: resolved from env or files, errors name the reference, values are redacted."""

from __future__ import annotations

import base64

import pytest

from labkit import secrets
from labkit.errors import SecretError


def test_env_reference(monkeypatch):
    monkeypatch.setenv("LAB_TOKEN", "s3cret-value-1")
    assert secrets.resolve("env:LAB_TOKEN") == "s3cret-value-1"


def test_missing_env_names_the_reference(monkeypatch):
    monkeypatch.delenv("LAB_NOPE", raising=False)
    with pytest.raises(SecretError, match="secret env:LAB_NOPE: environment variable LAB_NOPE is not set"):
        secrets.resolve("env:LAB_NOPE")


def test_yaml_file_with_key(tmp_path):
    (tmp_path / "s.yaml").write_text("pve_token_secret: abc-123-def\nother: x\n")
    assert secrets.resolve("file:s.yaml#pve_token_secret", tmp_path) == "abc-123-def"


def test_key_value_file(tmp_path):
    (tmp_path / "s.env").write_text("# tokens\nexport K3S_TOKEN='k3s-token-xyz'\nOTHER=1\n")
    assert secrets.resolve("file:s.env#K3S_TOKEN", tmp_path) == "k3s-token-xyz"


def test_whole_file(tmp_path):
    (tmp_path / "key").write_text("-----BEGIN KEY-----\nabcdef\n-----END KEY-----\n")
    assert secrets.resolve(f"file:{tmp_path}/key").endswith("-----END KEY-----")


def test_missing_file_names_reference_and_path(tmp_path):
    with pytest.raises(SecretError, match=r"secret file:nope.yaml#k: file .*nope.yaml does not exist"):
        secrets.resolve("file:nope.yaml#k", tmp_path)


def test_missing_key_names_the_key_never_a_value(tmp_path):
    (tmp_path / "s.yaml").write_text("present: very-secret-value\n")
    with pytest.raises(SecretError) as err:
        secrets.resolve("file:s.yaml#absent", tmp_path)
    assert "key 'absent' not found" in str(err.value)
    assert "very-secret-value" not in str(err.value)


def test_empty_secret_is_an_error(monkeypatch):
    monkeypatch.setenv("LAB_EMPTY", "")
    with pytest.raises(SecretError, match="is empty"):
        secrets.resolve("env:LAB_EMPTY")


def test_a_value_is_not_a_reference():
    with pytest.raises(SecretError) as err:
        secrets.parse("PVEAPIToken=root@pam!x=1234")
    assert "1234" not in str(err.value)


def test_resolved_values_are_redacted_with_their_base64(monkeypatch):
    monkeypatch.setenv("LAB_TOKEN", "s3cret-value-2")
    value = secrets.resolve("env:LAB_TOKEN")
    b64 = base64.b64encode(value.encode()).decode()
    assert secrets.redact(f"token={value} b64={b64}") == "token=*** b64=***"
