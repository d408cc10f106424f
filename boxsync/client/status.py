"""
What a running client is doing, for C{boxsync-client status}: the client keeps
C{<folder>/.boxsync/status.json} up to date through L{StatusFile}, and
L{describe} reads it back with the folder's state.

The file is replaced atomically (a temporary file, then a rename), at most
every C{interval} seconds and only when something in it changed, so an idle
client does not write at all.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Protocol

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent
from zope.interface import implementer

from ..config import human_size
from ..paths import HIDDEN_DIR, printable
from .expiry import coming
from .passedover import PassedOver
from .progress import Reporter
from .state import STATE_FILE, LocalState, state_file

__all__ = ["STATUS_FILE", "StatusFile", "describe", "paths_are", "read_status", "status_path"]

log = Logger()

#: The status file, below the folder's hidden folder.
STATUS_FILE = "status.json"


class _EngineView(Protocol):
    """
    What L{StatusFile} asks of the engine (L{Engine} has these).
    """

    @property
    def pending(self) -> int: ...

    @property
    def in_sync(self) -> bool: ...

    @property
    def problems(self) -> dict[str, str]: ...

    @property
    def skipped(self) -> PassedOver: ...

    @property
    def paused(self) -> bool: ...


@implementer(ILogObserver)
@define
class StatusFile:
    """
    A L{Reporter} that passes everything on to C{inner} and records, in
    C{path}: the transfers in progress, the jobs pending, whether the folder
    is in sync and since when, the last error, and this process's id.

    Install it as a log observer too (C{globalLogPublisher.addObserver}) to
    record the last error the engine logged: a failed job or a lost
    connection.

    @ivar engine: the engine to ask about pending jobs, once there is one.
    """

    inner: Reporter
    path: Path
    clock: IReactorTime
    interval: float = 0.5
    engine: _EngineView | None = None
    pid: int = field(factory=os.getpid)
    _transfers: dict[str, dict[str, Any]] = field(factory=dict)
    _last_error: dict[str, Any] | None = None
    _last_sync: float | None = None
    _written: dict[str, Any] | None = None
    _loop: LoopingCall | None = None
    _stopped_in_sync: bool = False
    _unwritable: bool = False
    #: Whether the client ended in sync, when it knows (one that syncs once).
    ended_in_sync: bool | None = None
    #: When the client's token expires, if it does.
    token_expires: int | None = None

    def start(self) -> None:
        """
        Write the file now, then every C{interval} seconds if it changed.
        """
        self._loop = LoopingCall(self.write)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    # Reporter

    def started(self, kind: str, path: str, size: int) -> None:
        self._transfers[path] = {"kind": kind, "path": path, "size": size, "done": 0}
        self.inner.started(kind, path, size)

    def progress(self, path: str, count: int) -> None:
        transfer = self._transfers.get(path)
        if transfer is not None:
            transfer["done"] += count
        self.inner.progress(path, count)

    def finished(self, path: str, note: str | None = None) -> None:
        self._transfers.pop(path, None)
        self.inner.finished(path, note)

    def deleted(self, path: str, on_server: bool = False, folder: bool = False) -> None:
        self.inner.deleted(path, on_server, folder)

    def message(self, text: str) -> None:
        self.inner.message(text)

    def close(self) -> None:
        """
        Stop, and record that this client is no longer running, and whether
        the folder was in sync when it stopped (L{ended_in_sync}, or as the
        file last said).
        """
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        in_sync = self.ended_in_sync
        if in_sync is None:
            in_sync = bool(self._written and self._written.get("in_sync") and not self._transfers)
        self._stopped_in_sync = in_sync
        if in_sync:
            self._last_sync = self._last_sync or time.time()
        self._transfers.clear()
        self.write(running=False)
        self.inner.close()

    # Log observer

    def __call__(self, event: Mapping[str, Any]) -> None:
        level = event.get("log_level")
        namespace = str(event.get("log_namespace", ""))
        if not namespace.startswith("boxsync.client") or event.get("passed_over"):
            return
        if "reason" in event:
            # The engine's "resyncing in ...: <reason>", unless planned.
            if event.get("trouble") is False:
                return
            text = str(event["reason"])
        elif level is not None and level >= LogLevel.warn:
            text = formatEvent(dict(event))
        else:
            return
        self._last_error = {"message": text, "time": event.get("log_time", self.clock.seconds())}

    # The file

    def snapshot(self, running: bool = True) -> dict[str, Any]:
        engine = self.engine
        in_sync = bool(running and engine is not None and engine.in_sync)
        if in_sync and not self._transfers:
            self._last_sync = self._last_sync or time.time()
        else:
            self._last_sync = None if running else self._last_sync
        return {
            "pid": self.pid,
            "running": running,
            "in_sync": in_sync,
            "in_sync_since": self._last_sync,
            "pending": engine.pending if engine is not None and running else 0,
            "transfers": sorted(self._transfers.values(), key=lambda t: str(t["path"])),
            "last_error": self._last_error,
            "problems": engine.problems if engine is not None and running else {},
            # Kept once stopped: what the last look passed over.
            "skipped": dict(engine.skipped.items()) if engine is not None else {},
            "in_sync_when_stopped": None if running else self._stopped_in_sync,
            "paused": bool(engine is not None and running and engine.paused),
            "token_expires": self.token_expires,
        }

    def write(self, running: bool = True) -> None:
        """
        Replace the file with the current snapshot, if that changed.
        """
        snapshot = self.snapshot(running)
        if snapshot == self._written:
            return
        temp = self.path.with_name(f".{self.path.name}.{self.pid}.tmp")
        try:
            # Compact: the C encoder, while thousands of transfers are listed.
            temp.write_text(json.dumps(snapshot, separators=(",", ":")) + "\n", encoding="utf-8")
            os.replace(temp, self.path)
        except OSError as e:
            # The folder is gone or full: the client says what stops it,
            # if anything does; the status waits for the next write.
            if not self._unwritable:
                log.warn("cannot write {path}: {error}", path=str(self.path), error=e.strerror or e)
            self._unwritable = True
            return
        self._unwritable = False
        self._written = snapshot


def status_path(folder: Path) -> Path:
    return folder / HIDDEN_DIR / STATUS_FILE


def _alive(pid: int) -> bool:
    """
    Whether a boxsync process with id C{pid} runs.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"boxsync" in command


