"""The official PVE API schema, as a check of every request the backend sends in its tests.

The schema is the data file fakepve ships (``fakepve/data/pve-api.json.gz``,
from Proxmox's API viewer ``apidoc.js``: 449 paths, 680 methods; AGPL-3.0 as
Proxmox VE). Only the data is read; the checking is this project's own, and
deliberately strict: a path or method the schema lacks, an unknown or
missing parameter, a wrong type, a value outside an enumeration, range,
length or pattern, a property string with an unknown key, and a named
format this checker does not know are all violations. fakepve is lenient
in places; the schema is not.
"""

from __future__ import annotations

import gzip
import importlib.resources
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

API_PREFIX = "/api2/json"
SECRET_PARAMS = {"password", "new-password", "confirmation-password", "otp", "tfa-challenge"}
TRUE_FALSE = {"1", "0", "true", "false", "yes", "no", "on", "off"}
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
STORAGE_ID = r"[a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]"
CONTENT_TYPES = {"images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import", "none"}
SMBIOS_KEYS = {"uuid", "base64", "family", "manufacturer", "product", "serial", "sku", "version"}


def _list(item: Callable[[str], str | None]) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        for part in filter(None, re.split(r"[,;\s\0]+", text)):
            why = item(part)
            if why:
                return why
        return None
    return check


def _regex(pattern: str, what: str) -> Callable[[str], str | None]:
    rx = re.compile(pattern)
    return lambda text: None if rx.fullmatch(text) else f"not {what}"


def _smbios1(text: str) -> str | None:
    for part in text.split(","):
        key = part.partition("=")[0]
        if key not in SMBIOS_KEYS:
            return f"unknown smbios1 key {key!r}"
    return None


def _storage_pair(text: str) -> str | None:
    rx = re.compile(rf"(?:{STORAGE_ID}:)?{STORAGE_ID}|1")
    return None if rx.fullmatch(text) else "not a storage or storage:storage pair"


_volume_id = _regex(rf"{STORAGE_ID}:.+", "a volume id (storage:volume)")


Check = Callable[[str], str | None]


def _ip(version: int | None, *, cidr: bool = False, words: tuple[str, ...] = ()) -> Check:
    def check(text: str) -> str | None:
        if text in words:
            return None
        try:
            value = ipaddress.ip_interface(text) if cidr else ipaddress.ip_address(text)
        except ValueError:
            return f"not an IP address{' with a prefix' if cidr else ''}"
        if cidr and "/" not in text:
            return "no prefix length"
        if version is not None and value.version != version:
            return f"not IPv{version}"
        return None
    return check


# The cloud-init formats (PVE::QemuServer, PVE::JSONSchema), which the API viewer names
# without spelling out
_IPCONFIG_KEYS = {"ip": _ip(4, cidr=True, words=("dhcp",)), "gw": _ip(4),
                  "ip6": _ip(6, cidr=True, words=("dhcp", "auto")), "gw6": _ip(6)}
_CICUSTOM_KEYS = ("meta", "network", "user", "vendor")


def _property_string(keys: Mapping[str, Check]) -> Callable[[str], dict[str, str] | str]:
    def parse(text: str) -> dict[str, str] | str:
        found: dict[str, str] = {}
        for part in text.split(","):
            key, eq, val = part.partition("=")
            if not eq or key not in keys:
                return f"unknown or bare part {part[:40]!r}"
            if key in found:
                return f"{key} given twice"
            why = keys[key](val)
            if why:
                return f"{key}: {why}"
            found[key] = val
        return found
    return parse


def _ipconfig(text: str) -> str | None:
    found = _property_string(_IPCONFIG_KEYS)(text)
    if isinstance(found, str):
        return found
    for gw, ip in (("gw", "ip"), ("gw6", "ip6")):  # parse_ipconfig refuses these
        if gw in found and found.get(ip) in (None, "dhcp", "auto"):
            return f"{gw} needs a static {ip}"
    return None


def _cicustom(text: str) -> str | None:
    found = _property_string(dict.fromkeys(_CICUSTOM_KEYS, _volume_id))(text)
    return found if isinstance(found, str) else None

