"""
The rules for paths on the wire, shared by the server and the client.

A wire path is relative, ``/``-separated and NFC-normalised. It is mapped to a
file below a root one checked segment at a time, so that no input can name a
file outside that root.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from pathlib import Path

__all__ = [
    "HIDDEN_DIR",
    "MAX_PATH_BYTES",
    "MAX_SEGMENT_BYTES",
    "LOCAL_PATH_MAX",
    "BadPath",
    "normalize",
    "to_local",
    "from_local",
]

#: The folder, at the top of a box and of a synced folder, that holds
#: boxsync's own data. It is never synced.
HIDDEN_DIR = ".boxsync"

MAX_SEGMENT_BYTES = 255
MAX_PATH_BYTES = 4096

#: The longest absolute file name the system takes, with its final NUL
#: (Linux's C{PATH_MAX}): a wire path within C{MAX_PATH_BYTES} can still
#: be too long once it is put below a folder.
LOCAL_PATH_MAX = 4096


#: A NUL or other control character.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadPath(ValueError):
    """
    A path that names no file boxsync may touch.
    """


def normalize(path: str) -> str:
    """
    Check a wire path and return its canonical (NFC) form.

    @raise BadPath: if the path is empty, absolute, has empty, ``.`` or ``..``
        segments, NUL or control characters, a segment over 255 bytes, is over
        4,096 bytes, or lies inside the hidden folder.
    """
    if not isinstance(path, str) or not path:
        raise BadPath("empty path")
    path = unicodedata.normalize("NFC", path)
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise BadPath("path longer than 4096 bytes")
    if _CONTROL.search(path):
        raise BadPath("control character in path")
    if "\\" in path:
        raise BadPath("backslash in path")
    if path.startswith("/"):
        raise BadPath("absolute path")
    segments = path.split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise BadPath(f"empty, '.' or '..' segment in {path!r}")
        try:
            encoded = segment.encode("utf-8")
        except UnicodeEncodeError:
            raise BadPath("path is not valid UTF-8") from None
        if len(encoded) > MAX_SEGMENT_BYTES:
            raise BadPath("path segment longer than 255 bytes")
    if segments[0] == HIDDEN_DIR:
        raise BadPath(f"{HIDDEN_DIR}/ is reserved")
    return path


def to_local(root: Path, path: str) -> Path:
    """
    Map a wire path to a file below C{root}.

    The path is normalised first; then every existing parent segment must be
    a real directory (not a symbolic link), so the result never escapes
    C{root}.

    @raise BadPath: if the path is not acceptable, is too long for the file
        system below C{root}, or a parent is a link or a file.
    """
    wire = normalize(path)
    top = os.path.abspath(root)
    local = os.path.join(top, wire)
    if len(os.fsencode(local)) >= LOCAL_PATH_MAX:
        raise BadPath("path longer than the file system takes here")
    # One lstat per parent, on plain strings (this runs for every file an
    # engine looks at).
    end = len(top)
    while (end := local.find("/", end + 1)) >= 0:
        try:
            mode = os.lstat(local[:end]).st_mode
        except FileNotFoundError:
            break  # nor is anything below it there
        if stat.S_ISLNK(mode):
            raise BadPath(f"{path!r} goes through a symbolic link")
        if not stat.S_ISDIR(mode):
            raise BadPath(f"{path!r} goes through a file")
    return Path(os.path.join(root, wire))


def from_local(root: Path, local: Path) -> str:
    """
    The wire path of a file below C{root}.

    @raise BadPath: if the file is not below C{root} or its name is not a valid
        wire path.
    """
    relative = os.path.relpath(local, root)
    if relative.startswith(".." + os.sep) or relative == "..":
        raise BadPath(f"{local} is outside {root}")
    return normalize(relative.replace(os.sep, "/"))
