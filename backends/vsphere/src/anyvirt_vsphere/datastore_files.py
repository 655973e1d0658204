"""Datastore files over HTTPS: the ``/folder`` interface of vCenter and ESXi.

``PUT``/``GET https://server/folder/<path>?dcPath=<datacenter>&dsName=<datastore>``
moves files in and out of a datastore. Disk images are large, so both ways
stream in chunks through the kit's :mod:`~anyvirt.kit.streams`: an upload
sends a metered file object (http.client pulls it chunk by chunk; exactly
``Content-Length`` bytes or an error), a download copies the response into
the destination chunk by chunk, checked against its ``Content-Length`` and
sparse where the destination is a file. No whole file is ever held in
memory; progress goes to the Job when one is given.

The connection uses the session's own TLS context (verified unless the URI
said ``verify=false``) and its session cookie, and the call timeout applies
to every socket operation. Path, datacenter and datastore names are
URL-quoted: user strings never reach the URL raw.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import ssl
import uuid
from collections.abc import Iterator, Sequence
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
from anyvirt.kit.extent_digest import RangeDigest
from anyvirt.kit.windowed_reads import WindowedReader
from anyvirt.tasks import Job
from anyvirt_vsphere.errors import transport_error
from anyvirt_vsphere.inventory import datastore_path, escape_name, unescape_name
from anyvirt_vsphere.sdk import vim
from anyvirt_vsphere.tasks import cleanup_job, run_task


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
def connection(driver: Any, host: str | None = None, port: int | None = None, *,
               thumbprint: str = "", plain: bool = False) -> Iterator[http.client.HTTPConnection]:
    """An HTTP(S) connection for a file transfer: to the server the session speaks to, or
    to ``host``:``port`` (an ESXi host an import lease names), with the session's TLS
    context and call timeout. Another host with a ``thumbprint`` (what the verified
    session gave for it) is trusted by that thumbprint, checked before any byte is sent."""
    session = driver.session
    session.check_open("a datastore transfer")
    host = host or driver.target.host
    port = port or session.port
    conn: http.client.HTTPConnection
    if plain and not session.plain_http:  # the cookie and the bytes would go in clear text
        raise ConnectionFailed("refusing plain HTTP for a transfer of a TLS session")
    if session.plain_http:
        conn = http.client.HTTPConnection(host, port, timeout=session.timeout,
                                          blocksize=streams.CHUNK)
    elif thumbprint and host != driver.target.host:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the pin below is the check
        conn = _PinnedConnection(host, port, thumbprint, timeout=session.timeout,
                                 context=context, blocksize=streams.CHUNK)
    else:
        conn = http.client.HTTPSConnection(host, port, timeout=session.timeout,
                                           context=session.ssl_context, blocksize=streams.CHUNK)
    try:
        yield conn
    finally:
        conn.close()


class _PinnedConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, thumbprint: str, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self.expected = thumbprint.replace(":", "").lower()

    def connect(self) -> None:
        super().connect()
        der = self.sock.getpeercert(binary_form=True) or b""
        algorithm = "sha256" if len(self.expected) == 64 else "sha1"
        if hashlib.new(algorithm, der).hexdigest() != self.expected:
            self.close()
            raise ConnectionFailed(f"the certificate of {self.host} does not match the "
                                   "thumbprint vSphere gave for it")


def check_response(response: http.client.HTTPResponse, what: str) -> None:
    """An HTTP answer of the datastore (or an import lease) as a typed error unless it is 2xx."""
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
    source: str | os.PathLike[str] | IO[bytes] | streams.Readable,
    *,
    datacenter: str | None = None,
    size: int | None = None,
    job: Job | None = None,
    span: tuple[float, float] = (0.0, 100.0),
) -> int:
    """Stream ``source`` (a file path or a binary file object) to ``[datastore] path``.

    ``host`` is an ``anyvirt.Host`` (or the driver) of a vSphere connection.
    For a file object that is not a regular file, give ``size``: the source
    must hold exactly that many bytes. Returns the number of bytes sent;
    progress goes to ``job`` (within ``span`` of its percent). A server that
    answers before it took every byte fails the upload.
    """
    driver = _driver(host)
    what = f"uploading to [{datastore}] {path}"
    _url_path(driver, datastore, path, datacenter)  # a bad path is refused before anything
    folder, _, name = path.strip("/").rpartition("/")
    # the bytes go to a temporary name and are moved into place only when all arrived: a
    # server keeps what a broken PUT sent, which must never look like the finished file
    partial = f"{folder}/.{name}.partial-{uuid.uuid4().hex[:8]}".lstrip("/")
    with contextlib.ExitStack() as stack:
        if isinstance(source, str | os.PathLike):
            stream: streams.Readable = stack.enter_context(Path(source).open("rb"))
        else:
            stream = source
        if size is None:
            try:
                size = os.fstat(stream.fileno()).st_size - stream.tell()  # type: ignore[attr-defined]
            except (OSError, AttributeError, ValueError):
                raise InvalidSpec(f"{what}: give size= for a stream of unknown length") from None
        body = streams.MeteredReader(stream, size, job=job, what=what, span=span)
        try:
            _put(driver, _url_path(driver, datastore, partial, datacenter), body, size, what)
            if body.transfer is None:  # the server answered before it had every byte
                raise ConnectionFailed(f"{what}: the server answered after {body.meter.count} "
                                       f"of {size} bytes")
            _move(driver, datastore, partial, path, datacenter, job or cleanup_job(what), what)
        except BaseException:
            _remove(driver, datastore, partial, datacenter)
            raise
    return body.transfer.bytes


def _put(driver: Any, url: str, body: streams.MeteredReader, size: int, what: str) -> None:
    headers = {
        "Cookie": driver.session.cookie,
        "Content-Type": "application/octet-stream",
        "Content-Length": str(size),
    }
    send(driver, "PUT", url, body, headers, what)


def send(driver: Any, method: str, url: str, body: streams.MeteredReader,
         headers: dict[str, str], what: str, **where: Any) -> None:
    """Send ``body`` with ``method`` to ``url`` (a path and query) and check the answer;
    ``where`` chooses the server as :func:`connection` does."""
    with connection(driver, **where) as conn:
        try:
            conn.request(method, url, body=body, headers=headers)
            response = conn.getresponse()
            check_response(response, what)
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise transport_error(exc, what) from exc


def _datacenter_ref(driver: Any, datacenter: str | None) -> Any:
    if datacenter is None:
        return driver.inventory.datacenter().ref
    for row in driver.collector.scan({vim.Datacenter: ("name",)}, what="listing datacenters"):
        if unescape_name(row.get("name", "")) == datacenter:
            return row.ref
    raise NotFound(f"no datacenter named {datacenter!r}")


def _move(driver: Any, datastore: str, source: str, dest: str, datacenter: str | None,
          job: Job, what: str) -> None:
    manager = driver.session.content.fileManager
    dc = _datacenter_ref(driver, datacenter)
    run_task(driver.collector,
             lambda: manager.MoveDatastoreFile_Task(datastore_path(datastore, source), dc,
                                                    datastore_path(datastore, dest.strip("/")), dc,
                                                    True),
             job, f"{what}: moving the file into place")


def _remove(driver: Any, datastore: str, path: str, datacenter: str | None) -> None:
    """Best effort: the partial file of a failed upload."""
    with contextlib.suppress(AnyvirtError):
        remove_path(driver.inventory, datastore_path(datastore, path),
                    cleanup_job(f"removing {path}"), _datacenter_ref(driver, datacenter))


def remove_path(inventory: Any, path: str, job: Job, datacenter: Any = None) -> None:
    """Delete a datastore folder or file (``[ds] dir/x``) a failed operation left (best effort).
    ``datacenter`` is its reference; the connection's datacenter when None."""
    manager = inventory.session.content.fileManager
    with contextlib.suppress(AnyvirtError):
        dc = datacenter if datacenter is not None else inventory.datacenter().ref
        run_task(inventory.collector, lambda: manager.DeleteDatastoreFile_Task(path, dc), job,
                 f"removing {path}")


