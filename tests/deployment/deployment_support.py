"""Helpers of the deployment tests: SSH keys made here, and Debian's own cloud-init.

Keys are built in the SSH wire format (RFC 4253) from bytes derived from their comment: the parser checks
structure, not curve arithmetic, so no key generator is needed; one real key from
ssh-keygen is checked as well where ssh-keygen is installed by the test's own run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

DEBIAN_PYTHON = "/usr/bin/python3"
CLOUD_INIT = "/usr/bin/cloud-init"


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def key_bytes(size: int, seed: str) -> bytes:
    """Key material that is the same in every process (the seed tests compare bytes)."""
    return hashlib.shake_256(seed.encode()).digest(size)


def key_blob(key_type: str, seed: str = "") -> bytes:
    if key_type == "ssh-ed25519":
        return ssh_string(b"ssh-ed25519") + ssh_string(key_bytes(32, key_type + seed))
    if key_type == "ssh-rsa":
        modulus = b"\x00\xc1" + key_bytes(255, key_type + seed)
        return ssh_string(b"ssh-rsa") + ssh_string(b"\x01\x00\x01") + ssh_string(modulus)
    curve = {"ecdsa-sha2-nistp256": (b"nistp256", 65), "ecdsa-sha2-nistp384": (b"nistp384", 97),
             "ecdsa-sha2-nistp521": (b"nistp521", 133)}[key_type]
    point = b"\x04" + key_bytes(curve[1] - 1, key_type + seed)
    return ssh_string(key_type.encode()) + ssh_string(curve[0]) + ssh_string(point)


def make_key(key_type: str = "ssh-ed25519", comment: str = "ops@laptop", blob: bytes | None = None) -> str:
    data = base64.b64encode(blob if blob is not None else key_blob(key_type, comment)).decode()
    return f"{key_type} {data} {comment}".rstrip()


@pytest.fixture(scope="session")
def debian_cloud_init() -> str:
    """Debian's cloud-init: installed by scripts/system-packages.sh test. Missing is a failure."""
    if not Path(CLOUD_INIT).exists() or subprocess.run(
            [DEBIAN_PYTHON, "-c", "import cloudinit"], capture_output=True).returncode:
        pytest.fail("Debian's cloud-init is not installed: run scripts/system-packages.sh test")
    if not shutil.which("xorriso"):
        pytest.fail("xorriso is not installed: run scripts/system-packages.sh test")
    return CLOUD_INIT


def run_debian_python(script: str, payload: Any) -> Any:
    """Run ``script`` in Debian's Python (where cloudinit lives) with ``payload`` as JSON on
    stdin; the script prints JSON, which is returned."""
    done = subprocess.run([DEBIAN_PYTHON, "-c", script], input=json.dumps(payload), text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
