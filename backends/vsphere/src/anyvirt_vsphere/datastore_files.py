"""Datastore files over HTTPS: the ``/folder`` interface of vCenter and ESXi.

``PUT``/``GET https://server/folder/<path>?dcPath=<datacenter>&dsName=<datastore>``
moves files in and out of a datastore. Disk images are large, so both ways
stream in chunks: an upload sends a file object (http.client reads it block
by block; the size comes from ``Content-Length``) and a download copies the
response into the destination chunk by chunk. No whole file is ever held in
memory.

The connection uses the session's own TLS context (verified unless the URI
said ``verify=false``) and its session cookie, and the call timeout applies
to every socket operation. Path, datacenter and datastore names are
URL-quoted: user strings never reach the URL raw.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

from anyvirt.errors import AuthenticationFailed, ConnectionFailed, InvalidSpec, NotFound
from anyvirt_vsphere.errors import transport_error
from anyvirt_vsphere.inventory import escape_name

CHUNK = 1024 * 1024


def _driver(host: Any) -> Any:
    """The VSphereDriver behind ``host`` (a Host or the driver itself).

    Checked by what it has, not by class, so this module does not import the
    driver (which imports the modules that upload disk images through here).
    """
    driver = getattr(host, "driver", host)
    if getattr(driver, "backend", None) != "vsphere" or not hasattr(driver, "session"):
        raise InvalidSpec("datastore files need a vsphere:// or esxi:// connection")
    return driver


def _url_path(driver: Any, datastore: str, path: str, datacenter: str | None) -> str:
    clean = path.strip("/")
    if not clean or any(part in ("", ".", "..") for part in clean.split("/")):
        raise InvalidSpec(f"datastore path {path!r} must be a relative path like 'dir/disk.vmdk'")
    # dcPath is an inventory path: the datacenter's stored (escaped) name
    if datacenter is None:
        dc_path = str(driver.inventory.datacenter().get("name", ""))
    else:
        dc_path = escape_name(datacenter)
    query = urlencode({"dcPath": dc_path, "dsName": escape_name(datastore)})
    return f"/folder/{quote(clean, safe='/')}?{query}"


@contextlib.contextmanager
def _connection(driver: Any) -> Iterator[http.client.HTTPConnection]:
    session = driver.session
    session.check_open("a datastore transfer")
    conn: http.client.HTTPConnection
    if session.plain_http:
        conn = http.client.HTTPConnection(driver.target.host, session.port, timeout=session.timeout)
    else:
        conn = http.client.HTTPSConnection(
            driver.target.host, session.port, timeout=session.timeout, context=session.ssl_context
        )
    try:
        yield conn
    finally:
        conn.close()


def _check(response: http.client.HTTPResponse, what: str) -> None:
    if response.status in (200, 201, 204):
        return
    body = response.read(2048).decode("utf-8", "replace").strip()
    detail = f"HTTP {response.status} {response.reason}" + (f": {body[:200]}" if body else "")
    if response.status == 404:
        raise NotFound(f"{what}: {detail}")
    if response.status in (401, 403):
        raise AuthenticationFailed(f"{what}: {detail}")
    raise ConnectionFailed(f"{what}: {detail}")


def upload(
    host: Any,
    datastore: str,
    path: str,
    source: str | os.PathLike[str] | IO[bytes],
    *,
    datacenter: str | None = None,
    size: int | None = None,
) -> int:
    """Stream ``source`` (a file path or a binary file object) to ``[datastore] path``.

    ``host`` is an ``anyvirt.Host`` (or the driver) of a vSphere connection.
    For a file object that is not a regular file, give ``size``. Returns the
    number of bytes sent.
    """
    driver = _driver(host)
    what = f"uploading to [{datastore}] {path}"
    url = _url_path(driver, datastore, path, datacenter)
    with contextlib.ExitStack() as stack:
        if isinstance(source, str | os.PathLike):
            stream: IO[bytes] = stack.enter_context(Path(source).open("rb"))
        else:
            stream = source
        if size is None:
            try:
                size = os.fstat(stream.fileno()).st_size - stream.tell()
            except (OSError, AttributeError, ValueError):
                raise InvalidSpec(f"{what}: give size= for a stream of unknown length") from None
        conn = stack.enter_context(_connection(driver))
        headers = {
            "Cookie": driver.session.cookie,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        }
        try:
            conn.request("PUT", url, body=stream, headers=headers)
            response = conn.getresponse()
            _check(response, what)
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise transport_error(exc, what) from exc
    return size


def download(
    host: Any,
    datastore: str,
    path: str,
    destination: str | os.PathLike[str] | IO[bytes],
    *,
    datacenter: str | None = None,
) -> int:
    """Stream ``[datastore] path`` into ``destination`` (a file path or binary file object).

    Returns the number of bytes written. A partial file is removed when the
    destination is a path and the transfer fails.
    """
    driver = _driver(host)
    what = f"downloading [{datastore}] {path}"
    url = _url_path(driver, datastore, path, datacenter)
    target_path = Path(destination) if isinstance(destination, str | os.PathLike) else None
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(_connection(driver))
        try:
            conn.request("GET", url, headers={"Cookie": driver.session.cookie})
            response = conn.getresponse()
            _check(response, what)
            if target_path is not None:
                out: IO[bytes] = stack.enter_context(target_path.open("wb"))
            else:
                assert not isinstance(destination, str | os.PathLike)
                out = destination
            counter = _CountingWriter(out)
            try:
                shutil.copyfileobj(response, counter, CHUNK)
            except BaseException:
                if target_path is not None:
                    out.close()
                    target_path.unlink(missing_ok=True)
                raise
        except (OSError, http.client.HTTPException) as exc:
            raise transport_error(exc, what) from exc
    return counter.written


class _CountingWriter:
    """Counts bytes on their way to the real destination."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.written = 0

    def write(self, data: bytes) -> int:
        self.written += len(data)
        return self.out.write(data)


__all__ = ["download", "upload"]
