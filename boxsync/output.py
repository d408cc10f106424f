"""
What the commands write for people and scripts to read, on a terminal or
into a pipe: names the terminal's encoding cannot carry are written as
escapes, and a reader that goes away (C{| head}) ends the command quietly,
as it ends other programs.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import re
import sys
from typing import NoReturn, TextIO

__all__ = ["CLOSED_PIPE_STATUS", "ascii_json", "carries_unicode", "escape_unencodable", "reader_gone"]

#: The status a shell gives a program its pipe's reader ended (128 + SIGPIPE).
CLOSED_PIPE_STATUS = 141


def escape_unencodable(*streams: TextIO) -> None:
    """
    Have C{streams} (a command's standard output and error) write what
    their encoding cannot carry as escapes (C{\\u65e5}), as the log does:
    under a locale that is not UTF-8, a name such as C{日本.txt} would
    otherwise end a listing with a traceback.
    """
    for stream in streams:
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def carries_unicode(stream: TextIO) -> bool:
    """
    Whether C{stream}'s encoding carries every character (one of UTF-8,
    UTF-16, UTF-32; or none, in memory).
    """
    encoding = getattr(stream, "encoding", None)
    return encoding is None or codecs.lookup(encoding).name.startswith("utf")


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def ascii_json(text: str) -> str:
    """
    The JSON C{text} with its characters past ASCII (which JSON has only in
    strings) as C{\\u} escapes: the same value, for an output that cannot
    carry them (an escape of Python's own would make it JSON no more).
    """
    return _NON_ASCII.sub(lambda found: json.dumps(found.group())[1:-1], text)


def reader_gone() -> NoReturn:
    """
    Standard output's reader went away: stop at once, saying nothing, with
    L{CLOSED_PIPE_STATUS}. What is left to write goes nowhere (written at
    exit, it would fail again, with a message of its own).

    @raise SystemExit: always.
    """
    nowhere = os.open(os.devnull, os.O_WRONLY)
    os.dup2(nowhere, sys.stdout.fileno())
    os.close(nowhere)
    raise SystemExit(CLOSED_PIPE_STATUS)
