"""A backup in its own process, for tests that cut it (kill -9) or freeze it (SIGSTOP).

Usage: python backup_process.py REPO IMAGE NAME -> prints "started" once the VM exists, then
the restore point's id when the backup is done.
"""

from __future__ import annotations

import sys

import anyvirt
from anyvirt import DiskSpec, VMSpec


def main(repo_url: str, image: str, name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    vm = host.vms.create(VMSpec(name=name, cpus=1, memory_mib=128, disks=[DiskSpec(image=image)]))
    repo = anyvirt.BackupRepository(repo_url, create=False)
    print("started", flush=True)
    print(repo.backup(vm).id, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
