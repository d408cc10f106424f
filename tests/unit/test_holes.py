"""
Tests for L{boxsync.holes}: runs of zeros written as holes read back as the
same bytes, take no room, and never shrink nor damage what is around them;
and L{boxsync.fs.copy_range} and L{boxsync.writer.write_all}, which use them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import given, settings, strategies as st

from boxsync import holes
from boxsync.fs import copy_range
from boxsync.writer import write_all

MiB = 1024 * 1024
PAGE = holes.MIN_HOLE


def allocated(path: Path) -> int:
    """
    How many bytes of the disk the file at C{path} takes.
    """
    return path.stat().st_blocks * 512


@pytest.fixture
def fd(tmp_path: Path) -> Iterator[int]:
    opened = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
    yield opened
    os.close(opened)


def test_zeros_of_a_page_or_more_are_a_hole_and_nothing_else_is() -> None:
    assert holes.is_hole(bytes(PAGE))
    assert holes.is_hole(memoryview(bytes(4 * MiB)))
    assert not holes.is_hole(bytes(PAGE - 1))
    assert not holes.is_hole(bytes(PAGE) + b"\x01")
    assert not holes.is_hole(b"\x01" + bytes(PAGE))
    # Longer than a block: written as it is.
    assert not holes.is_hole(bytes(4 * MiB + 1))


def test_a_piece_s_zero_head_and_tail_in_whole_pages_are_holes() -> None:
    data = bytes(3 * PAGE + 10) + b"data" + bytes(2 * PAGE + 5)
    assert holes.parts(data) == [
        (0, 3 * PAGE, True),
        (3 * PAGE, len(data) - 2 * PAGE, False),
        (len(data) - 2 * PAGE, len(data), True),
    ]
    assert holes.parts(b"data" + bytes(PAGE - 1)) == [(0, PAGE + 3, False)]
    assert holes.parts(bytes(2 * PAGE)) == [(0, 2 * PAGE, True)]
    assert holes.parts(b"") == []


def test_write_all_appends_zeros_as_holes(tmp_path: Path, fd: int) -> None:
    pieces = [b"head", bytes(MiB), bytes(3 * MiB), b"middle", bytes(MiB) + b"tail" + bytes(2 * MiB)]
    write_all(fd, pieces)
    path = tmp_path / "file"
    assert path.read_bytes() == b"".join(pieces)
    assert allocated(path) <= 8 * PAGE


def test_a_file_ending_in_a_hole_has_its_size_at_every_step(tmp_path: Path, fd: int) -> None:
    write_all(fd, [b"x"])
    write_all(fd, [bytes(MiB)])
    assert os.fstat(fd).st_size == MiB + 1
    # A resume appends at the size it finds: the position is the end.
    assert os.lseek(fd, 0, os.SEEK_CUR) == MiB + 1


def test_put_punches_zeros_over_what_was_there(tmp_path: Path, fd: int) -> None:
    path = tmp_path / "file"
    os.write(fd, os.urandom(4 * MiB))
    holes.put(fd, bytes(2 * MiB), MiB)
    holes.put(fd, bytes(MiB), 5 * MiB)
    data = path.read_bytes()
    assert len(data) == 6 * MiB
    assert data[MiB : 3 * MiB] == bytes(2 * MiB)
    assert data[4 * MiB :] == bytes(2 * MiB)
    assert allocated(path) <= 2 * MiB + 4 * PAGE


def test_put_never_shrinks_a_file_written_further_already(tmp_path: Path, fd: int) -> None:
    os.pwrite(fd, b"end", 10 * MiB)
    holes.put(fd, bytes(MiB), 0)
    assert os.fstat(fd).st_size == 10 * MiB + 3
    assert (tmp_path / "file").read_bytes()[-3:] == b"end"


def test_spans_tell_the_holes_and_the_data_of_a_file(tmp_path: Path, fd: int) -> None:
    os.pwrite(fd, b"x" * PAGE, 4 * MiB)
    os.ftruncate(fd, 8 * MiB)
    os.lseek(fd, 10, os.SEEK_SET)
    spans = holes.spans(fd, 0, 8 * MiB)
    assert os.lseek(fd, 0, os.SEEK_CUR) == 10
    assert spans == [(0, 4 * MiB, True), (4 * MiB, PAGE, False), (4 * MiB + PAGE, 4 * MiB - PAGE, True)]
    assert holes.spans(fd, 4 * MiB + 10, 100) == [(4 * MiB + 10, 100, False)]


def test_copy_range_keeps_the_holes_of_what_it_copies(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    with source.open("wb") as f:
        f.truncate(64 * MiB)
        f.seek(20 * MiB)
        f.write(b"data" * PAGE)
    with source.open("rb") as s, target.open("w+b") as t:
        t.write(os.urandom(MiB))
        t.flush()
        assert copy_range(s.fileno(), MiB, t.fileno(), MiB, 63 * MiB)
        # Past the end of the source: not all there to copy.
        assert not copy_range(s.fileno(), 60 * MiB, t.fileno(), 0, 8 * MiB)
    assert target.read_bytes()[MiB:] == source.read_bytes()[MiB:]
    assert allocated(target) <= 3 * MiB


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3 * MiB),
            st.one_of(
                st.binary(max_size=64),
                st.integers(0, 2 * MiB).map(bytes),
                st.tuples(st.integers(0, 3 * PAGE), st.binary(min_size=1, max_size=64), st.integers(0, 3 * PAGE)).map(
                    lambda t: bytes(t[0]) + t[1] + bytes(t[2])
                ),
            ),
        ),
        max_size=8,
    )
)
def test_any_writes_read_back_as_written(writes: list[tuple[int, bytes]]) -> None:
    """
    Whatever is put where, and whatever is appended, the file reads as if
    each had been written with C{pwrite} and C{write}.
    """
    with tempfile.TemporaryFile() as put, tempfile.TemporaryFile() as appended:
        put.write(os.urandom(MiB))
        put.flush()
        expected = bytearray(os.pread(put.fileno(), MiB, 0))
        for offset, data in writes:
            holes.put(put.fileno(), data, offset)
            if data:
                expected.extend(bytes(max(0, offset - len(expected))))
                expected[offset : offset + len(data)] = data
        assert os.pread(put.fileno(), len(expected) + 1, 0) == bytes(expected)
        write_all(appended.fileno(), [data for _, data in writes])
        assert os.pread(appended.fileno(), 64 * MiB, 0) == b"".join(data for _, data in writes)
