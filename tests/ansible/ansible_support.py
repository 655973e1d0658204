"""Running the real ansible-playbook on the collection in this repository, from tests.

The collection is found where it lives (``ansible_collections/anyvirt/cloud`` at the repository's
root), its integration targets are the roles, and every module runs on localhost with this
interpreter: the one anyvirt and its backends are installed in.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs

REPO = Path(__file__).resolve().parents[2]
COLLECTION = REPO / "ansible_collections" / "anyvirt" / "cloud"
TARGETS = COLLECTION / "tests" / "integration" / "targets"
BIN = Path(sys.executable).parent
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)\s+skipped=\d+\s+rescued=\d+\s+"
    r"ignored=(?P<ignored>\d+)",
    re.MULTILINE,
)


@attrs.frozen
class PlaybookRun:
    returncode: int
    output: str
    recap: dict[str, dict[str, int]]
    seconds: float

    @property
    def changed(self) -> int:
        return sum(host["changed"] for host in self.recap.values())

    @property
    def failed(self) -> int:
        return sum(host["failed"] + host["unreachable"] for host in self.recap.values())


def ansible_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "ANYVIRT_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_COLLECTIONS_PATH=str(REPO),
        ANSIBLE_ROLES_PATH=str(TARGETS),
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_INVENTORY_UNPARSED_FAILED="1",  # an inventory source that fails is an error, not a warning
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_HOST_KEY_CHECKING="0",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_CALLBACK_RESULT_FORMAT="yaml",
        ANSIBLE_PIPELINING="1",  # a module runs from its standard input: no temporary files to copy
    )
    env.update(extra)
    return env


def role_playbook(directory: Path, *roles: str) -> Path:
    """A playbook that runs the integration targets ``roles`` on every host of the inventory."""
    path = directory / f"{'-'.join(roles)}.yml"
    play = [{"name": " then ".join(roles), "hosts": "all", "gather_facts": False, "roles": list(roles)}]
    path.write_text(json.dumps(play), encoding="utf-8")
    return path


def local_inventory(home: Path, hosts: dict[str, dict[str, Any]]) -> Path:
    """An inventory of hosts that all run on this machine (``ansible_connection: local``), each
    with its own variables (a platform's URI and password): a file only its owner reads."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "inventory.json"
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    path.write_text(
        json.dumps({"all": {"hosts": {name: {**local, **hostvars} for name, hostvars in hosts.items()}}}),
        encoding="utf-8",
    )
    path.chmod(0o600)
    return path


def run_playbook(
    playbook: Path, home: Path, inventory: Path, *args: str, timeout: float = 600
) -> PlaybookRun:
    """``ansible-playbook`` in a subprocess, one fork per host."""
    argv = [str(BIN / "ansible-playbook"), "-i", str(inventory), "--forks", "10", *args, str(playbook)]
    started = time.monotonic()
    done = subprocess.run(
        argv, env=ansible_env(home), capture_output=True, text=True, timeout=timeout, cwd=home, check=False
    )
    output = done.stdout + done.stderr
    recap = {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed", "ignored")}
        for m in RECAP.finditer(done.stdout)
    }
    return PlaybookRun(done.returncode, output, recap, time.monotonic() - started)
