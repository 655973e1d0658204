"""Datastore files over HTTPS: the ``/folder`` interface of vCenter and ESXi.

``PUT``/``GET https://server/folder/<path>?dcPath=<datacenter>&dsName=<datastore>``
moves files in and out of a datastore. Disk images are large, so both ways
stream in chunks through the kit's metered streams: an upload sends a file
object (http.client reads it block by block; the size comes from
``Content-Length``) and a download copies the response into the destination
chunk by chunk. No whole file is ever held in memory, and both ways count
the bytes against the declared length and hash them on the way: a
connection cut half-way is an error, never a short file.

The connection uses the session's own TLS context (verified unless the URI
said ``verify=false``) and its session cookie, and the call timeout applies
to every socket operation. Path, datacenter and datastore names are
URL-quoted: user strings never reach the URL raw.
"""

from __future__ import annotations

import contextlib
import http.client
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

from anyvirt.errors import (
    AnyvirtError,
    AuthenticationFailed,
    ConnectionFailed,
    InvalidSpec,
    NotFound,
    TaskFailed,
)
from anyvirt.kit import streams
from anyvirt.tasks import Job
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
    job: Job | None = None,
) -> int:
    """Stream ``source`` (a file path or a binary file object) to ``[datastore] path``.

    ``host`` is an ``anyvirt.Host`` (or the driver) of a vSphere connection.
    For a file object that is not a regular file, give ``size``. Returns the
    number of bytes sent.
    """
    return send(host, datastore, path, source, datacenter=datacenter, size=size, job=job).bytes


def send(
    host: Any,
    datastore: str,
    path: str,
    source: str | os.PathLike[str] | IO[bytes] | streams.Readable,
    *,
    datacenter: str | None = None,
    size: int | None = None,
    job: Job | None = None,
    span: tuple[float, float] = (0.0, 100.0),
) -> streams.Transfer:
    """:func:`upload`, returning what went out (bytes, sha256, time). A source that ends
    early or runs long fails the upload instead of sending a short or cut file."""
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
                size = os.fstat(stream.fileno()).st_size - stream.tell()  # type: ignore[union-attr]
            except (OSError, AttributeError, ValueError):
                raise InvalidSpec(f"{what}: give size= for a stream of unknown length") from None
        body = streams.MeteredReader(stream, size, job=job, what=what, span=span)
        conn = stack.enter_context(_connection(driver))
        headers = {
            "Cookie": driver.session.cookie,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        }
        try:
            conn.request("PUT", url, body=body, headers=headers)
            response = conn.getresponse()
            _check(response, what)
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise transport_error(exc, what) from exc
        if body.transfer is None:  # the server answered before taking every byte
            raise ConnectionFailed(f"{what}: the server answered after {body.meter.count} of "
                                   f"{size} bytes")
    return body.transfer


def download(
    host: Any,
    datastore: str,
    path: str,
    destination: str | os.PathLike[str] | IO[bytes],
    *,
    datacenter: str | None = None,
    job: Job | None = None,
) -> int:
    """Stream ``[datastore] path`` into ``destination`` (a file path or binary file object).

    Returns the number of bytes written. A partial file is removed when the
    destination is a path and the transfer fails.
    """
    return fetch(host, datastore, path, destination, datacenter=datacenter, job=job).bytes


def fetch(
    host: Any,
    datastore: str,
    path: str,
    destination: str | os.PathLike[str] | IO[bytes],
    *,
    datacenter: str | None = None,
    job: Job | None = None,
    max_size: int | None = None,
    span: tuple[float, float] = (0.0, 100.0),
) -> streams.Transfer:
    """:func:`download`, returning what came in (bytes, sha256, time).

    The byte count must be what the server declared (``Content-Length``): a
    connection that drops half-way is a ``ConnectionFailed`` and a path
    destination is removed, never a short file. ``max_size`` refuses a file
    larger than the caller expects (a disk's capacity) before reading it.
    """
    driver = _driver(host)
    what = f"downloading [{datastore}] {path}"
    url = _url_path(driver, datastore, path, datacenter)
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(_connection(driver))
        try:
            conn.request("GET", url, headers={"Cookie": driver.session.cookie})
            response = conn.getresponse()
            _check(response, what)
            declared = _declared_length(response, what)
            if max_size is not None and declared is not None and declared > max_size:
                raise TaskFailed(f"{what}: the server offers {declared} bytes, more than the "
                                 f"{max_size} expected")
            if isinstance(destination, str | os.PathLike):
                return streams.copy_to_file(response, destination, size=declared, job=job,
                                            what=what, span=span, error=ConnectionFailed,
                                            overwrite=True)
            return streams.copy(response, destination, size=declared, job=job, what=what,
                                span=span, error=ConnectionFailed)
        except AnyvirtError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(destination, str | os.PathLike):
                Path(destination).unlink(missing_ok=True)
            raise transport_error(exc, what) from exc


def _declared_length(response: http.client.HTTPResponse, what: str) -> int | None:
    """The body length the server promised; None for a chunked body (whose own framing
    makes http.client raise when it is cut)."""
    header = response.getheader("Content-Length")
    if header is None:
        return None
    if not header.strip().isdigit():
        raise ConnectionFailed(f"{what}: the server sent a Content-Length of {header[:40]!r}")
    return int(header)


__all__ = ["download", "fetch", "send", "upload"]
