"""Files the caller named (an image to write, an archive to read or write): an ``OSError``
on one is bad input, said with the path and the reason, never a raw ``FileNotFoundError``.

A full disk is ``StorageFull``; anything else (a directory that is not there,
a file system that takes no new files such as ``/proc``, no permission) is
``InvalidSpec``, the error for a path the caller can change.
"""

from __future__ import annotations

import errno

from anyvirt.errors import AnyvirtError, InvalidSpec, StorageFull

NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def path_error(exc: OSError, doing: str) -> AnyvirtError:
    """The typed error for ``exc``, raised while ``doing`` (e.g. ``"cannot write /x.img"``)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in NO_SPACE:
        return StorageFull(f"{doing}: {reason}")
    return InvalidSpec(f"{doing}: {reason}")


__all__ = ["NO_SPACE", "path_error"]
