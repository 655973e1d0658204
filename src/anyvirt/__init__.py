"""anyvirt: one Python API for virtual machines.

    import anyvirt
    with anyvirt.connect("libvirt+qemu:///system") as host:
        vm = host.vms.create(anyvirt.VMSpec(name="web1", cpus=2, memory_mib=2048))
        vm.start()

Importing anyvirt imports no platform SDK: backends load when a URI asks for them.
"""

from anyvirt.connect import connect, default_uri
from anyvirt.deployment import Identity, User
from anyvirt.errors import (
    AlreadyExists,
    AmbiguousName,
    AnyvirtError,
    AuthenticationFailed,
    Cancelled,
    CapacityExceeded,
    ConnectionFailed,
    EvacuationIncomplete,
    InvalidSpec,
    InvalidState,
    NotFound,
    NotSupported,
    OutcomeUnknown,
    StorageFull,
    TaskFailed,
    Timeout,
)
from anyvirt.host import Host
from anyvirt.migration import MigrationPlan, MigrationWarning, WarningCode, migrate, plan_migration
from anyvirt.model import (
    Allocation,
    Capability,
    DiskInfo,
    DiskSpec,
    Firmware,
    HostInfo,
    MigrationResult,
    NicInfo,
    NicSpec,
    NodeInfo,
    Overcommit,
    PowerState,
    SnapshotInfo,
    StorageInfo,
    VMInfo,
    VMSpec,
    VMSummary,
)
from anyvirt.node import Node
from anyvirt.recovery.standalone import recover
from anyvirt.repository import BackupRepository
from anyvirt.snapshot import Snapshot
from anyvirt.tasks import Task, TaskState
from anyvirt.vm import VM

__version__ = "0.1.0"

__all__ = [
    "VM",
    "Allocation",
    "AlreadyExists",
    "AmbiguousName",
    "AnyvirtError",
    "AuthenticationFailed",
    "BackupRepository",
    "Cancelled",
    "Capability",
    "CapacityExceeded",
    "ConnectionFailed",
    "DiskInfo",
    "DiskSpec",
    "EvacuationIncomplete",
    "Firmware",
    "Host",
    "HostInfo",
    "Identity",
    "InvalidSpec",
    "InvalidState",
    "MigrationPlan",
    "MigrationResult",
    "MigrationWarning",
    "NicInfo",
    "NicSpec",
    "Node",
    "NodeInfo",
    "NotFound",
    "NotSupported",
    "OutcomeUnknown",
    "Overcommit",
    "PowerState",
    "Snapshot",
    "SnapshotInfo",
    "StorageFull",
    "StorageInfo",
    "Task",
    "TaskFailed",
    "TaskState",
    "Timeout",
    "User",
    "VMInfo",
    "VMSpec",
    "VMSummary",
    "WarningCode",
    "connect",
    "default_uri",
    "migrate",
    "plan_migration",
    "recover",
]
