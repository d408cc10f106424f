"""
Tests for L{boxsync.client.ignore}.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from boxsync.client.ignore import (
    DEFAULT_RULES,
    IGNORE_FILE,
    LOCAL_IGNORE_FILE,
    TEMP_PREFIX,
    IgnoreRules,
    is_temp_name,
)

segments = st.text(
    st.characters(codec="utf-8", exclude_characters="/\\", min_codepoint=0x20),
    min_size=1,
    max_size=10,
).filter(lambda s: s not in (".", ".."))


@given(st.lists(segments, min_size=1, max_size=4))
def test_no_rules_ignore_only_hidden_temp_and_default(parts: list[str]) -> None:
    """
    Without rules, a path is ignored only if it is in the hidden folder,
    names a temporary file or is left out by a default rule, which then
    says so.
    """
    path = "/".join(parts)
    rules = IgnoreRules()
    expected = parts[0] == ".boxsync" or any(p.startswith(TEMP_PREFIX) for p in parts)
    assert rules.ignored(path) is (expected or rules.by_default(path) is not None)


#: The default rules that match a name at any depth.
ANYWHERE = [rule for rule in DEFAULT_RULES if not rule[0].startswith("/")]


@given(st.lists(segments, min_size=1, max_size=3), st.sampled_from(ANYWHERE))
def test_each_default_rule_leaves_out_what_it_matches_and_says_why(
    parts: list[str], rule: tuple[str, str]
) -> None:
    assume(".boxsync" not in parts and not any(map(is_temp_name, parts)))
    pattern, what = rule
    name = {
        ".~lock.*#": ".~lock.{}#",
        "~$*": "~${}",
        "~*.tmp": "~{}.tmp",
        ".*.sw[a-p]": ".{}.swp",
        "*.kate-swp": "{}.kate-swp",
        "\\#*#": "#{}#",
        ".#*": ".#{}",
        "*.crdownload": "{}.crdownload",
        "*.part": "{}.part",
        ".fuse_hidden*": ".fuse_hidden{}",
        ".nfs" + "?" * 24: ".nfs{:0>24}",
        ".Trash-*/": ".Trash-{}",
    }[pattern].format(parts[-1][:24])
    path = "/".join([*parts[:-1], name])
    is_dir = pattern.endswith("/")
    rules = IgnoreRules()
    assert rules.ignored(path, is_dir)
    reason = rules.by_default(path, is_dir)
    assert reason is not None and reason.startswith(what + ", ") and f"!{pattern} " in reason
    # A line of the shared file syncs it after all.
    assert not IgnoreRules.from_lines([f"!{pattern}"]).ignored(path, is_dir)
    # Left out by a rule of the folder's own as well: on purpose, unsaid.
    assert IgnoreRules.from_lines(["*"]).by_default(path, is_dir) is None


def test_a_default_rule_leaves_out_only_what_it_names() -> None:
    rules = IgnoreRules()
    for path, is_dir in [
        ("report.odt", False),
        ("notes.swp", False),
        ("lock.txt", False),
        ("a.part.txt", False),
        ("partial", False),
        (".nfsconfig", False),
        ("Trash-1000", True),
        (".Trash-1000", False),
        ("my#notes#", False),
        ("x~", False),
        # Only the file system's own, at the top of the folder (its mount).
        ("photos/lost+found", True),
        ("lost+found", False),
        ("lost+found2", True),
    ]:
        assert not rules.ignored(path, is_dir), path
    assert rules.ignored("lost+found", True) and rules.ignored("lost+found/#1234")
    assert (rules.by_default("lost+found", True) or "").startswith("the file system's own folder")
    assert not IgnoreRules.from_lines(["!/lost+found/"]).ignored("lost+found", True)
    assert IgnoreRules().fingerprint != IgnoreRules.from_lines(["!*.part"]).fingerprint


def test_hidden_folder_and_temp_names() -> None:
    rules = IgnoreRules.from_lines(["!*"])
    assert rules.ignored(".boxsync", is_dir=True)
    assert rules.ignored(".boxsync/state.sqlite")
    # The hidden folder of a folder synced on its own inside this one.
    assert rules.ignored("sub/.boxsync/x")
    assert rules.ignored_in_synced("sub/.boxsync", ".boxsync", True)
    assert not rules.ignored_in_synced("sub/.boxsync", ".boxsync", False)
    assert rules.ignored("sub/.boxsync", is_dir=True)
    assert not rules.ignored("sub/.boxsync")  # a file of that name
    assert not rules.ignored("sub/x.boxsync") and not rules.ignored("sub/.boxsyncs/x")
    assert rules.ignored(f"a/{TEMP_PREFIX}123")
    assert rules.ignored(f"{TEMP_PREFIX}d/file")
    assert is_temp_name(TEMP_PREFIX + "x")
    assert not is_temp_name("x" + TEMP_PREFIX)


def test_ignore_file_is_synced() -> None:
    """
    C{.boxsyncignore} is never ignored, even by a rule that matches it.
    """
    rules = IgnoreRules.from_lines(["*", ".*"])
    assert not rules.ignored(IGNORE_FILE)
    assert rules.ignored(f"sub/{IGNORE_FILE}")
    assert rules.ignored("anything")


def test_gitignore_syntax() -> None:
    rules = IgnoreRules.from_lines(
        ["# a comment", "", "*.log", "!keep.log", "build/", "/top.txt", "docs/*.pdf"]
    )
    assert rules.ignored("x.log")
    assert rules.ignored("a/b/x.log")
    assert not rules.ignored("a/keep.log")
    assert rules.ignored("build", is_dir=True)
    assert not rules.ignored("build")
    assert rules.ignored("a/build/x.c")
    assert rules.ignored("top.txt")
    assert not rules.ignored("a/top.txt")
    assert rules.ignored("docs/a.pdf")
    assert not rules.ignored("docs/sub/a.pdf")
    assert not rules.ignored("# a comment")


def test_load(tmp_path: Path) -> None:
    (tmp_path / IGNORE_FILE).write_text("*.tmp\n", encoding="utf-8")
    rules = IgnoreRules.load(tmp_path)
    assert rules.ignored("a.tmp")
    assert not rules.ignored("a.txt")


def test_load_without_file(tmp_path: Path) -> None:
    rules = IgnoreRules.load(tmp_path)
    assert not rules.ignored("a.tmp")
    assert not rules.reload()


def test_reload(tmp_path: Path) -> None:
    """
    L{IgnoreRules.reload} reads the file again and tells whether the rules
    changed.
    """
    ignore_file = tmp_path / IGNORE_FILE
    ignore_file.write_text("*.tmp\n", encoding="utf-8")
    rules = IgnoreRules.load(tmp_path)
    assert not rules.reload()

    ignore_file.write_text("*.bak\n", encoding="utf-8")
    assert rules.reload()
    assert rules.ignored("a.bak")
    assert not rules.ignored("a.tmp")

    # Rewritten with the same rules: nothing changed.
    ignore_file.write_text("*.bak\n", encoding="utf-8")
    assert not rules.reload()

    ignore_file.unlink()
    assert rules.reload()
    assert not rules.ignored("a.bak")


def test_unreadable(tmp_path: Path) -> None:
    """
    An ignore file that cannot be read stops L{IgnoreRules.load}; on
    L{IgnoreRules.reload} the rules stay as they were.
    """
    (tmp_path / IGNORE_FILE).write_text("*.tmp\n", encoding="utf-8")
    rules = IgnoreRules.load(tmp_path)
    (tmp_path / IGNORE_FILE).unlink()
    (tmp_path / IGNORE_FILE).mkdir()
    assert not rules.reload()
    assert rules.ignored("a.tmp")
    with pytest.raises(IsADirectoryError):
        IgnoreRules.load(tmp_path)


def test_a_clients_own_list_adds_to_the_shared_one(tmp_path: Path) -> None:
    """
    C{.boxsync/ignore} leaves paths out of this client alone, beside the
    shared C{.boxsyncignore}; the fingerprint tells whether either changed
    what is ignored (not a comment or a blank line).
    """
    (tmp_path / IGNORE_FILE).write_text("*.log\n", encoding="utf-8")
    (tmp_path / ".boxsync").mkdir()
    (tmp_path / LOCAL_IGNORE_FILE).write_text("videos/\n", encoding="utf-8")
    rules = IgnoreRules.load(tmp_path)
    assert rules.ignored("a.log") and rules.ignored("videos", is_dir=True)
    assert not rules.ignored("a.txt")
    before = rules.fingerprint
    (tmp_path / LOCAL_IGNORE_FILE).write_text("videos/\n# only a comment\n\n", encoding="utf-8")
    rules.reload()
    assert rules.fingerprint == before
    (tmp_path / LOCAL_IGNORE_FILE).unlink()
    assert rules.reload() and rules.fingerprint != before
    assert not rules.ignored("videos", is_dir=True) and rules.ignored("a.log")


def test_a_line_that_is_no_pattern_is_left_out_and_said(tmp_path: Path) -> None:
    """
    A line git takes for no pattern (C{!} alone, a trailing backslash) in
    the shared file: left out with a warning naming it, the other lines
    kept (one client's typo there must not stop every client).
    """
    from twisted.logger import globalLogPublisher

    said: list[str] = []

    def observe(event: dict[str, object]) -> None:
        if "is no pattern" in str(event.get("log_format", "")):
            said.append(f"{event['name']}:{event['number']}:{event['line']}")

    (tmp_path / IGNORE_FILE).write_text("*.log\n!\nbuild/\\\n*.tmp\n", encoding="utf-8")
    globalLogPublisher.addObserver(observe)
    try:
        rules = IgnoreRules.load(tmp_path)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert rules.ignored("a.log") and rules.ignored("a.tmp") and not rules.ignored("a.txt")
    assert said == [f"{IGNORE_FILE}:2:!", f"{IGNORE_FILE}:3:build/\\"]
