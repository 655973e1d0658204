"""The README's setup on a machine that has no uv: scripts/uv.sh brings one.

Debian 12's Python (like Ubuntu's) refuses ``pip install`` outside a virtualenv
(PEP 668), ``--user`` too, so a fresh Debian user stopped at the first step of the
tour. Here the machine's own ``python3`` runs with a PATH that holds no uv and a
fresh home; what comes back must be a uv that runs, and a second call reuses it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the distribution's interpreter, as a fresh user has it (not a pyenv shim, not .venv's)
SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no distribution python3 at /usr/bin")
def test_uv_sh_installs_uv_where_the_machine_has_none(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(SYSTEM_PYTHON)
    (bin_dir / "bash").symlink_to(shutil.which("bash") or "/bin/bash")
    path = str(bin_dir)
    assert shutil.which("uv", path=path) is None, "the simulation of a machine without uv did not take"
    home = tmp_path / "home"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYENV", "VIRTUAL_ENV", "UV_", "XDG_"))}
    env.update(PATH=path, HOME=str(home))

    def uv_sh() -> str:
        done = subprocess.run(["bash", str(ROOT / "scripts" / "uv.sh")], env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    uv = uv_sh()
    assert Path(uv).is_relative_to(home / ".local" / "share" / "anyvirt"), uv
    version = subprocess.run([uv, "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert version.stdout.startswith("uv ")
    assert uv_sh() == uv  # made once, then reused
