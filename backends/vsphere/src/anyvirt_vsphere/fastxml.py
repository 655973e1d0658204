"""A fast reader for PropertyCollector responses of simple values.

pyVmomi parses SOAP responses with a Python-level handler per XML element,
and for a 5,000-VM listing that parsing is nearly all the time spent. A
listing asks only for strings, numbers, booleans, enums and references, so
here the response of ``RetrievePropertiesEx``/``ContinueRetrievePropertiesEx``
is parsed with ElementTree (C) instead, into the same ``(ref, {path: value})``
rows. The request is still serialised by pyVmomi and sent over its stub, with
its cookie, TLS context, timeout and connection pool.

Anything unexpected (a fault, a missing-property entry, a value type not
handled here, a non-200 status) returns None: the caller then repeats the
call through pyVmomi's normal path, which is safe because these calls only
read, and which turns faults into pyVmomi's typed exceptions.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zlib
from typing import Any

from anyvirt_vsphere.sdk import vmodl

_pyvmomi_support: Any = __import__("pyVmomi.VmomiSupport", fromlist=["GetWsdlType"])

NS = "{urn:vim25}"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_INTS = {"xsd:int", "xsd:long", "xsd:short", "xsd:byte"}
_OBJECTS = f"{NS}objects"
_TOKEN = f"{NS}token"
_RESPONSES = {f"{NS}RetrievePropertiesExResponse", f"{NS}ContinueRetrievePropertiesExResponse"}
CHUNK = 256 * 1024

Rows = list[tuple[Any, dict[str, Any]]]


class Unhandled(Exception):
    """The response holds something this reader does not decode: use pyVmomi."""


def retrieve(stub: Any, pc: Any, method: str, args: list[Any]) -> tuple[Rows, str | None] | None:
    """Call ``method`` on the PropertyCollector ``pc``; rows and continuation token, or None."""
    info = vmodl.query.PropertyCollector._GetMethodInfo(method)
    body = stub.SerializeRequest(pc, info, args)
    headers = {
        "Cookie": stub.cookie,
        "SOAPAction": stub.versionId,
        "Content-Type": "text/xml; charset=UTF-8",
        "Accept-Encoding": "gzip, deflate",
    }
    conn = stub.GetConnection()
    try:
        conn.request("POST", stub.path, body, headers)
        resp = conn.getresponse()
        if resp.status != 200:
            resp.read()
            stub.ReturnConnection(conn)
            return None
        encoding = (resp.getheader("Content-Encoding") or "identity").lower()
        try:
            result = _parse_stream(resp, encoding, stub)
        finally:
            resp.read()  # drain what a refused parse left, so the connection can be reused
    except BaseException:
        conn.close()
        raise
    stub.ReturnConnection(conn)
    return result


def _parse_stream(resp: Any, encoding: str, stub: Any) -> tuple[Rows, str | None] | None:
    """Parse as the bytes arrive; each ``objects`` element is turned into a row and
    dropped at once, so the memory held is one row, not the whole response."""
    if encoding == "gzip":
        inflate: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflate = zlib.decompressobj()
    elif encoding == "identity":
        inflate = None
    else:
        return None
    # The bytes come from the server this session logged into over verified TLS,
    # pyVmomi feeds the same bytes to the same expat, and declarations are refused.
    parser: Any = ET.XMLPullParser(events=("start", "end"))
    refs: dict[tuple[str, str], Any] = {}
    rows: Rows = []
    token: str | None = None
    seen_response = False
    try:
        while True:
            chunk = resp.read(CHUNK)
            if not chunk:
                break
            if inflate is not None:
                chunk = inflate.decompress(chunk)
            if b"<!DOCTYPE" in chunk or b"<!ENTITY" in chunk:
                return None  # a SOAP response never declares entities
            parser.feed(chunk)
            for event, el in parser.read_events():
                if not isinstance(el, ET.Element):
                    continue
                if event == "start":
                    if el.tag in _RESPONSES:
                        seen_response = True
                    continue
                if el.tag == _OBJECTS:
                    rows.append(_row(el, stub, refs))
                    el.clear()
                elif el.tag == _TOKEN:
                    token = el.text or None
        parser.close()
    except (Unhandled, ET.ParseError, ValueError, zlib.error):
        return None
    if not seen_response:
        return None
    return rows, token


def _row(el: ET.Element, stub: Any, refs: dict[tuple[str, str], Any]) -> tuple[Any, dict[str, Any]]:
    obj: Any = None
    values: dict[str, Any] = {}
    for part in el:
        ptag = part.tag
        if ptag == f"{NS}obj":
            obj = _ref(part, stub, refs)
        elif ptag == f"{NS}propSet":
            name_el = part.find(f"{NS}name")
            val_el = part.find(f"{NS}val")
            if name_el is None or val_el is None or name_el.text is None:
                raise Unhandled("propSet without name or val")
            values[name_el.text] = _value(val_el, stub, refs)
        else:
            raise Unhandled(ptag)  # missingSet and anything else: pyVmomi decides
    if obj is None:
        raise Unhandled("objects without obj")
    return obj, values


def _ref(el: ET.Element, stub: Any, cache: dict[tuple[str, str], Any]) -> Any:
    kind = el.get("type")
    moid = el.text
    if not kind or moid is None:
        raise Unhandled("reference without type")
    key = (kind, moid)
    ref = cache.get(key)
    if ref is None:
        try:
            cls = _pyvmomi_support.GetWsdlType("urn:vim25", kind)
        except KeyError:
            raise Unhandled(kind) from None
        ref = cache[key] = cls(moid, stub)
    return ref


def _value(el: ET.Element, stub: Any, refs: dict[tuple[str, str], Any]) -> Any:
    kind = el.get(XSI_TYPE, "")
    text = el.text or ""
    if kind == "xsd:string":
        return text
    if kind in _INTS:
        return int(text)
    if kind == "xsd:boolean":
        return text == "true"
    if kind == "ManagedObjectReference":
        return _ref(el, stub, refs)
    if kind == "ArrayOfManagedObjectReference":
        return [_ref(item, stub, refs) for item in el]
    if kind in _ENUMS:
        return text
    raise Unhandled(kind)


#: enum types that may appear in listings; their values are plain strings in pyVmomi too
_ENUMS = {
    "VirtualMachinePowerState",
    "HostSystemConnectionState",
    "HostSystemPowerState",
    "ManagedEntityStatus",
    "TaskInfoState",
}
