"""anyvirt's error messages in the command line's own terms.

The core and the drivers word their hints for Python callers
(``stop(force=True)``, ``clone()`` it); at the command line the same hint names
the command or flag (``anyvirt vm stop --force``). Messages also name what the
user typed: a VM or node id the command already resolved becomes its name.
And a state the message states twice (``it is running; it is already
running``) is said once.
"""

from __future__ import annotations

import re

#: Python hints -> CLI hints; applied in order, each a whole-word match
_HINTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"\bstop\(force=True\)", "`anyvirt vm stop --force`"),
        (r"\bclone\(?\)? it to get a VM that runs",
         "`anyvirt template deploy` makes a VM of it, `anyvirt template convert` turns it back"),
        (r"\bforce=True\b", "--force"),
        (r"\ba forced power-off\b", "`anyvirt vm stop --force`"),
        (r"\bhost\.evacuate\(node, maintenance=True\)", "`anyvirt node evacuate --maintenance`"),
        (r"\bhost\.evacuate\(node\)", "`anyvirt node evacuate`"),
        (r"\bfenced=True\b", "--fenced"),
        (r"\breconfigure\(\) needs cpus or memory_mib", "reconfigure needs --cpus or --memory"),
        (r"\bgive to=\[\.\.\.\]", "give --to"),
        (r"\bmigrate\(to=\.\.\.\)", "`anyvirt vm migrate`"),
        (r"\banyvirt\.connect\(\) again", "run the command again"),
        (r"\bDiskSpec\.storage\b", "the disk's storage"),
        (r"(?<![\w.`])(start|stop|resume|reset|suspend|pause|reboot|delete|clone)\(\)",
         r"`anyvirt vm \1`"),
    )
)

_SAID_TWICE = re.compile(r"\bit is (\w+); it is already \1\b")
#: "cannot delete VM 'web1': 'web1' is running": the name once is enough
_NAMED_TWICE = re.compile(r"(\bVM (['\"])(.+?)\2): \2\3\2 is\b")


def for_cli(message: str, names: dict[str, str] | None = None) -> str:
    """``message`` with CLI hints, ids replaced by the names in ``names``, nothing said twice."""
    for pattern, replacement in _HINTS:
        message = pattern.sub(replacement, message)
    message = _SAID_TWICE.sub(r"it is already \1", message)
    message = _NAMED_TWICE.sub(r"\1: it is", message)
    for ident, name in (names or {}).items():
        if ident and ident != name and len(ident) >= 4:
            message = message.replace(f"VM {ident}", f"VM {name!r}").replace(ident, name)
    return message


class Names:
    """ids the command resolved to names, so that messages can say what the user typed."""

    def __init__(self) -> None:
        self.by_id: dict[str, str] = {}

    def remember(self, ident: str | None, name: str | None) -> None:
        if ident and name:
            self.by_id[ident] = name

    def name_of(self, ident: str | None) -> str:
        if not ident:
            return ""
        return self.by_id.get(ident, ident)


#: one per process: a command runs once per process
seen = Names()
