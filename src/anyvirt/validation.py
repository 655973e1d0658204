"""One rule per kind of user string, checked at the edge before anything is sent.

Every string a caller hands in (a VM name, a description, a snapshot name, a
network or storage name, an image path) is held to one :class:`TextRule`
here, the same on every backend. A backend adds its platform's own rules
through the driver's ``check_*`` hooks (``Driver.check_vm_name``,
``check_snapshot_name``, ``check_description``, ``check_storage_name``,
``check_network_name``, ``check_image``), which the operation gate calls after
these; both raise :class:`~anyvirt.errors.InvalidSpec` with ``field`` and
``rule`` set, so a caller can tell *which* rule refused *what*.

Policies that hold for every field:

* **Type**: a ``str``; ``None``, ``bytes`` and numbers are refused, never
  converted (``None`` is not ``""``).
* **Unicode**: any character except lone surrogates (not text: they cannot be
  encoded as UTF-8, which every platform speaks) and the noncharacters
  U+FFFE/U+FFFF and U+FDD0..U+FDEF (forbidden in XML, which libvirt and
  vSphere speak). **No normalisation**: a string is stored and compared
  exactly as given, so NFC ``"é"`` and NFD ``"é"`` are two different names,
  and what was accepted comes back unchanged.
* **Names** (VM and snapshot names) are never ``.`` or ``..``: the platforms
  that keep files per VM make directories of names.
* **Control characters** (Unicode category Cc: C0, DEL, C1) are refused in
  one-line fields; multi-line fields (descriptions) refuse only what XML 1.0
  cannot carry, the C0 controls but TAB and LF (DEL and C1 are kept).
* **Line endings** (multi-line fields only): CR LF and a lone CR become LF
  when the value is accepted, because XML-based platforms (libvirt, vSphere)
  turn them into LF anyway; the converted value is the one stored and read back.
* **Length** in two units: characters (code points) and UTF-8 bytes, the unit
  file systems and most platform APIs count.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from attrs import frozen

from anyvirt.errors import InvalidSpec

#: the lengths of file names VMs get from their names must fit Linux's and VMFS's
#: 255-byte limit with the longest suffix a platform adds (``-flat.vmdk``,
#: ``_VARS.fd``, ``.vbox-prev``): 240 bytes leaves room for it
NAME_MAX_BYTES = 240
#: vSphere's limit for VM and snapshot names, the strictest of the platforms
NAME_MAX_CHARS = 80
#: Proxmox's limit for a VM description (8 KiB), the strictest of the platforms
DESCRIPTION_MAX_BYTES = 8192
#: Linux's PATH_MAX
PATH_MAX_BYTES = 4096
REFERENCE_MAX_CHARS = 255


def invalid(field: str, rule: str, message: str) -> InvalidSpec:
    """An ``InvalidSpec`` that names the field and the rule it broke."""
    error = InvalidSpec(message)
    error.field = field
    error.rule = rule
    return error


def _noncharacter(ch: str) -> bool:
    code = ord(ch)
    return 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


@frozen
class TextRule:
    """The rule for one kind of string. ``check`` returns the value to use."""

    field: str  #: how messages name it ("VM name")
    max_chars: int
    max_bytes: int
    multiline: bool = False  #: TAB and LF allowed, CR LF / CR become LF
    allow_empty: bool = False
    no_padding: bool = False  #: no white space at either end
    not_dots: bool = False  #: not "." or ".." (names platforms make directories of)
    secret: bool = False  #: may hold a password: messages never quote it
    why: str = ""  #: one line for the docs: where the limits come from

    def check(self, given: Any, what: str | None = None) -> str:
        label = what or self.field
        shown = self._shown(given)
        if not isinstance(given, str):
            raise invalid(self.field, "type",
                          f"{label} must be a string, not {type(given).__name__}")
        value: str = given
        if self.multiline:
            value = value.replace("\r\n", "\n").replace("\r", "\n")
        if not value:
            if self.allow_empty:
                return value
            raise invalid(self.field, "empty", f"{label} must not be empty (non-empty text is required)")
        if self.not_dots and value in (".", ".."):
            raise invalid(self.field, "path",
                          f"{label}{shown} cannot be used: a name must not be '.' or '..' "
                          "(libvirt, vSphere and VirtualBox make directories of names)")
        if self.no_padding and value != value.strip():
            raise invalid(self.field, "padding",
                          f"{label}{shown} must not start or end with white space")
        for ch in value:
            if "\ud800" <= ch <= "\udfff":
                raise invalid(self.field, "surrogates",
                              f"{label}{shown} holds a lone surrogate (U+{ord(ch):04X}), which "
                              "is not text and cannot be encoded as UTF-8")
            if _noncharacter(ch):
                raise invalid(self.field, "noncharacters",
                              f"{label}{shown} holds the noncharacter U+{ord(ch):04X}")
            if self._control(ch):
                allowed = (" (C0 controls but tab and line feed are refused)" if self.multiline
                           else "")
                raise invalid(self.field, "control characters",
                              f"{label}{shown} must not contain control characters{allowed}")
        if len(value) > self.max_chars:
            raise invalid(self.field, "length",
                          f"{label} is {len(value)} characters long; the limit is {self.max_chars}")
        size = len(value.encode("utf-8"))
        if size > self.max_bytes:
            raise invalid(self.field, "length",
                          f"{label} is {size} bytes long in UTF-8; the limit is {self.max_bytes}")
        return value

    def _control(self, ch: str) -> bool:
        if self.multiline:  # free text: what XML 1.0 cannot carry (DEL and C1 it can)
            return ch < " " and ch not in "\t\n"
        return unicodedata.category(ch) == "Cc"

    def _shown(self, value: Any) -> str:
        return "" if self.secret else f" {value!r}"

    def check_optional(self, value: Any, what: str | None = None) -> str | None:
        return None if value is None else self.check(value, what)


NAME = TextRule(
    "VM name", NAME_MAX_CHARS, NAME_MAX_BYTES, no_padding=True, not_dots=True,
    why="80 characters is vSphere's limit; 240 UTF-8 bytes keeps the file names libvirt, "
        "vSphere and VirtualBox make from it within 255 bytes")
SNAPSHOT_NAME = TextRule(
    "snapshot name", NAME_MAX_CHARS, NAME_MAX_BYTES, no_padding=True, not_dots=True,
    why="as VM names: vSphere's 80 characters, and libvirt names a file after it")
DESCRIPTION = TextRule(
    "description", 1 << 20, DESCRIPTION_MAX_BYTES, multiline=True, allow_empty=True,
    why="8 KiB of UTF-8 is Proxmox's limit; CR LF and CR are stored as LF")
REFERENCE = TextRule(
    "reference", REFERENCE_MAX_CHARS, 4 * REFERENCE_MAX_CHARS,
    why="names of things that exist already (networks, storage, nodes, folders, pools, "
        "buses, models, guest OS ids): one line of text")
IMAGE_PATH = TextRule(
    "disk image", PATH_MAX_BYTES, PATH_MAX_BYTES,
    why="a local file path (made absolute before any tool sees it: a name like '--help' "
        "is a file, never an option) or, where the backend takes one, a platform path; "
        "4096 bytes is Linux's PATH_MAX")
LOOKUP = TextRule(
    "VM id or name", PATH_MAX_BYTES, PATH_MAX_BYTES,
    why="what ``get`` looks for: any text a name or id could be")

URI = TextRule(
    "URI", 8192, 8192, no_padding=True, secret=True,
    why="one line: URL parsers drop tabs, line breaks and padding without a word, which would "
        "change a password; never quoted in messages, it may hold one")

USER_NAME = TextRule(
    "user name", REFERENCE_MAX_CHARS, 4 * REFERENCE_MAX_CHARS,
    why="who to log in as: one line of text")


def check_secret(value: str, what: str) -> str:
    """A password or token: any text that can be sent (no lone surrogate, no NUL, which C
    APIs such as libvirt's end a string at). Never quoted in a message."""
    if not isinstance(value, str):
        raise invalid(what, "type", f"{what} must be a string, not {type(value).__name__}")
    if "\x00" in value:
        raise invalid(what, "control characters", f"{what} holds a NUL character, which cannot be sent")
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        raise invalid(what, "surrogates", f"{what} holds a lone surrogate, which cannot be encoded")
    return value


RULES: tuple[TextRule, ...] = (NAME, SNAPSHOT_NAME, DESCRIPTION, REFERENCE, IMAGE_PATH, LOOKUP, URI,
                               USER_NAME)


def rules_markdown() -> str:
    """The rules as a Markdown table, for the docs."""
    rows = ["| field | max characters | max UTF-8 bytes | lines | empty | padding | `.`, `..` | why |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rule in RULES:
        lines = "TAB, LF (CR LF, CR -> LF)" if rule.multiline else "one line"
        rows.append(
            f"| {rule.field} | {rule.max_chars} | {rule.max_bytes} | {lines} | "
            f"{'allowed' if rule.allow_empty else 'refused'} | "
            f"{'refused' if rule.no_padding else 'allowed'} | "
            f"{'refused' if rule.not_dots else 'allowed'} | {rule.why} |"
        )
    return "\n".join(rows)


__all__ = [
    "DESCRIPTION",
    "IMAGE_PATH",
    "LOOKUP",
    "NAME",
    "REFERENCE",
    "RULES",
    "SNAPSHOT_NAME",
    "URI",
    "USER_NAME",
    "TextRule",
    "check_secret",
    "invalid",
    "rules_markdown",
]
