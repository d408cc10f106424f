"""
Server-Sent Events framing: the encoder of the protocol's events and an
incremental parser of a C{text/event-stream} body, as the HTML standard
defines it.
"""

from __future__ import annotations

import json

import attrs
from attrs import asdict, frozen

from .events import EVENT_TYPES, Event, event_id
from .values import ProtocolError, check_path

__all__ = ["encode_event", "encode_comment", "RefusedEvent", "SSEMessage", "decode_event", "SSEParser"]


def encode_event(event: Event, with_id: bool = True) -> bytes:
    """
    One SSE frame for C{event}. Commits and C{ready} carry their seq as the
    frame's id (unless C{with_id} is false, as for plan entries, whose order
    is not that of their seqs). A field that is C{None} is left out.
    """
    data = {name: value for name, value in asdict(event).items() if value is not None}
    lines = []
    seq = event_id(event)
    if with_id and seq is not None:
        lines.append(f"id: {seq}")
    lines.append(f"event: {event.name}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_comment(text: str) -> bytes:
    return f": {text}\n\n".encode("utf-8")


@frozen
class SSEMessage:
    """
    One dispatched SSE message, before its data is decoded.
    """

    event: str
    data: str
    id: str | None


def decode_event(message: SSEMessage) -> Event | None:
    """
    The protocol event of an SSE message; C{None} for an event type this
    version does not know (newer servers may add some). Fields it does not
    know are left out, for the same reason.

    @raise ProtocolError: if a known event's data is malformed.
    """
    cls = EVENT_TYPES.get(message.event)
    if cls is None:
        return None
    try:
        data = json.loads(message.data)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        known = attrs.fields_dict(cls)
        event: Event = cls(**{name: value for name, value in data.items() if name in known})
        for flag in ("executable", "other_history"):
            value = getattr(event, flag, None)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{flag} must be true or false")
    except (ValueError, TypeError) as e:
        raise ProtocolError(f"bad {message.event} event: {e}") from None
    if hasattr(event, "path"):
        try:
            check_path(event.path)
        except ProtocolError as e:
            raise RefusedEvent(message.event, str(event.path), str(e)) from None
    return event


class RefusedEvent(ProtocolError):
    """
    A well-formed event about a path no client may act on (one that leads
    out of the folder, say): that event alone is refused, and the stream
    goes on.

    @ivar event: its type; @ivar path: the path, as sent.
    """

    def __init__(self, event: str, path: str, reason: str) -> None:
        super().__init__(f"refused the server's {event} of {path!r}: {reason}")
        self.event = event
        self.path = path


class SSEParser:
    """
    An incremental parser of a ``text/event-stream`` body: feed it bytes as
    they arrive, get whole messages.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.last_id: str | None = None
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        buffer = self._buffer + chunk
        messages = []
        position = 0
        while True:
            line, end = _next_line(buffer, position)
            if end < 0:
                break
            position = end
            message = self._line(line.decode("utf-8", "replace"))
            if message is not None:
                messages.append(message)
        self._buffer = buffer[position:]
        return messages

    def _line(self, line: str) -> SSEMessage | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SSEMessage | None:
        if self._id is not None:
            self.last_id = self._id
        if not self._data:
            self._event = ""
            return None
        message = SSEMessage(
            event=self._event or "message", data="\n".join(self._data), id=self._id
        )
        self._event = ""
        self._data = []
        self._id = None
        return message


def _next_line(buffer: bytes, start: int) -> tuple[bytes, int]:
    """
    The line that begins at C{start}, ended by LF, CR or CRLF, and where the
    next one begins; C{-1} for the latter if the line is not complete yet.
    """
    lf = buffer.find(b"\n", start)
    cr = buffer.find(b"\r", start, lf if lf >= 0 else len(buffer))
    if cr >= 0:
        if cr + 1 == len(buffer):
            # A CR at the very end may be the first half of a CRLF.
            return b"", -1
        return buffer[start:cr], cr + (2 if buffer[cr + 1 : cr + 2] == b"\n" else 1)
    if lf >= 0:
        return buffer[start:lf], lf + 1
    return b"", -1
