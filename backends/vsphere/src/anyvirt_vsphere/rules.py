"""vSphere's own rules for user strings, on top of the core's (``anyvirt.validation``).

The driver's ``check_*`` hooks call these; the gate calls the hooks before
anything is sent. Each rule says why it exists:

* **VM names** become datastore paths: a VM's files live in ``[ds] NAME/``.
  ``.`` and ``..`` would name the datastore's own directory or its parent
  (vcsim made a ``<datastore> (0)`` directory outside the datastore, left
  after delete): the core refuses those for every platform. vSphere stores
  ``%``, ``/`` and ``\\`` as three characters each (``%25``, ``%2f``,
  ``%5c``): the stored form must stay within vSphere's 80 characters and,
  as a file name with its longest suffix, within 255 bytes.
* **Datastore paths** (``DiskSpec(image="[ds] dir/x.vmdk")``) must stay inside
  their datastore: a relative path of plain components, never ``.`` or ``..``.
* **Datastore names** cannot hold brackets, which delimit them in paths.
"""

from __future__ import annotations

import re

from anyvirt.validation import NAME_MAX_BYTES, invalid
from anyvirt_vsphere.inventory import MAX_STORED_NAME, escape_name

_DATASTORE_PATH = re.compile(r"^\[([^\[\]]+)\] ?(.*)$", re.DOTALL)


def check_vm_name(name: str, what: str) -> None:
    # "." and ".." (a datastore directory of their own) the core refuses for every platform
    stored = escape_name(name)
    if len(stored) > MAX_STORED_NAME:
        raise invalid("VM name", "length",
                      f"{what} {name!r} is {len(stored)} characters as vSphere stores it ('/', '%' "
                      f"and '\\' count as three); the limit is {MAX_STORED_NAME}")
    size = len(stored.encode("utf-8"))
    if size > NAME_MAX_BYTES:
        raise invalid("VM name", "length",
                      f"{what} {name!r} is {size} bytes as vSphere stores it (escaped, UTF-8); the "
                      f"limit is {NAME_MAX_BYTES}, so that its datastore files can be named")


def check_storage_name(name: str, what: str) -> None:
    if "[" in name or "]" in name:
        raise invalid("storage", "brackets",
                      f"{what} {name!r}: a vSphere datastore name cannot contain brackets")


def is_datastore_path(image: str) -> bool:
    return image.startswith("[")


def check_datastore_path(image: str) -> None:
    """``[datastore] dir/x.vmdk``, staying inside the datastore."""
    match = _DATASTORE_PATH.match(image)
    if match is None:
        raise invalid("disk image", "datastore path",
                      f"disk image {image!r} is not a datastore path like '[datastore] dir/x.vmdk'")
    relative = match.group(2)
    parts = relative.split("/")
    if not relative or relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise invalid("disk image", "inside the datastore",
                      f"disk image {image!r}: a datastore path must be a relative path of plain "
                      "names inside its datastore (no '.', '..', '//' or leading '/')")
    if "\\" in relative:
        raise invalid("disk image", "inside the datastore",
                      f"disk image {image!r}: use '/' between the names of a datastore path")


__all__ = ["check_datastore_path", "check_storage_name", "check_vm_name", "is_datastore_path"]
