"""Scrub known secrets from an executed notebook: sources, outputs, metadata, injected parameters."""

from __future__ import annotations

from typing import Any

from labkit.secrets import MASK


def scrub(value: Any, known: frozenset[str] | set[str]) -> tuple[Any, int]:
    """A copy of a JSON-like value with every known secret masked, and how many were found."""
    ordered = sorted(known, key=len, reverse=True)
    found = 0

    def clean(item: Any) -> Any:
        nonlocal found
        if isinstance(item, str):
            for secret in ordered:
                if secret in item:
                    found += item.count(secret)
                    item = item.replace(secret, MASK)
            return item
        if isinstance(item, list):
            return [clean(v) for v in item]
        if isinstance(item, dict):
            return {k: clean(v) for k, v in item.items()}
        return item

    return clean(value), found
