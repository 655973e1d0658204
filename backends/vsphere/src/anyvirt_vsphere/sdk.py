"""pyVmomi, seen as the dynamic SDK it is.

pyVmomi builds its managed and data object classes at run time from the
WSDL; its typing stubs declare those constructors untyped. The driver reaches
the SDK only through these names, typed ``Any`` once here, so ``mypy
--strict`` checks the driver's own code without a cast at every call.
"""

from __future__ import annotations

import importlib
from typing import Any

_pyvmomi: Any = importlib.import_module("pyVmomi")

vim: Any = _pyvmomi.vim
vmodl: Any = _pyvmomi.vmodl
SoapStubAdapter: Any = _pyvmomi.SoapStubAdapter