def download(
    host: Any,
    datastore: str,
    path: str,
    destination: str | os.PathLike[str] | IO[bytes],
    *,
    datacenter: str | None = None,
    job: Job | None = None,
    span: tuple[float, float] = (0.0, 100.0),
) -> int:
    """Stream ``[datastore] path`` into ``destination`` (a file path or binary file object).

    Returns the number of bytes written: exactly the response's
    ``Content-Length``, or an error. A path destination is written sparse and
    removed again when the transfer fails.
    """
    return fetch(host, datastore, path, destination, datacenter=datacenter, job=job,
                 span=span).bytes


def fetch(
    host: Any,
    datastore: str,
    path: str,
    destination: str | os.PathLike[str] | IO[bytes],
    *,
    datacenter: str | None = None,
    job: Job | None = None,
    span: tuple[float, float] = (0.0, 100.0),
    max_size: int | None = None,
) -> streams.Transfer:
    """:func:`download`, returning what came in: byte count, sha256 and time.

    A connection that drops before ``Content-Length`` bytes arrived is a
    ``ConnectionFailed`` (never a short file); ``max_size`` refuses a file
    larger than the caller expects (a disk's capacity) before reading it.
    """
    driver = _driver(host)
    what = f"downloading [{datastore}] {path}"
    url = _url_path(driver, datastore, path, datacenter)
    target_path = Path(destination) if isinstance(destination, str | os.PathLike) else None
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(connection(driver))
        try:
            conn.request("GET", url, headers={"Cookie": driver.session.cookie})
            response = conn.getresponse()
            check_response(response, what)
            declared = response.getheader("Content-Length")
            size = int(declared) if declared and declared.isdigit() else None
            if max_size is not None and size is not None and size > max_size:
                raise TaskFailed(f"{what}: the server offers {size} bytes, more than the "
                                 f"{max_size} expected")
            if target_path is not None:
                return streams.copy_to_file(response, target_path, size=size, job=job, what=what,
                                            span=span, overwrite=True, error=ConnectionFailed)
            assert not isinstance(destination, str | os.PathLike)
            return streams.copy(response, destination, size=size, job=job, what=what, span=span,
                                error=ConnectionFailed)
        except (OSError, http.client.HTTPException) as exc:
            if target_path is not None:
                target_path.unlink(missing_ok=True)
            raise transport_error(exc, what) from exc


