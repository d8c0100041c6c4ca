"""API errors: what the store, admission and the REST layer raise, and the Kubernetes Status
object each becomes (its own module so admission plugins need not import the store)."""

from __future__ import annotations

from labsim.kube.resources import Resource

# The reason of a 422 cause, from how its message starts (as field.ErrorType names them).
_CAUSE_REASONS = (("Required value", "FieldValueRequired"), ("Duplicate value", "FieldValueDuplicate"),
                  ("Unsupported value", "FieldValueNotSupported"), ("Forbidden", "FieldValueForbidden"),
                  ("Too long", "FieldValueTooLong"), ("Too many", "FieldValueTooMany"),
                  ("Not found", "FieldValueNotFound"))


class StoreError(Exception):
    """An API error; ``status()`` is the Kubernetes Status object the REST layer returns."""

    def __init__(self, code: int, reason: str, message: str, *, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def not_found(cls, res: Resource, name: str) -> StoreError:
        return cls(404, "NotFound", f'{_qualified(res)} "{name}" not found',
                   details={"name": name, "group": res.group, "kind": res.plural})

    @classmethod
    def already_exists(cls, res: Resource, name: str) -> StoreError:
        return cls(409, "AlreadyExists", f'{_qualified(res)} "{name}" already exists',
                   details={"name": name, "group": res.group, "kind": res.plural})

    @classmethod
    def conflict(cls, res: Resource, name: str) -> StoreError:
        return cls(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(res)} "{name}": the object '
                   "has been modified; please apply your changes to the latest version and try again",
                   details={"name": name, "group": res.group, "kind": res.plural})

    @classmethod
    def invalid(cls, res: Resource, name: str, causes: list[tuple[str, str]]) -> StoreError:
        texts = [f"{f}: {m}" for f, m in causes]
        text = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
        kind = f"{res.kind}.{res.group}" if res.group else res.kind
        return cls(422, "Invalid", f'{kind} "{name}" is invalid: {text}',
                   details={"name": name, "group": res.group, "kind": res.kind,
                            "causes": [{"reason": _cause_reason(m), "message": m, "field": f} for f, m in causes]})


def _qualified(res: Resource) -> str:
    return f"{res.plural}.{res.group}" if res.group else res.plural


def _cause_reason(message: str) -> str:
    return next((reason for prefix, reason in _CAUSE_REASONS if message.startswith(prefix)), "FieldValueInvalid")
