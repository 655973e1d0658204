"""SSH public keys, parsed rather than trusted: one key per string, in OpenSSH's
``authorized_keys`` form without options (``TYPE BASE64 [comment]``).

The base64 blob must decode strictly, its wire structure (RFC 4253 section 6.6,
RFC 5656 section 3.1, RFC 8709 section 4) must be complete with nothing after it,
and the type it names inside must be the one written in front of it: a key
that says ``ssh-ed25519`` but carries an RSA blob is refused, as sshd would
ignore it. Options (``command="..."``, ``from=...``) are refused: a deployment
grants a login, never a forced command smuggled in a key string.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import unicodedata

from anyvirt.validation import invalid

FIELD = "SSH key"
#: a 16384-bit RSA key (the largest ssh-keygen makes) is about 2.8 KB of base64
MAX_KEY_CHARS = 8192
MAX_COMMENT_CHARS = 1024

_CURVES = {
    "ecdsa-sha2-nistp256": ("nistp256", 65),
    "ecdsa-sha2-nistp384": ("nistp384", 97),
    "ecdsa-sha2-nistp521": ("nistp521", 133),
}
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", *_CURVES)
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def _line_breaking(ch: str) -> bool:
    """Control characters (tab aside) and the Unicode line and paragraph separators, which
    YAML and some shells treat as line breaks."""
    return ch != "\t" and (unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029")


class _Reader:
    """The SSH wire format: uint32 big-endian length, then that many bytes."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.at = 0

    def string(self) -> bytes:
        if self.at + 4 > len(self.blob):
            raise ValueError("truncated")
        (size,) = struct.unpack_from(">I", self.blob, self.at)
        start = self.at + 4
        if start + size > len(self.blob):
            raise ValueError("truncated")
        self.at = start + size
        return self.blob[start:self.at]

    def done(self) -> bool:
        return self.at == len(self.blob)


def _check_blob(key_type: str, blob: bytes) -> str | None:
    """What is wrong with the blob, or None."""
    reader = _Reader(blob)
    try:
        inner = reader.string()
        if inner != key_type.encode():
            return f"its data is a {inner.decode('ascii', 'replace')!r} key, not {key_type!r}"
        if key_type == "ssh-ed25519":
            if len(reader.string()) != 32:
                return "an Ed25519 key is 32 bytes"
        elif key_type == "ssh-rsa":
            exponent, modulus = reader.string(), reader.string()
            if not exponent or not modulus or len(modulus.lstrip(b"\0")) * 8 < 1024:
                return "an RSA key needs an exponent and a modulus of at least 1024 bits"
        else:
            curve, point_size = _CURVES[key_type]
            if reader.string() != curve.encode():
                return f"the curve inside is not {curve}"
            point = reader.string()
            if len(point) != point_size or point[0] != 4:
                return "the curve point is not an uncompressed point of the right size"
    except ValueError:
        return "its data is truncated"
    if not reader.done():
        return "its data has bytes after the key"
    return None


def parse_ssh_key(value: object) -> str:
    """The key as one normalised line (``TYPE BASE64`` or ``TYPE BASE64 comment``), or
    :class:`~anyvirt.errors.InvalidSpec` naming what is wrong. Keys are public:
    messages may quote their type, never the whole line (it can be long)."""
    if not isinstance(value, str):
        raise invalid(FIELD, "type", f"an SSH key must be a string, not {type(value).__name__}")
    if len(value) > MAX_KEY_CHARS:
        raise invalid(FIELD, "length", f"an SSH key is at most {MAX_KEY_CHARS} characters, "
                                       f"not {len(value)}")
    value = value.rstrip("\r\n")  # a key read from its .pub file ends in a line break
    if any(_line_breaking(ch) for ch in value):
        raise invalid(FIELD, "control characters",
                      "an SSH key is one line: it must not contain line breaks or control characters")
    parts = value.strip().split(None, 2)
    if len(parts) < 2:
        raise invalid(FIELD, "format", "an SSH key is 'TYPE BASE64 [comment]', e.g. 'ssh-ed25519 AAAA... "
                                       "me@laptop'")
    key_type, data = parts[0], parts[1]
    comment = parts[2].strip() if len(parts) == 3 else ""
    if key_type not in KEY_TYPES:
        hint = (" (authorized_keys options such as command= are refused)"
                if "=" in key_type or '"' in key_type else "")
        raise invalid(FIELD, "key type",
                      f"SSH key type {key_type[:40]!r} is not one of {', '.join(KEY_TYPES)}{hint}")
    if not _BASE64.fullmatch(data) or len(data) % 4:
        raise invalid(FIELD, "encoding", f"the {key_type} key's data is not base64")
    try:
        blob = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise invalid(FIELD, "encoding", f"the {key_type} key's data is not base64") from None
    why = _check_blob(key_type, blob)
    if why:
        raise invalid(FIELD, "key data", f"the {key_type} key is not a valid key: {why}")
    if len(comment) > MAX_COMMENT_CHARS:
        raise invalid(FIELD, "length", f"an SSH key's comment is at most {MAX_COMMENT_CHARS} characters")
    if any(ord(ch) >= 0xD800 and ord(ch) <= 0xDFFF for ch in comment):
        raise invalid(FIELD, "surrogates", "an SSH key's comment holds a lone surrogate")
    return f"{key_type} {data} {comment}" if comment else f"{key_type} {data}"


__all__ = ["KEY_TYPES", "parse_ssh_key"]
