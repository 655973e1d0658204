"""Host names by RFC 1123 (section 2.1, on RFC 952): what a guest may call itself.

A host name is one or more labels joined by dots; a label is 1 to 63 ASCII
letters, digits and hyphens, neither starting nor ending with a hyphen; the
whole is at most 253 characters. The last label is never all digits, so a
name can never be read as an IPv4 address (``10.0.0.1``, or ``123``, which
``ping`` takes for 0.0.0.123).

A VM name becomes a host name by :func:`hostname_from_name`: letters are
lower-cased, ``_``, ``.`` and spaces become ``-``; anything else (non-ASCII
letters, punctuation) is refused rather than dropped, so two VM names never
silently turn into the same host name by losing characters.
"""

from __future__ import annotations

import re

from anyvirt.validation import invalid

FIELD = "hostname"
MAX_LABEL = 63
MAX_NAME = 253
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def check_hostname(value: object, what: str = FIELD) -> str:
    """The host name as given (case kept), or ``InvalidSpec`` naming the rule broken."""
    if not isinstance(value, str):
        raise invalid(FIELD, "type", f"{what} must be a string, not {type(value).__name__}")
    shown = repr(value[:80])
    if not value:
        raise invalid(FIELD, "empty", f"{what} must not be empty")
    if len(value) > MAX_NAME:
        raise invalid(FIELD, "length", f"{what} is {len(value)} characters long; RFC 1123 allows "
                                       f"{MAX_NAME}")
    labels = value.split(".")
    for label in labels:
        if len(label) > MAX_LABEL:
            raise invalid(FIELD, "length", f"{what} {shown} has a label longer than {MAX_LABEL} "
                                           "characters")
        if not _LABEL.fullmatch(label):
            raise invalid(FIELD, "characters",
                          f"{what} {shown} is not an RFC 1123 host name: labels of ASCII letters, "
                          "digits and inner hyphens, joined by single dots")
    if labels[-1].isdigit():
        raise invalid(FIELD, "numeric", f"{what} {shown} ends in an all-digit label, which reads as "
                                        "an IP address")
    return value


def hostname_from_name(name: str) -> str:
    """The one-label host name a VM named ``name`` gets (see the module's rule)."""
    mapped = []
    for ch in name:
        if ch in "_. ":
            mapped.append("-")
        elif ch.isascii() and (ch.isalnum() or ch == "-"):
            mapped.append(ch.lower())
        else:
            raise invalid(FIELD, "characters",
                          f"VM name {name[:80]!r} cannot become a host name: {ch!r} is not an "
                          "ASCII letter, digit, '-', '_', '.' or space (give Identity(hostname=...))")
    label = "".join(mapped)
    if label.startswith("-") or label.endswith("-"):
        raise invalid(FIELD, "characters",
                      f"VM name {name[:80]!r} cannot become a host name: it would start or end "
                      "with '-' (give Identity(hostname=...))")
    return check_hostname(label, f"the host name made of VM name {name[:80]!r}")


__all__ = ["check_hostname", "hostname_from_name"]
