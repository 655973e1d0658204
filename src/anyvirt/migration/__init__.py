"""Moving VMs across platforms, and backups that restore anywhere.

Both go through one neutral hardware description (``VMInfo``) and disk
files exported by the source driver, never through OVF: plan, power-off
guard, export, convert/import (the target's ``DiskSpec(image=...)`` path,
which runs ``qemu-img`` where formats differ), verify, then, only if asked,
removal of the source.
"""

from anyvirt.migration.archive import (
    UnverifiedArchiveWarning,
    backup,
    describe,
    read_manifest,
    restore,
    verify,
)
from anyvirt.migration.plan import MigrationPlan, MigrationWarning, WarningCode, plan_migration
from anyvirt.migration.transfer import migrate

__all__ = [
    "MigrationPlan",
    "MigrationWarning",
    "UnverifiedArchiveWarning",
    "WarningCode",
    "backup",
    "describe",
    "migrate",
    "plan_migration",
    "read_manifest",
    "restore",
    "verify",
]
