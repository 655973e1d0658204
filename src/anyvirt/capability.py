"""The ``Capability`` enum: what a connection can do.

A module of its own, importing nothing of anyvirt, so that the errors every layer raises
(``NotSupported`` names a capability) and the value types (``anyvirt.model``, which raises
those errors) both stand on it without importing each other. ``anyvirt.Capability`` and
``anyvirt.model.Capability`` are this one.
"""

from __future__ import annotations

import enum


class Capability(enum.Enum):
    """What a connection can do. Computed per connection, never assumed per backend."""

    VM_CREATE = "vm.create"
    VM_CREATE_FROM_IMAGE = "vm.create.from_image"
    VM_DELETE = "vm.delete"
    START = "vm.start"
    STOP = "vm.stop"  # graceful (ACPI / guest tools)
    POWER_OFF = "vm.power_off"  # stop(force=True)
    REBOOT = "vm.reboot"
    RESET = "vm.reset"
    PAUSE = "vm.pause"
    SUSPEND = "vm.suspend"
    RECONFIGURE = "vm.reconfigure"
    LIVE_RECONFIGURE = "vm.reconfigure.live"
    SNAPSHOTS = "snapshot"
    MEMORY_SNAPSHOTS = "snapshot.memory"
    FULL_CLONE = "clone.full"
    LINKED_CLONE = "clone.linked"
    CLONE_RUNNING = "clone.running"  # a crash-consistent clone of a running VM
    LINKED_CLONE_OF_TEMPLATE = "clone.linked.template"  # linked clones of templates (LINKED_CLONE: of any VM)
    COLD_MIGRATION = "migration.cold"
    LIVE_MIGRATION = "migration.live"
    COLD_MIGRATION_SNAPSHOTS = "migration.cold.snapshots"  # snapshots travel with the VM
    LIVE_MIGRATION_SNAPSHOTS = "migration.live.snapshots"
    TEMPLATES = "templates"  # mark a VM as a template; clone() deploys it
    TEMPLATE_TO_VM = "templates.convert"  # turn a template back into a VM
    DELETE_KEEP_DISKS = "vm.delete.keep_disks"  # delete(disks=False): the disks stay
    TASK_CANCEL = "task.cancel"
    DISK_EXPORT = "disk.export"  # backup, and the source side of a cross-platform move
    SNAPSHOT_DISK_EXPORT = "disk.export.snapshot"  # a running VM's disks as a snapshot froze them
    # the platform records changed blocks: a repository's incremental backup reads only them
    CHANGED_BLOCKS = "disk.changed_blocks"
    MAINTENANCE_MODE = "node.maintenance"
    IDENTITY = "identity"  # VMSpec(identity=) and clone(identity=): hostname, users, keys, network
    IDENTITY_USER_DATA = "identity.user_data"  # Identity(user_data=): arbitrary cloud-config
    GUEST_ADDRESSES = "guest.addresses"  # vm.addresses() and vm.wait_ready()
    CONSOLE = "vm.console"  # vm.console(): the serial console, read and written while it runs
    NODE_RECOVERY = "node.recover"  # host.recover(node): a failed node's VMs, each reported
    NODE_RECOVERY_RESTART = "node.recover.restart"  # anyvirt itself brings them up on a live node

    def __str__(self) -> str:
        return self.value


__all__ = ["Capability"]
