"""
The tests' PostgreSQL: the one of L{boxsync.cluster}.
"""

from boxsync.cluster import BINARIES, PostgreSQL, missing

__all__ = ["BINARIES", "PostgreSQL", "missing"]