NAMED_FORMATS: dict[str, Callable[[str], str | None]] = {
    "pve-node": _regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?", "a node name"),
    "pve-vmid": _regex(r"[1-9][0-9]{2,8}", "a vmid"),
    "pve-configid": _regex(r"[a-zA-Z][a-zA-Z0-9_-]+", "a config id"),
    "pve-storage-id": _regex(STORAGE_ID, "a storage id"),
    "pve-poolid": _regex(r"[A-Za-z0-9_\-]+", "a pool id"),
    "pve-realm": _regex(r"[A-Za-z][A-Za-z0-9.\-_]+", "a realm"),
    "dns-name": _regex(rf"(?:{_LABEL}\.)*{_LABEL}", "a DNS name"),
    "pve-tag": _regex(r"[a-zA-Z0-9_][a-zA-Z0-9_\-+.]*", "a tag"),
    "pve-bridge-id": _regex(r"[-_.\w\d]+", "a bridge id"),
    "disk-size": _regex(r"\d+(?:\.\d+)?[KMGT]?", "a disk size"),
    "mac-addr": _regex(r"[a-fA-F0-9][02468aceACE](?::[a-fA-F0-9]{2}){5}", "a unicast MAC address"),
    "pve-volume-id": _volume_id,
    "pve-volume-id-or-qm-path": lambda t: (None if t in ("none", "cdrom") or t.startswith("/")
                                           else _volume_id(t)),
    "pve-volume-id-or-absolute-path": lambda t: None if t.startswith("/") else _volume_id(t),
    "pve-storage-content": lambda t: None if t in CONTENT_TYPES else f"unknown content type {t!r}",
    "pve-qm-smbios1": _smbios1,
    "storage-pair-list": _list(_storage_pair),
    # pve_verify_urlencoded: what encodeURIComponent leaves, and %-escapes
    "urlencoded": _regex(r"[-%a-zA-Z0-9_.!~*'()]*", "URL-encoded"),
    "address-list": _list(_ip(None)),
    "pve-qm-ipconfig": _ipconfig,
    "pve-qm-cicustom": _cicustom,
}
for _name in ("pve-configid", "pve-storage-id", "pve-tag", "pve-storage-content", "pve-node", "pve-vmid"):
    NAMED_FORMATS[f"{_name}-list"] = _list(NAMED_FORMATS[_name])


@cache
def load() -> dict[str, dict[str, Any]]:
    raw = (importlib.resources.files("fakepve") / "data" / "pve-api.json.gz").read_bytes()
    paths: dict[str, dict[str, Any]] = json.loads(gzip.decompress(raw))["paths"]
    return paths


@cache
def _templates() -> list[tuple[re.Pattern[str], str, int]]:
    out = []
    for template in load():
        parts = template.strip("/").split("/") if template != "/" else []
        rx = "".join("/([^/]+)" if p.startswith("{") else "/" + re.escape(p) for p in parts)
        literal = sum(1 for p in parts if not p.startswith("{"))
        out.append((re.compile(f"^{rx}$"), template, literal))
    return out


def match_path(path: str) -> tuple[str, dict[str, str]] | None:
    """The schema template of a concrete path (literal segments win) and its path parameters."""
    best = None
    for rx, template, literal in _templates():
        found = rx.match(path)
        if found and (best is None or literal > best[2]):
            names = [p[1:-1] for p in template.split("/") if p.startswith("{")]
            best = (template, {n: unquote(v) for n, v in zip(names, found.groups(), strict=True)}, literal)
    return None if best is None else (best[0], best[1])


def _prop(props: Mapping[str, Any], name: str) -> Any:
    if name in props:
        return props[name]
    base = name.rstrip("0123456789")
    if base != name and f"{base}[n]" in props:
        return props[f"{base}[n]"]
    return None


def _show(name: str, value: str) -> str:
    return "***" if name in SECRET_PARAMS else repr(value[:80])


