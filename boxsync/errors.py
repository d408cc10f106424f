"""
Errors told in one line.

A driver's exception (psycopg's, botocore's, a socket's) often spans several
lines: a hint, a context, a traceback of the other side. Logs and the
answers a user reads take its first line, and the exception's type when it
has no text at all.
"""


def first_line(error: BaseException, empty: str | None = None) -> str:
    """
    The first line of C{error}'s text; C{empty}, or the exception's type, when
    it has none.
    """
    lines = str(error).strip().splitlines()
    if lines:
        return lines[0]
    return empty if empty is not None else type(error).__name__
