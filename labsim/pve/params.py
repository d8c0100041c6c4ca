"""Parameter declarations and checks, after PVE's JSON schema: names, types, bounds, formats.

Each endpoint declares the parameters it accepts; anything else is refused as PVE refuses it.
Values arrive as strings (form or query) or JSON values and leave typed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from labsim.pve.errors import ParamError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_DNS_NAME = re.compile(r"^(?=.{1,255}$)[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)*$")
_TAG = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$", re.IGNORECASE)
_URLENCODED = re.compile(r"^[-%a-zA-Z0-9_.!~*'()]*$")
_CONFIG_ID = re.compile(r"^[a-z][a-z0-9_]+$", re.IGNORECASE)


@dataclass(frozen=True)
class Param:
    type: str  # "integer" | "boolean" | "string" | "number"
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] | None = None
    max_length: int | None = None
    pattern: str | None = None
    format: str | None = None


def integer(minimum: float | None = None, maximum: float | None = None, required: bool = False) -> Param:
    return Param("integer", required, minimum, maximum)


def boolean() -> Param:
    return Param("boolean")


def string(fmt: str | None = None, *, required: bool = False, max_length: int | None = None,
           pattern: str | None = None, enum: tuple[str, ...] | None = None) -> Param:
    return Param("string", required, enum=enum, max_length=max_length, pattern=pattern, format=fmt)


VMID = Param("integer", True, 100, 999999999, format="pve-vmid")


def validate(spec: Mapping[str, Param], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Typed values of ``raw`` after ``spec``, or ParamError naming each bad parameter."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, value in raw.items():
        param = spec.get(name)
        if param is None:
            errors[name] = "property is not defined in schema and the schema does not allow additional properties"
            continue
        try:
            values[name] = _check(param, value)
        except ValueError as error:
            errors[name] = str(error)
    for name, param in spec.items():
        if param.required and name not in raw:
            errors[name] = "property is missing and it is not optional"
    if errors:
        raise ParamError(errors)
    return values


def _check(param: Param, value: Any) -> Any:
    """In PVE's order: type, format, length and pattern, bounds, enumeration."""
    text = str(value).strip() if not isinstance(value, bool) else str(int(value))
    typed = _typed(param, text)
    if param.format in FORMATS:
        try:
            FORMATS[param.format](text)
        except ValueError as error:  # PVE's format checks die with a line of their own
            raise ValueError(f"invalid format - {error}\n") from None
    if param.max_length is not None and len(text) > param.max_length:
        raise ValueError(f"value may only be {param.max_length} characters long")
    if param.pattern is not None and not re.fullmatch(param.pattern, text):
        raise ValueError("value does not match the regex pattern")
    if param.minimum is not None and typed < param.minimum:
        raise ValueError(f"value must have a minimum value of {_plain(param.minimum)}")
    if param.maximum is not None and typed > param.maximum:
        raise ValueError(f"value must have a maximum value of {_plain(param.maximum)}")
    if param.enum is not None and text not in param.enum:
        raise ValueError(f"value '{text}' does not have a value in the enumeration '{', '.join(param.enum)}'")
    return typed


def _typed(param: Param, text: str) -> Any:
    if param.type == "boolean":
        if text.lower() in _TRUE | _FALSE:
            return int(text.lower() in _TRUE)
        raise ValueError(f"type check ('boolean') failed - got '{text}'")
    if param.type in ("integer", "number"):
        try:
            return int(text) if param.type == "integer" else float(text)
        except ValueError:
            raise ValueError(f"type check ('{param.type}') failed - got '{text}'") from None
    return text


def _plain(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _vmid(text: str) -> None:
    if not re.fullmatch(r"[1-9][0-9]{2,8}", text):
        raise ValueError("value does not look like a valid VM ID")


def _dns_name(text: str) -> None:
    if not _DNS_NAME.match(text):
        raise ValueError("value does not look like a valid DNS name")


def _tag_list(text: str) -> None:
    for tag in split_tags(text):
        if not _TAG.match(tag):
            raise ValueError(f"invalid tag '{tag}'")


def split_tags(text: str) -> list[str]:
    return [tag for tag in re.split(r"[;, ]+", text) if tag]


def _urlencoded(text: str) -> None:
    if not _URLENCODED.match(text):
        raise ValueError(f"invalid urlencoded string: {text}")


def _address_list(text: str) -> None:
    for address in re.split(r"[,; ]+", text):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"value does not look like a valid address: {address}") from None


def _ipconfig(text: str) -> None:
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key == "ip" and value != "dhcp":
            _cidr(value, "ip")
        elif key == "gw":
            _address_list(value)
        elif key not in ("ip", "gw", "ip6", "gw6"):
            raise ValueError(f"{key}: property is not defined in schema")


def _cidr(value: str, key: str) -> None:
    try:
        ipaddress.IPv4Interface(value)
    except ValueError:
        raise ValueError(f"{key}: value does not look like a valid IPv4 network configuration") from None
    if "/" not in value:
        raise ValueError(f"{key}: value does not look like a valid IPv4 network configuration")


def _config_id_list(text: str) -> None:
    for key in re.split(r"[,; ]+", text):
        if key and not _CONFIG_ID.match(key):
            raise ValueError(f"invalid configuration ID '{key}'")


FORMATS = {
    "dns-name": _dns_name,
    "pve-tag-list": _tag_list,
    "urlencoded": _urlencoded,
    "address-list": _address_list,
    "pve-qm-ipconfig": _ipconfig,
    "pve-configid-list": _config_id_list,
    "pve-vmid": _vmid,
}
