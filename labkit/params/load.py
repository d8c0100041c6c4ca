"""Loading a lab file: read, validate, cross-check; pydantic's errors turned into YAML paths and fixes."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from labkit import localfiles, yamlfile
from labkit.errors import ParamsError
from labkit.params.fields import excerpt
from labkit.params.lab import Lab
from labkit.params.rules import cross_check, file_problems, missing_files, unset_variables


def load_lab(path: str | Path, *, check_files: bool = True) -> Lab:
    """Read, validate and cross-check a lab file. Raises ParamsError listing every problem."""
    path = Path(path)
    doc = _read_yaml(path)
    try:
        lab = Lab.model_validate(doc, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ParamsError(_format_errors(exc, doc), source=str(path)) from None
    lab._path = path
    errors = cross_check(lab)
    if check_files:
        errors += missing_files(lab) + unset_variables(lab) + file_problems(lab)
    if errors:
        raise ParamsError(errors, source=str(path))
    return lab


def _read_yaml(path: Path) -> dict:
    try:
        doc = yamlfile.load(localfiles.read_text(path))
    except FileNotFoundError:
        raise ParamsError([f"{path}: file not found"], source=str(path)) from None
    except (localfiles.FileProblem, yamlfile.YamlProblem) as exc:
        raise ParamsError([str(exc)], source=str(path)) from None
    if not isinstance(doc, dict):
        raise ParamsError(["the lab file must be a YAML mapping (name:, kind:, proxmox:, ...)"], source=str(path))
    return doc


def _format_errors(exc: ValidationError, doc: dict) -> list[str]:
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
        where = _yaml_path(loc)
        lines.append(f"{where}: {_message(err, loc, doc)}" if where else _message(err, loc, doc))
    return lines


def _yaml_path(loc: list) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(err: dict, loc: list, doc: dict) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return _unknown_key(loc, doc)
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return err["msg"].removeprefix("Value error, ")
    if kind == "literal_error":
        return f"{excerpt(_value_at(doc, loc))} is not allowed; {err['msg'].lower()[:200]}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{excerpt(_value_at(doc, loc))} is out of range: {err['msg'].lower()}"
    if kind == "too_short":
        return "must not be empty"
    return f"{excerpt(_value_at(doc, loc))}: {err['msg'].lower()}"


def _unknown_key(loc: list, doc: dict) -> str:
    parent = _value_at(doc, loc[:-1])
    known = _known_keys(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
    return f"unknown key ({hint})" if isinstance(parent, dict) else "unknown key"


def _known_keys(loc: list) -> list[str]:
    model: Any = Lab
    keyed = False  # the last field was a mapping (charts): this part is its key, not a field
    for part in loc:
        if isinstance(part, int) or keyed:
            keyed = False
            continue
        annotation = model.model_fields[part].annotation  # Section, Section | None, list/dict of Section
        keyed = getattr(annotation, "__origin__", None) is dict
        model = next((a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)
                      and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _value_at(doc: Any, loc: list) -> Any:
    for part in loc:
        try:
            doc = doc[part]
        except (KeyError, IndexError, TypeError):
            return None
    return doc