def read_status(folder: Path) -> dict[str, Any] | None:
    """
    What the last client to run on C{folder} wrote, with C{running} corrected
    for a process that is gone; C{None} if none wrote anything.
    """
    try:
        status = json.loads(status_path(folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict):
        return None
    if status.get("running") and not _alive(int(status.get("pid") or 0)):
        status["running"] = False
        status["in_sync"] = False
        status["crashed"] = True
    return status


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def facts(folder: Path) -> dict[str, Any]:
    """
    What C{boxsync-client status} knows of C{folder}: what its client last
    wrote in the status file (corrected for a client that is gone), with
    the folder, its cursor and how many files it tracks, and whether it is
    in sync now (C{in_sync}).

    @raise FileNotFoundError: if C{folder} has never been synced.
    """
    database = state_file(folder)
    if not database.is_file():
        raise FileNotFoundError(f"{folder} is not a boxsync folder (no {HIDDEN_DIR}/{STATE_FILE})")
    state = LocalState.open(folder)
    try:
        cursor, tracked = state.cursor, len(state)
    finally:
        state.close()
    status = read_status(folder) or {}
    running = bool(status.get("running"))
    return {
        **status,
        "folder": str(folder),
        "running": running,
        "in_sync": running and bool(status.get("in_sync")),
        "cursor": cursor,
        "tracked": tracked,
    }


def describe(folder: Path) -> tuple[list[str], bool]:
    """
    The lines C{boxsync-client status} prints about C{folder}, and whether
    it is in sync.

    @raise FileNotFoundError: if C{folder} has never been synced.
    """
    status = facts(folder)
    running, in_sync = status["running"], status["in_sync"]
    cursor, tracked = status["cursor"], status["tracked"]
    lines = [f"folder:     {folder}"]
    if running:
        lines.append(f"client:     running (pid {status.get('pid')})")
    elif status.get("crashed"):
        lines.append(f"client:     not running (pid {status.get('pid')} ended without a clean stop)")
    else:
        lines.append("client:     not running")
    if in_sync:
        since = status.get("in_sync_since")
        passed_over = len(status.get("skipped") or {})
        lines.append(
            "in sync:    yes"
            + (f", since {_when(since)}" if since else "")
            + (f", but {paths_are(passed_over)} skipped (below)" if passed_over else "")
        )
    elif running and status.get("paused"):
        lines.append("in sync:    no: paused (boxsync-client resume FOLDER to go on)")
    elif running:
        lines.append("in sync:    no")
    elif status.get("in_sync_when_stopped"):
        since = status.get("in_sync_since")
        passed_over = len(status.get("skipped") or {})
        lines.append(
            "in sync:    yes when the client stopped"
            + (f" (in sync since {_when(since)})" if since else "")
            + (f", but {_paths(passed_over)} {_were(passed_over)} skipped (below)" if passed_over else "")
        )
    elif status.get("in_sync_when_stopped") is False:
        below = " (last error below)" if status.get("last_error") else ""
        lines.append("in sync:    no when the client stopped" + below)
    else:
        lines.append("in sync:    unknown (no client is running)")
    lines.append(f"cursor:     {cursor}")
    lines.append(f"tracked:    {tracked} files")
    expires = status.get("token_expires")
    if isinstance(expires, int):
        lines.append(f"token:      {coming(expires, time.time())}")
    if running:
        lines.append(f"pending:    {status.get('pending', 0)} jobs")
        transfers = status.get("transfers") or []
        lines.append(f"transfers:  {len(transfers)}")
        for transfer in transfers:
            arrow = "↑" if transfer.get("kind") == "upload" else "↓"
            done, size = int(transfer.get("done", 0)), int(transfer.get("size", 0))
            lines.append(f"  {arrow} {transfer.get('path')}  {human_size(done)} of {human_size(size)}")
        problems = status.get("problems") or {}
        if problems:
            lines.append(f"not synced: {_paths(len(problems))}, tried again by themselves")
            lines.extend(f"  {path}: {why}" for path, why in problems.items())
    skipped = status.get("skipped") or {}
    if skipped:
        lines.append(f"skipped:    {_paths(len(skipped))}, never synced as they are")
        lines.extend(f"  {path}: {why}" for path, why in skipped.items())
    error = status.get("last_error")
    if error:
        when = float(error.get("time", 0))
        since = status.get("in_sync_since")
        over = ", over: in sync since" if in_sync and since is not None and float(since) >= when else ""
        lines.append(f"last error: {error.get('message')} ({_when(when)}{over})")
    else:
        lines.append("last error: none")
    return [printable(line) for line in lines], in_sync


def _paths(count: int) -> str:
    return "1 path" if count == 1 else f"{count} paths"


def paths_are(count: int) -> str:
    """
    C{"1 path is"}, C{"3 paths are"}.
    """
    return f"{_paths(count)} {'is' if count == 1 else 'are'}"


def _were(count: int) -> str:
    return "was" if count == 1 else "were"
