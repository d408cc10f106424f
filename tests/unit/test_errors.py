"""
Errors told in one line (L{boxsync.errors}).
"""

from boxsync.errors import first_line


def test_the_first_line_of_a_long_message() -> None:
    error = RuntimeError("\n  connection refused\nDETAIL: is the server running?\n")
    assert first_line(error) == "connection refused"


def test_an_error_without_text_is_named_by_its_type() -> None:
    assert first_line(TimeoutError()) == "TimeoutError"
    assert first_line(ValueError("   ")) == "ValueError"


def test_an_error_without_text_may_be_told_otherwise() -> None:
    assert first_line(ConnectionError(), "no answer") == "no answer"
    assert first_line(ConnectionError("reset"), "no answer") == "reset"
