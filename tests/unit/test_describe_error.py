"""registryd.adapter.describe_error: one line per exception, for messages and logs."""

from __future__ import annotations

from registryd.adapter import describe_error


def test_type_and_text_on_one_line() -> None:
    assert describe_error(OSError("connection\n  refused")) == "OSError: connection refused"


def test_the_type_alone_when_there_is_no_text() -> None:
    assert describe_error(MemoryError()) == "MemoryError"


def test_a_timeout_says_so() -> None:
    assert describe_error(TimeoutError()) == "timed out"  # asyncio's has no text
    assert describe_error(TimeoutError("after 5s")) == "timed out"


def test_the_text_is_cut_to_the_limit() -> None:
    assert describe_error(ValueError("x" * 1000)) == "ValueError: " + "x" * 300
    assert describe_error(ValueError("abcdef"), 3) == "ValueError: abc"


def test_a_replacement_text_is_used_instead() -> None:
    error = RuntimeError("token=s3cret failed")
    assert describe_error(error, text="token=*** failed") == "RuntimeError: token=*** failed"


def test_an_adapters_own_errors_are_their_text_as_it_is() -> None:
    class EntryError(ValueError):
        pass

    own = (EntryError,)
    assert describe_error(EntryError("port: -1 is out of range"), own=own) == (
        "port: -1 is out of range"
    )
    assert describe_error(TypeError("unhashable type: 'list'"), own=own) == (
        "TypeError: unhashable type: 'list'"
    )
