"""The ``key="value"`` format of ``showvminfo --machinereadable`` and ``snapshot list``.

What VirtualBox really prints, from 4.3 to 7.2 (VBoxManageInfo.cpp and the
captures in the tests):

* keys are bare (``memory=64``, ``BIOS NVRAM File=...``, ``vrdeproperty[TCP/Ports]=``)
  or quoted (``"SATA Controller-0-0"=...``);
* values are quoted strings, bare words (``<not set>``, ``1024x768``, even
  ``ac_enabled=false``) or a quoted part followed by bare text
  (``VideoMode="720,400,0"@0,0 1``);
* in quoted values newer releases escape ``"`` and ``\\`` with a backslash and
  older ones printed some fields raw (``C:\\Program Files\\...``), so a
  backslash escapes only a quote or a backslash and is kept otherwise;
* newlines are never escaped: a value may span lines. A quoted value ends at
  its first unescaped quote, whatever the lines inside it look like: a
  description holding ``x"`` + newline + ``UUID=...`` is printed
  ``description="x\\"`` + newline + ``UUID=...`` by 7.2, one value. Only
  ``raw_paths=True`` (old releases' captures) guesses that ``"C:\\"`` closed
  a raw Windows path, a guess such a description can fool;
* a key is never printed twice, so the first occurrence wins: a line a user's
  value forged after the real one (in a raw snapshot value, or through the
  ``raw_paths`` guess) cannot replace it. Identity and state are still not
  taken from here alone (see machines);
* the snapshot keys (``SnapshotName-1-2``, ``SnapshotDescription``, ...) are
  printed raw even by 7.2 (``SnapshotDescription="first "one""``): a snapshot
  value runs from its first quote to the last quote before the next key line;
* lines without ``=`` turn up (`` rec_screen0``, ``Encryption:     disabled``)
  and so does the Debian wrapper's ``WARNING:`` block before the output.
"""

from __future__ import annotations

import re

import attrs

# Snapshot keys: the tree path is the -N suffix. Their values are printed raw.
SNAPSHOT_KEY = re.compile(
    r"^(?:SnapshotName|SnapshotUUID|SnapshotDescription|CurrentSnapshotName|CurrentSnapshotUUID"
    r"|CurrentSnapshotNode)(?:-\d+)*="
)
# A line that starts a new entry: a quoted key, or a bare key that looks like one.
_KEY_LINE = re.compile(r'^(?:"(?:[^"\\]|\\.)*"|[A-Za-z][\w\-\[\]/(). ]*)=')
_DRIVER_WARNING = re.compile(r"^WARNING: The (?:character device /dev/vboxdrv|vboxdrv kernel module)")


@attrs.frozen
class Parsed:
    """The entries in output order, plus the lines that were not entries."""

    values: dict[str, str]
    loose_lines: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()  # keys seen again: forged by a value, never by VirtualBox

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)


def split_driver_warning(text: str) -> tuple[str, str]:
    """``(warning, rest)``: the kernel-driver warning a host without ``vboxdrv`` prints first.

    Debian's and Oracle's ``VBoxManage`` wrappers print it on stdout before every
    command's own output: a ``WARNING:`` line, indented continuation lines and
    blank lines, ending with the "You will not be able to start VMs" line.
    """
    if not _DRIVER_WARNING.match(text):
        return "", text
    lines = text.splitlines(keepends=True)
    end = 0
    for i, line in enumerate(lines):
        if i == 0 or not line.strip() or line[:1] in (" ", "\t"):
            end = i + 1
            if "You will not be able to start VMs" in line:
                break
            continue
        break
    return "".join(lines[:end]).strip(), "".join(lines[end:])


