"""
Which paths of a synced folder are not synced.

The user lists them in C{<folder>/.boxsyncignore}, in gitignore syntax. Some
paths are never synced whatever the file says: boxsync's hidden folder and the
client's temporary files. The C{.boxsyncignore} file itself is always synced,
so every client of a box ignores the same things. Each client may also list
paths it alone leaves out (selective sync), in C{<folder>/.boxsync/ignore},
which is not synced.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from attrs import define, field
from pathspec import GitIgnoreSpec
from twisted.logger import Logger

from ..paths import HIDDEN_DIR

__all__ = ["IGNORE_FILE", "LOCAL_IGNORE_FILE", "TEMP_PREFIX", "IgnoreRules", "is_temp_name"]

#: The file, at the top of a synced folder, that lists the ignored paths.
IGNORE_FILE = ".boxsyncignore"

#: This client's own list, in the folder's hidden folder (not synced).
LOCAL_IGNORE_FILE = f"{HIDDEN_DIR}/ignore"

#: Every temporary file the client writes beside a target starts with this.
TEMP_PREFIX = ".boxsync-tmp-"


def is_temp_name(name: str) -> bool:
    """
    Whether C{name} (one path segment) is that of a client's temporary file.
    """
    return name.startswith(TEMP_PREFIX)


def _read(root: Path) -> GitIgnoreSpec:
    """
    The rules of the folder C{root}: the shared file's, then this client's
    own (none from a file that does not exist).
    """
    lines: list[str] = []
    for name in (IGNORE_FILE, LOCAL_IGNORE_FILE):
        try:
            lines += (root / name).read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            pass
    return GitIgnoreSpec.from_lines(lines)


@define
class IgnoreRules:
    """
    The rules of one synced folder.

    @ivar root: the folder, or C{None} for rules that come from no file.
    """

    log = Logger()

    root: Path | None = None
    _spec: GitIgnoreSpec = field(factory=lambda: GitIgnoreSpec.from_lines([]))

    @classmethod
    def load(cls, root: Path) -> IgnoreRules:
        """
        Read the rules of the folder C{root} (no rules if it has no
        C{.boxsyncignore}).

        @raise OSError: if the file exists but cannot be read (syncing
            without its rules could upload what it excludes).
        """
        return cls(root=root, spec=_read(root))

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> IgnoreRules:
        """
        Rules given as the lines of an ignore file.
        """
        return cls(spec=GitIgnoreSpec.from_lines(lines))

    def reload(self) -> bool:
        """
        Read the ignore file again (it is small: no need to guess from its
        C{stat} whether it changed). If it cannot be read, the rules stay as
        they were.

        @return: whether the rules changed.
        """
        if self.root is None:
            return False
        try:
            spec = _read(self.root)
        except OSError:
            self.log.failure("Cannot read the ignore file of {root}", root=self.root)
            return False
        if spec == self._spec:
            return False
        self.log.info("Ignore rules of {root} changed", root=str(self.root))
        self._spec = spec
        return True

    @property
    def fingerprint(self) -> str:
        """
        What tells these rules from others: a change of it means paths may
        have stopped (or started) being ignored.
        """
        patterns = "\n".join(str(p.pattern) for p in self._spec.patterns if p.include is not None)
        return hashlib.sha256(patterns.encode("utf-8")).hexdigest()

    def ignored(self, path: str, is_dir: bool = False) -> bool:
        """
        Whether the wire path C{path} is not synced.

        @param is_dir: whether C{path} names a directory (a rule ending in
            C{/} matches only directories).
        """
        if path == IGNORE_FILE:
            return False
        segments = path.split("/")
        if (
            segments[0] == HIDDEN_DIR
            # A folder synced on its own inside this one: its hidden folder.
            or HIDDEN_DIR in segments[1:-1]
            or (is_dir and segments[-1] == HIDDEN_DIR)
            or any(map(is_temp_name, segments))
        ):
            return True
        return self._matched(path, is_dir)

    def ignored_in_synced(self, path: str, name: str, is_dir: bool) -> bool:
        """
        L{ignored} for a path whose folder is known to be synced (a walk
        that does not enter ignored folders), by its last segment C{name}.
        """
        if path == IGNORE_FILE:
            return False
        if (name == HIDDEN_DIR and is_dir) or is_temp_name(name):
            return True
        return self._matched(path, is_dir)

    def _matched(self, path: str, is_dir: bool) -> bool:
        return bool(self._spec.patterns) and self._spec.match_file(path + "/" if is_dir else path)

