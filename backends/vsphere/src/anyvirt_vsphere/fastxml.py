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

import gzip
import xml.etree.ElementTree as ET
import zlib
from typing import Any

from anyvirt_vsphere.sdk import vmodl

_pyvmomi_support: Any = __import__("pyVmomi.VmomiSupport", fromlist=["GetWsdlType"])

NS = "{urn:vim25}"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_INTS = {"xsd:int", "xsd:long", "xsd:short", "xsd:byte"}

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
        data = resp.read()
    except BaseException:
        conn.close()
        raise
    stub.ReturnConnection(conn)
    if resp.status != 200:
        return None
    encoding = (resp.getheader("Content-Encoding") or "identity").lower()
    if encoding == "gzip":
        data = gzip.decompress(data)
    elif encoding == "deflate":
        data = zlib.decompress(data)
    try:
        return _parse(data, stub)
    except (Unhandled, ET.ParseError, ValueError):
        return None


def _parse(data: bytes, stub: Any) -> tuple[Rows, str | None]:
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise Unhandled("a SOAP response never declares entities")
    # The bytes come from the server this session logged into over verified TLS,
    # pyVmomi feeds the same bytes to the same expat, and declarations are refused above.
    root = ET.fromstring(data)  # noqa: S314
    returnval = root.find(f".//{NS}returnval")
    if returnval is None:
        response = root.find(".//{urn:vim25}RetrievePropertiesExResponse")
        if response is None:
            response = root.find(".//{urn:vim25}ContinueRetrievePropertiesExResponse")
        if response is None:
            raise Unhandled("no response element")
        return [], None  # an empty result has no returnval at all
    refs: dict[tuple[str, str], Any] = {}
    rows: Rows = []
    token: str | None = None
    for child in returnval:
        tag = child.tag
        if tag == f"{NS}token":
            token = child.text or None
        elif tag == f"{NS}objects":
            obj: Any = None
            values: dict[str, Any] = {}
            for part in child:
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
            rows.append((obj, values))
        else:
            raise Unhandled(tag)
    return rows, token


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