def parse(text: str, *, raw_paths: bool = False) -> Parsed:
    """Parse machine-readable output into its entries (the first of a duplicate key wins).

    ``raw_paths``: the output may come from an old release printing Windows paths
    unescaped, so a quoted value ending in ``\\"`` closes there when a key line follows.
    """
    warning, text = split_driver_warning(text)
    lines = text.splitlines()
    values: dict[str, str] = {}
    duplicates: list[str] = []
    loose: list[str] = []
    warnings = [warning] if warning else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(("WARNING:", "VBoxManage: warning:")):
            warnings.append(line)
            i += 1
            continue
        key, rest = _split_key(line)
        if key is None:
            if line.strip():
                loose.append(line)
            i += 1
            continue
        if SNAPSHOT_KEY.match(line):
            value, i = _raw_value(rest, lines, i)
        elif rest.startswith('"'):
            value, i = _quoted_value(rest, lines, i, raw_paths)
        else:
            value, i = rest, i + 1
        if key in values:
            duplicates.append(key)
            continue
        values[key] = value
    return Parsed(
        values=values, loose_lines=tuple(loose), warnings=tuple(warnings), duplicates=tuple(duplicates)
    )


def _split_key(line: str) -> tuple[str | None, str]:
    """``(key, text after '=')``, or ``(None, line)`` for a line that is not an entry."""
    if line.startswith('"'):
        key, end = _scan_quoted(line, 1)
        if end is not None and line[end + 1 : end + 2] == "=":
            return key, line[end + 2 :]
        return None, line
    if "=" not in line or line[:1] in (" ", "\t"):
        return None, line
    key, _, rest = line.partition("=")
    return key, rest


def _scan_quoted(text: str, start: int) -> tuple[str, int | None]:
    """The string from ``start`` up to an unescaped quote: ``(content, index of that quote)``,
    or ``(content to the end, None)``. A backslash escapes only a quote or a backslash."""
    chars: list[str] = []
    j = start
    while j < len(text):
        c = text[j]
        if c == "\\" and j + 1 < len(text) and text[j + 1] in '"\\':
            chars.append(text[j + 1])
            j += 2
            continue
        if c == '"':
            return "".join(chars), j
        chars.append(c)
        j += 1
    return "".join(chars), None


def _quoted_value(rest: str, lines: list[str], i: int, raw_paths: bool) -> tuple[str, int]:
    """A quoted value starting on line ``i``; returns it and the index of the next line."""
    out: list[str] = []
    text = rest[1:]
    while True:
        part, end = _scan_quoted(text, 0)
        out.append(part)
        if end is not None:
            # closed: anything after the quote (VideoMode's "@0,0 1") is kept as it is
            return "".join(out) + text[end + 1 :], i + 1
        # the line ended inside the string
        if raw_paths and _raw_backslash_before_last_quote(text) and _ends_entry(lines, i + 1):
            # an old release's raw Windows path ending in a backslash ("C:\"): the last
            # quote closes it, the backslash was not an escape
            return "".join(out[:-1]) + _unescape_all_but_last(text), i + 1
        if i + 1 >= len(lines):
            return "".join(out), i + 1
        out.append("\n")
        i += 1
        text = lines[i]


def _raw_backslash_before_last_quote(text: str) -> bool:
    stripped = text.rstrip('"')
    return text.endswith('\\"') and (len(text) - len(stripped)) == 1


def _unescape_all_but_last(text: str) -> str:
    body = text[:-1]
    return re.sub(r'\\([\\"])(?!$)', r"\1", body)


def _ends_entry(lines: list[str], nxt: int) -> bool:
    return nxt >= len(lines) or bool(_KEY_LINE.match(lines[nxt]))


def _raw_value(rest: str, lines: list[str], i: int) -> tuple[str, int]:
    """A snapshot value: printed raw, so it runs to the last quote before the next snapshot key."""
    chunk = [rest]
    i += 1
    while i < len(lines) and not SNAPSHOT_KEY.match(lines[i]) and not _is_plain_key_after_snapshots(lines[i]):
        chunk.append(lines[i])
        i += 1
    text = "\n".join(chunk)
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return text[1:-1], i
    if text.startswith('"') and '"' in text[1:]:
        return text[1 : text.rindex('"')], i
    return text, i


# showvminfo prints the snapshot block and then carries on with plain keys
# (GuestMemoryBalloon=0 in 6.x and 7.x): such a line ends a raw snapshot value.
_PLAIN_AFTER_SNAPSHOTS = re.compile(r"^(?:Guest[A-Za-z]*|[a-z][A-Za-z0-9_\-]*)=\S")


def _is_plain_key_after_snapshots(line: str) -> bool:
    return bool(_PLAIN_AFTER_SNAPSHOTS.match(line))
