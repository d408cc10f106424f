"""
Which paths of a synced folder are not synced.

The user lists them in C{<folder>/.boxsyncignore}, in gitignore syntax. Some
paths are never synced whatever the file says: boxsync's hidden folder and the
client's temporary files. The C{.boxsyncignore} file itself is always synced,
so every client of a box ignores the same things. Each client may also list
paths it alone leaves out (selective sync), in C{<folder>/.boxsync/ignore},
which is not synced.

Before those rules come L{DEFAULT_RULES}: other programs' lock files, swap
files and files on their way, which mean something only on the machine that
made them (a LibreOffice lock file synced tells the other machines that the
document is open there). A line C{!PATTERN} in either file syncs them after
all. What they leave out is not left out in silence: it is listed as passed
over, with why (L{IgnoreRules.by_default}).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable

from attrs import define, field
from pathspec import GitIgnoreSpec, RegexPattern
from twisted.logger import Logger

from ..paths import HIDDEN_DIR

__all__ = [
    "BY_DEFAULT",
    "DEFAULT_RULES",
    "IGNORE_FILE",
    "LOCAL_IGNORE_FILE",
    "TEMP_PREFIX",
    "IgnoreRules",
    "is_temp_name",
]

#: The file, at the top of a synced folder, that lists the ignored paths.
IGNORE_FILE = ".boxsyncignore"

#: This client's own list, in the folder's hidden folder (not synced).
LOCAL_IGNORE_FILE = f"{HIDDEN_DIR}/ignore"

#: Every temporary file the client writes beside a target starts with this.
TEMP_PREFIX = ".boxsync-tmp-"


#: What no client syncs unless told to: each gitignore pattern with what it
#: matches. Each is a file (or folder) made by a program for its own use on
#: its own machine, gone again when the program is done with it.
DEFAULT_RULES: tuple[tuple[str, str], ...] = (
    (".~lock.*#", "a LibreOffice lock file"),
    ("~$*", "a Microsoft Office owner file"),
    ("~*.tmp", "a Microsoft Office temporary file"),
    (".*.sw[a-p]", "a vim swap file"),
    ("*.kate-swp", "a Kate swap file"),
    ("\\#*#", "an Emacs auto-save file"),
    (".#*", "an Emacs lock"),
    ("*.crdownload", "a download in progress (Chromium)"),
    ("*.part", "a download in progress (Firefox)"),
    (".fuse_hidden*", "a deleted file still open (FUSE)"),
    (".nfs" + "?" * 24, "a deleted file still open (NFS)"),
    (".Trash-*/", "a trash folder"),
    ("/lost+found/", "the file system's own folder (fsck puts what it finds there)"),
)

#: In the reason given for each path a default rule leaves out.
BY_DEFAULT = "not synced by default"


def is_temp_name(name: str) -> bool:
    """
    Whether C{name} (one path segment) is that of a client's temporary file.
    """
    return name.startswith(TEMP_PREFIX)


_log = Logger()


def _read(root: Path) -> list[str]:
    """
    The lines of the rules of the folder C{root}: the shared file's, then
    this client's own (none from a file that does not exist). A line that
    is no pattern (C{!} alone, a trailing backslash) is left out, as git
    leaves it out, with a warning: one client's typo in the shared file
    must not stop every client.
    """
    lines: list[str] = []
    for name in (IGNORE_FILE, LOCAL_IGNORE_FILE):
        try:
            text = (root / name).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                GitIgnoreSpec.from_lines([line])
            except ValueError:
                _log.warn(
                    "{name}, line {number}, is no pattern, and is left out: {line!r}",
                    name=name,
                    number=number,
                    line=line,
                )
                continue
            lines.append(line)
    return lines


_DEFAULT_LINES = [pattern for pattern, _ in DEFAULT_RULES]
_DEFAULT_SPECS = [(GitIgnoreSpec.from_lines([pattern]), pattern, what) for pattern, what in DEFAULT_RULES]
# The default rules as one expression, for a folder without rules of its
# own: every path is matched, and one search in C takes half the time
# pathspec takes to try each rule in turn. (Their groups are unnamed: a
# name may not be used twice.) Before it, what every path a default rule
# matches has: a name that starts with one of ".~#" or has one of these
# extensions, or the top folder lost+found; most paths have none, and are
# told so in a fifth of it.
_DEFAULT_HINT = re.compile(r"(?:^|/)[.~#]|\.(?:part|crdownload|kate-swp)(?:/|$)|^lost\+found(?:/|$)")
_DEFAULTS = re.compile(
    "|".join(
        f"(?:{rule.regex.pattern.replace('(?P<ps_d>', '(?:')})"
        for spec, _, _ in _DEFAULT_SPECS
        for rule in spec.patterns
        if isinstance(rule, RegexPattern) and rule.regex is not None
    )
)


@define
class IgnoreRules:
    """
    The rules of one synced folder: L{DEFAULT_RULES}, then the lines of its
    files.

    @ivar root: the folder, or C{None} for rules that come from no file.
    """

    log = Logger()

    root: Path | None = None
    _lines: list[str] = field(factory=list)
    _spec: GitIgnoreSpec = field(init=False)
    # The files' rules alone: what they leave out is left out on purpose.
    _own: GitIgnoreSpec = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._compile()

    def _compile(self) -> None:
        self._spec = GitIgnoreSpec.from_lines(_DEFAULT_LINES + self._lines)
        self._own = GitIgnoreSpec.from_lines(self._lines)

    @classmethod
    def load(cls, root: Path) -> IgnoreRules:
        """
        Read the rules of the folder C{root} (the default ones alone if it
        has no C{.boxsyncignore}).

        @raise OSError: if the file exists but cannot be read (syncing
            without its rules could upload what it excludes).
        """
        return cls(root=root, lines=_read(root))

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> IgnoreRules:
        """
        Rules given as the lines of an ignore file.
        """
        return cls(lines=list(lines))

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
            lines = _read(self.root)
        except OSError:
            self.log.failure("Cannot read the ignore file of {root}", root=self.root)
            return False
        if GitIgnoreSpec.from_lines(lines) == self._own:
            return False
        self.log.info("Ignore rules of {root} changed", root=str(self.root))
        self._lines = lines
        self._compile()
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
        key = path + "/" if is_dir else path
        if not self._lines:
            return _DEFAULT_HINT.search(path) is not None and _DEFAULTS.match(key) is not None
        return self._spec.match_file(key)

    def by_default(self, path: str, is_dir: bool = False) -> str | None:
        """
        Why the wire path C{path}, ignored, is so by a default rule and by
        no rule of the folder's files (C{None} if it is not).
        """
        key = path + "/" if is_dir else path
        if self._own.match_file(key):
            return None
        for spec, pattern, what in _DEFAULT_SPECS:
            if spec.match_file(key):
                return f"{what}, {BY_DEFAULT} (a line !{pattern} in {IGNORE_FILE} syncs it)"
        return None

