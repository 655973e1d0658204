"""Full and linked clones with ``clonevm``.

A full clone copies the VM's current state. VirtualBox links a clone only to
a snapshot, so a linked clone "of the current state" links to the current
snapshot when the VM has not changed since it, and otherwise to a new
snapshot of the source named ``anyvirt-clone-base <clone name>``, which the
clone then depends on. Clones get new MAC addresses (``clonevm``'s default)
and the UUID chosen here, so a failed clone can be removed.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

from anyvirt.errors import AnyvirtError
from anyvirt.tasks import Job
from anyvirt_virtualbox import machines, templates
from anyvirt_virtualbox.runner import VBoxManage
from anyvirt_virtualbox.settings import TEMPLATE_KEY
from anyvirt_virtualbox.snapshots import create_snapshot

BASE_SNAPSHOT_PREFIX = "anyvirt-clone-base "


def _link_snapshot(vbox: VBoxManage, home: Path | None, vm_id: str, name: str, job: Job) -> str:
    path = machines.settings_path(vbox, vm_id)
    facts = machines.facts_for(vbox, vm_id)
    unchanged = path is not None and not _modified_since_snapshot(path)
    if facts is not None and facts.current_snapshot and unchanged:
        return facts.current_snapshot
    snap = create_snapshot(
        vbox,
        home,
        vm_id,
        f"{BASE_SNAPSHOT_PREFIX}{name}",
        "the base a linked clone reads from",
        memory=False,
        job=job,
    )
    return snap.id


def _modified_since_snapshot(cfg: Path) -> bool:
    """VirtualBox's own flag in the ``.vbox`` file: the state differs from the current snapshot."""
    try:
        with open(cfg, "rb") as f:
            head = f.read(4096)
    except OSError:
        return True
    return b'currentStateModified="false"' not in head


def clone_vm(vbox: VBoxManage, home: Path | None, vm_id: str, name: str, linked: bool, job: Job) -> str:
    new_id = str(uuid.uuid4())
    of_template = templates.is_template(vbox, vm_id)
    args = ["clonevm", vm_id, "--name", name, "--uuid", new_id, "--register"]
    if linked:
        args += ["--snapshot", _link_snapshot(vbox, home, vm_id, name, job), "--options", "link"]
    job.progress(10, f"cloning as {name}")
    try:
        vbox.run(args, f"cloning VM {vm_id} as {name!r}", timeout=job.remaining(3600.0))
        if of_template:  # clonevm copied the template mark with the extra data: a clone is a VM
            vbox.run(["setextradata", new_id, TEMPLATE_KEY], f"unmarking the clone {name!r}",
                     timeout=job.remaining(120.0))
    except BaseException:
        with contextlib.suppress(AnyvirtError):
            vbox.run(["unregistervm", new_id, "--delete"], "removing the half-made clone", timeout=60.0)
        raise
    return new_id
