"""The Proxmox VE testbed: fakepve, a third party's fake of the PVE API, in its own process.

fakepve is a test tool (AGPL-3.0) and never imported here: it is run as a
program (``python -m fakepve``), so it must be installed beside anyvirt
(``pip install 'fakepve[crypto]'``; the project's dev group has it). The
testbed writes a guests file for a cluster of ``nodes`` nodes
(``pve1`` ...), one guest per node at least and ``guests`` in all, makes a
self-signed certificate with ``openssl`` so clients verify TLS with ``?ca=``,
picks a free loopback port and a throwaway password, and waits until the
fake answers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

HOST = "127.0.0.1"
USER = "root@pam"
START_TIMEOUT = 30.0
FIRST_GUEST_ID = 1000  # creates get ids from 100 on, clear of the generated guests


def guests_file(nodes: int, guests: int) -> dict[str, Any]:
    """fakepve's guests document: ``guests`` VMs (at least one per node, so every node exists),
    spread over the nodes, every third one running."""
    count = max(guests, nodes)
    out = []
    for i in range(count):
        vmid = FIRST_GUEST_ID + i
        out.append({
            "vmid": vmid, "name": f"guest-{vmid}", "node": f"pve{i % nodes + 1}",
            "status": "running" if i % 3 == 0 else "stopped",
            "config": {"memory": 512, "cores": 1, "scsi0": f"local-lvm:vm-{vmid}-disk-0,size=1G",
                       "net0": f"virtio=BC:24:11:{i >> 16 & 0xFF:02X}:{i >> 8 & 0xFF:02X}:{i & 0xFF:02X},"
                               "bridge=vmbr0"},
        })
    return {"guests": out}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed CA certificate for 127.0.0.1 (and its key), made with openssl."""
    cert, key = directory / "fakepve.crt", directory / "fakepve.key"
    if shutil.which("openssl") is None:
        raise RuntimeError("the Proxmox testbed needs openssl to make its TLS certificate")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={HOST}",
         "-keyout", str(key), "-out", str(cert), "-addext", f"subjectAltName=IP:{HOST}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,digitalSignature,keyCertSign"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


class FakePveTestbed:
    """fakepve running in a child process; ``uri`` and ``password`` to connect with."""

    def __init__(self, nodes: int = 3, guests: int = 0, time_scale: float = 0.0) -> None:
        if nodes < 1:
            raise ValueError("a cluster has at least one node")
        self.nodes = nodes
        self.guests = guests
        self.time_scale = time_scale
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self.dir: Path | None = None
        self.cafile: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"proxmox://{quote(USER, safe='')}@{HOST}:{self.port}?ca={self.cafile}"

    def start(self) -> FakePveTestbed:
        if importlib.util.find_spec("fakepve") is None:
            raise RuntimeError("the Proxmox testbed runs fakepve, a test tool: pip install 'fakepve[crypto]'")
        self.dir = Path(tempfile.mkdtemp(prefix="anyvirt-fakepve-"))
        try:
            self.cafile, key = make_certificate(self.dir)
            guests = self.dir / "guests.json"
            guests.write_text(json.dumps(guests_file(self.nodes, self.guests)), encoding="utf-8")
            self.port = free_port()
            self._process = subprocess.Popen(
                [sys.executable, "-m", "fakepve", str(guests), "--host", HOST, "--port", str(self.port),
                 "--time-scale", str(self.time_scale), "--user", USER,
                 # one argument: a random password may start with '-', which argparse would
                 # take for an option of its own
                 f"--password={self.password}",
                 "--cert", str(self.cafile), "--key", str(key)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            self._wait_until_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"fakepve exited with {self._process.returncode}: {err.strip()[-500:]}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"fakepve did not listen on {HOST}:{self.port} within {START_TIMEOUT:g} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if process is not None and process.stderr is not None:
            process.stderr.close()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> FakePveTestbed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
