"""Kubernetes timestamps (RFC 3339, second precision, UTC) from and to lab-clock seconds."""

from __future__ import annotations

import datetime as dt


def rfc3339(seconds: float) -> str:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
