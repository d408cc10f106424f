"""
The few Linux system calls boxsync needs that Python's C{os} module does not
offer (C{renameat2}, C{syncfs}, C{sync_file_range}), looked up in the C
library once each. Where the C library lacks one, callers fall back to
something slower but equivalent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache
from typing import Any

__all__ = ["function", "check"]


@cache
def _library() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@cache
def function(name: str, *argtypes: Any) -> Any:
    """
    The C library's function C{name}, taking C{argtypes} and returning an
    C{int}, or C{None} if the C library has no such function.
    """
    found = getattr(_library(), name, None)
    if found is not None:
        found.argtypes = list(argtypes)
        found.restype = ctypes.c_int
    return found


def check(result: int, filename: str | None = None) -> None:
    """
    Raise the C{OSError} of C{errno} (about C{filename}, if given) if
    C{result}, what a function of the C library returned, says it failed.
    """
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error), filename)
