"""Record which driver methods that change things get called, to prove nothing was sent."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from anyvirt.host import Host

MUTATORS = (
    "create_vm", "delete_vm", "power", "reconfigure_vm", "create_snapshot", "revert_snapshot",
    "delete_snapshot", "clone_vm", "clone_vms", "migrate_vm", "set_maintenance", "mark_template",
    "convert_to_vm", "export_disks", "apply_identity", "recover_vm",
)


@contextlib.contextmanager
def recording(host: Host) -> Iterator[list[str]]:
    """Yield a list that fills with the names of mutating driver calls made inside the block."""
    driver = host.driver
    calls: list[str] = []
    originals: dict[str, Any] = {}
    for name in MUTATORS:
        original = getattr(driver, name)
        originals[name] = original

        def wrapper(*args: Any, _name: str = name, _orig: Any = original, **kwargs: Any) -> Any:
            calls.append(_name)
            return _orig(*args, **kwargs)

        setattr(driver, name, wrapper)
    try:
        yield calls
    finally:
        for name in MUTATORS:
            with contextlib.suppress(AttributeError):
                delattr(driver, name)  # drop the instance attribute; the class method shows again
