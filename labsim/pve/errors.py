"""Errors as PVE reports them: an HTTP status whose reason phrase is the message, and a body
``{"data": null, "message": "...\\n"}`` (plus ``errors`` per parameter for a 400)."""

from __future__ import annotations


class PVEError(Exception):
    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


class ParamError(PVEError):
    """Parameter verification failed: 400 with one message per offending parameter."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(400, "Parameter verification failed.", errors)


class TaskError(Exception):
    """A worker task failed: its log ends with ``TASK ERROR: <message>``."""