def check_value(schema: Mapping[str, Any], value: str, name: str) -> list[str]:
    """Violations of one parameter value (as sent, a string) against its schema."""
    kind = schema.get("type", "string")
    shown = _show(name, value)
    if kind == "integer":
        if not re.fullmatch(r"[+-]?\d+", value):
            return [f"{name}={shown} is not an integer"]
        number: float = int(value)
    elif kind == "number":
        try:
            number = float(value)
        except ValueError:
            return [f"{name}={shown} is not a number"]
    elif kind == "boolean":
        return [] if value.lower() in TRUE_FALSE else [f"{name}={shown} is not a boolean"]
    elif kind in ("string", "any"):
        number = 0
    else:
        return [f"{name}: type {kind} cannot be sent as a form value"]
    errors = []
    if kind in ("integer", "number"):
        if "minimum" in schema and number < float(schema["minimum"]):
            errors.append(f"{name}={shown} is below the minimum {schema['minimum']}")
        if "maximum" in schema and number > float(schema["maximum"]):
            errors.append(f"{name}={shown} is above the maximum {schema['maximum']}")
    if "enum" in schema and value not in [str(e) for e in schema["enum"]]:
        errors.append(f"{name}={shown} is not one of {schema['enum']}")
    if "maxLength" in schema and len(value) > int(schema["maxLength"]):
        errors.append(f"{name} is longer than {schema['maxLength']}")
    if "minLength" in schema and len(value) < int(schema["minLength"]):
        errors.append(f"{name} is shorter than {schema['minLength']}")
    if "pattern" in schema and not re.fullmatch(schema["pattern"], value, re.S):
        errors.append(f"{name}={shown} does not match {schema['pattern']}")
    fmt = schema.get("format")
    if isinstance(fmt, dict):
        errors += check_property_string(fmt, value, name)
    elif isinstance(fmt, str):
        checker = NAMED_FORMATS.get(fmt)
        if checker is None:
            errors.append(f"{name}: format {fmt!r} is not known to the schema check (teach it)")
        else:
            why = checker(value)
            if why:
                errors.append(f"{name}={shown}: {why} (format {fmt})")
    return errors


def check_property_string(subs: Mapping[str, Any], value: str, name: str) -> list[str]:
    """``key=value,...`` against its sub-schemas: known keys, default key, aliases, required keys."""
    found: dict[str, str] = {}
    default = next((k for k, v in subs.items() if v.get("default_key")), None)
    errors = []
    for part in filter(None, value.split(",")):
        key, eq, val = part.partition("=")
        if not eq:
            if default is None or default in found:
                errors.append(f"{name}: bare value {part!r} but no (free) default key")
                continue
            found[default] = part
            continue
        sub = subs.get(key)
        if sub is None:
            errors.append(f"{name}: unknown key {key!r} in property string")
            continue
        if sub.get("alias"):
            if sub.get("keyAlias"):
                found[sub["keyAlias"]] = key
            key = sub["alias"]
        if key in found:
            errors.append(f"{name}: key {key!r} given twice")
        found[key] = val
    for key, sub in subs.items():
        if sub.get("alias"):
            continue
        if key not in found:
            if not sub.get("optional"):
                errors.append(f"{name}: required key {key!r} missing")
            continue
        errors += check_value(sub, found[key], f"{name}.{key}")
    return errors


def check_request(method: str, url: str, body: bytes | str | Mapping[str, str] | None,
                  content_type: str = "") -> list[str]:
    """Every violation of one HTTP request against the schema (empty: it conforms). A streamed
    multipart body is given as its form fields (the file part is not a parameter)."""
    parts = urlsplit(url)
    if not parts.path.startswith(API_PREFIX + "/"):
        return [f"{method} {parts.path}: not under {API_PREFIX}"]
    path = parts.path[len(API_PREFIX):]
    found = match_path(path)
    where = f"{method} {path}"
    if found is None:
        return [f"{where}: no such path in the PVE API"]
    template, path_params = found
    info = load()[template].get(method)
    if info is None:
        return [f"{method} {template}: the PVE API has no such method there"]
    values: dict[str, list[str]] = {}
    for key, val in parse_qsl(parts.query, keep_blank_values=True):
        values.setdefault(key, []).append(val)
    if isinstance(body, Mapping):
        for key, val in body.items():
            values.setdefault(key, []).append(str(val))
    elif body and "multipart/form-data" not in content_type:
        text = body.decode() if isinstance(body, bytes) else body
        for key, val in parse_qsl(text, keep_blank_values=True):
            values.setdefault(key, []).append(val)
    spec = info.get("parameters") or {}
    props = spec.get("properties") or {}
    errors = []
    for key, val in path_params.items():
        values.setdefault(key, []).append(val)
    for key, vals in values.items():
        sub = _prop(props, key)
        if sub is None:
            errors.append(f"{method} {template}: unknown parameter {key!r}")
            continue
        if len(vals) > 1 and sub.get("type") != "array":
            errors.append(f"{method} {template}: {key!r} given {len(vals)} times")
        item = sub.get("items", {}) if sub.get("type") == "array" else sub
        for val in vals:
            errors += [f"{method} {template}: {e}" for e in check_value(item, val, key)]
    for key, sub in props.items():
        if "[n]" in key or sub.get("optional") or key in values:
            continue
        errors.append(f"{method} {template}: required parameter {key!r} missing")
    for key in values:
        needs = (_prop(props, key) or {}).get("requires")
        if needs and needs not in values:
            errors.append(f"{method} {template}: {key!r} requires {needs!r}")
    return errors