def digest_ranges(
    host: Any,
    datastore: str,
    path: str,
    ranges: Sequence[tuple[int, int]],
    *,
    datacenter: str | None = None,
    job: Job | None = None,
) -> RangeDigest:
    """The sha256 of ``ranges`` of ``[datastore] path``, read by HTTP ``Range`` requests on
    one connection (only those bytes cross the wire), and the file's stored length from
    the answers' ``Content-Range``. Every answer must be exactly the range asked for: a
    server that ignores ``Range`` (200 with the whole file) or answers another range is
    an error, never hashed as if it were the range."""
    driver = _driver(host)
    what = f"reading ranges of [{datastore}] {path}"
    url = _url_path(driver, datastore, path, datacenter)
    digest = hashlib.sha256()
    count = 0
    stored: int | None = None
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(connection(driver))
        try:
            for offset, length in ranges:
                last = offset + length - 1
                conn.request("GET", url, headers={"Cookie": driver.session.cookie,
                                                  "Range": f"bytes={offset}-{last}"})
                response = conn.getresponse()
                if response.status == 416:
                    response.read()
                    raise TaskFailed(f"{what}: the file ends before byte {last} that the "
                                     "source holds data at")
                stored = _answered(response, what, offset, last)
                meter = streams.Meter(length, job=job, what=what, error=ConnectionFailed)
                while chunk := response.read(min(streams.CHUNK, meter.remaining or 1)):
                    meter.add(chunk)
                    digest.update(chunk)
                meter.finish()
                count += length
        except (OSError, http.client.HTTPException) as exc:
            raise transport_error(exc, what) from exc
    return RangeDigest(sha256=digest.hexdigest(), bytes=count, stored_bytes=stored)


@contextlib.contextmanager
def ranged_reader(host: Any, datastore: str, path: str, *, datacenter: str | None = None,
                  ) -> Iterator[tuple[WindowedReader, int]]:
    """``read_at`` over ``[datastore] path`` by ranged GETs on one connection, in windows
    (:mod:`anyvirt.kit.windowed_reads`), and the file's stored length; for as long as the
    block lasts. An answer that is not exactly the range asked for is an error."""
    driver = _driver(host)
    what = f"reading [{datastore}] {path}"
    url = _url_path(driver, datastore, path, datacenter)
    with connection(driver) as conn:

        def get(first: int, last: int) -> http.client.HTTPResponse:
            try:
                conn.request("GET", url, headers={"Cookie": driver.session.cookie,
                                                  "Range": f"bytes={first}-{last}"})
                return conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise transport_error(exc, what) from exc

        probe = get(0, 0)
        probe.read()
        # 416: an empty file ("bytes */0")
        stored = 0 if probe.status == 416 else _answered(probe, what, 0, 0)

        def open_window(offset: int, length: int) -> _RangeWindow:
            response = get(offset, offset + length - 1)
            _answered(response, what, offset, offset + length - 1)
            return _RangeWindow(conn, response, what)

        reader = WindowedReader(open_window, stored, what)
        try:
            yield reader, stored
        finally:
            reader.close()


class _RangeWindow:
    """One ranged GET under way (a :class:`anyvirt.kit.windowed_reads.Window`)."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse,
                 what: str) -> None:
        self.conn, self.response, self.what = conn, response, what

    def read(self, size: int) -> bytes:
        try:
            return self.response.read(size)
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            raise transport_error(exc, self.what) from exc

    def finish(self) -> None:
        self.response.close()  # read to its end: the connection stays for the next

    def abort(self) -> None:
        self.conn.close()  # the rest of the range is not wanted; the next request reconnects


def _answered(response: http.client.HTTPResponse, what: str, first: int, last: int) -> int:
    """The stored length a ``206`` for exactly ``first``-``last`` declares; else an error."""
    if response.status != 206:
        check_response(response, what)  # an error, typed; a 200 (Range ignored) below
    answered = response.getheader("Content-Range") or ""
    match = _CONTENT_RANGE.fullmatch(answered.strip())
    if response.status != 206 or match is None or (int(match[1]), int(match[2])) != (first, last):
        response.close()
        raise TaskFailed(f"{what}: asked for bytes {first}-{last}, the server answered "
                         f"{response.status} {answered!r}")
    return int(match[3])


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")

__all__ = ["check_response", "connection", "digest_ranges", "download", "fetch", "ranged_reader",
           "remove_path", "send", "upload"]
