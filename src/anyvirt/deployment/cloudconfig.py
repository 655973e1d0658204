"""Cloud-config text: how ``Identity.user_data`` is read, and how it is merged.

Reading (:func:`parse_user_data`): the text's first line is ``#cloud-config``
(no MIME multi-part, no ``#!`` script, no ``#include``, no Jinja template), the
rest is one YAML document whose top level is a mapping with string keys. It
is parsed with PyYAML's safe loader only, after a pass over its events that
refuses anchors and aliases (a few lines of aliases can stand for billions
of nodes, the "billion laughs") and nesting deeper than :data:`MAX_DEPTH`.

Merging (:func:`merge`), the one rule on every platform:

* the Identity owns ``hostname``, ``fqdn`` and ``preserve_hostname``: user_data
  that sets any of them is refused (set ``Identity.hostname`` instead);
* ``users`` is concatenated: the user_data's entries first (``default``, the
  distribution's own user, only if listed there), then one entry per
  ``Identity.users``; a name in both is refused;
* every other key of user_data is kept as it is, after the Identity's keys.

The result is written back as YAML by the safe dumper (comments and the
user's formatting are not kept; the data is). Values never become structure:
a name or key holding ``\\n`` or ``: `` is quoted by the dumper, never pasted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from anyvirt.validation import invalid

FIELD = "user_data"
HEADER = "#cloud-config"
#: NoCloud has no limit of its own; this bounds what is parsed and kept in memory
MAX_USER_DATA_BYTES = 1 << 20
MAX_DEPTH = 64
RESERVED_KEYS = ("hostname", "fqdn", "preserve_hostname")
SUDO_ALL = "ALL=(ALL) NOPASSWD:ALL"


def _check_events(text: str) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise invalid(FIELD, "aliases",
                          "user_data must not use YAML anchors or aliases (&name, *name): they let a "
                          "short text expand into a huge structure")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise invalid(FIELD, "depth", f"user_data nests deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _lone_surrogates(value: Any) -> bool:
    """Whether a parsed value holds a lone surrogate anywhere: YAML's ``\\uD83D\\uDE00``
    escapes are two code points, not one character, and cannot be encoded as UTF-8."""
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_lone_surrogates(k) or _lone_surrogates(v) for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return any(_lone_surrogates(item) for item in value)
    return False


def parse_user_data(text: object) -> dict[str, Any]:
    """The cloud-config mapping of ``text``, or ``InvalidSpec`` saying what is wrong."""
    if not isinstance(text, str):
        raise invalid(FIELD, "type", f"user_data must be a string, not {type(text).__name__}")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_USER_DATA_BYTES:
        raise invalid(FIELD, "length", f"user_data is {size} bytes; the limit is {MAX_USER_DATA_BYTES}")
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        raise invalid(FIELD, "surrogates", "user_data holds a lone surrogate, which is not text")
    first = text.split("\n", 1)[0].rstrip()
    if first != HEADER:
        raise invalid(FIELD, "header",
                      f"user_data must be cloud-config: its first line must be {HEADER!r} (scripts, "
                      "#include, MIME multi-part and Jinja templates are not accepted)")
    try:
        _check_events(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or type(exc).__name__
        raise invalid(FIELD, "yaml", f"user_data is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise invalid(FIELD, "depth", "user_data nests too deeply") from None
    if _lone_surrogates(data):
        raise invalid(FIELD, "surrogates",
                      "user_data holds a lone surrogate (a \\uD800-\\uDFFF escape): write characters "
                      "beyond U+FFFF as themselves or as \\U0001F600")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise invalid(FIELD, "mapping", f"user_data must be a mapping of cloud-config keys, not a "
                                        f"{type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise invalid(FIELD, "keys", f"user_data's top-level keys must be strings, not "
                                         f"{type(key).__name__}")
    owned = [key for key in RESERVED_KEYS if key in data]
    if owned:
        raise invalid(FIELD, "reserved keys",
                      f"user_data must not set {', '.join(owned)}: the Identity owns the host name "
                      "(set Identity.hostname)")
    if "users" in data and not isinstance(data["users"], list):
        raise invalid(FIELD, "users", "user_data's 'users' must be a list")
    return data


def _entry_name(entry: object) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping):
        name = entry.get("name")
        return name if isinstance(name, str) else None
    return None


def merge(owned: Mapping[str, Any], users: Iterable[Mapping[str, Any]],
          user_data: Mapping[str, Any]) -> dict[str, Any]:
    """The module's merge rule: ``owned`` keys (host name) first, ``users`` after the
    user_data's own users, then the rest of user_data."""
    ours = list(users)
    theirs = list(user_data.get("users", []))
    taken = {_entry_name(entry) for entry in theirs}
    for entry in ours:
        if entry["name"] in taken:
            raise invalid(FIELD, "users",
                          f"user {entry['name']!r} is both in Identity.users and in user_data's users")
    merged: dict[str, Any] = dict(owned)
    if theirs or ours:
        merged["users"] = theirs + ours
    for key, value in user_data.items():
        if key != "users":
            merged[key] = value
    return merged


class _Dumper(yaml.SafeDumper):
    """Never anchors: each value is written out where it is used."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(data: Any) -> str:
    """Deterministic YAML (keys in the order given) that PyYAML and cloud-init read back.

    ASCII only, every other character escaped: PyYAML's emitter writes a NEL (U+0085) as
    it is inside a single-quoted scalar when it may write Unicode, and its reader then
    folds that line break into a space (found by tests/deployment/test_identity_fuzz.py).
    """
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=False, width=1 << 16)


def render_cloud_config(data: Mapping[str, Any]) -> str:
    return f"{HEADER}\n{dump_yaml(dict(data))}"


__all__ = ["HEADER", "MAX_USER_DATA_BYTES", "RESERVED_KEYS", "SUDO_ALL", "dump_yaml", "merge",
           "parse_user_data", "render_cloud_config"]
