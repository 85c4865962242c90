"""Topic and group name rules: [A-Za-z0-9._-]{1,249}, not '.'/'..', '__' reserved."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logstore.broker.names import MAX_NAME_LENGTH, validate_group_name, validate_topic_name
from logstore.errors import InvalidArgument

VALIDATORS = [
    pytest.param(validate_topic_name, "topic", id="topic"),
    pytest.param(validate_group_name, "group", id="group"),
]


@pytest.mark.parametrize(("validate", "what"), VALIDATORS)
@pytest.mark.parametrize(
    "name",
    ["a", "orders", "Orders.v2", "my_topic-1", "0", "-", "_", "...", ".hidden", "a..b", "x" * MAX_NAME_LENGTH, "_a"],
)
def test_valid_names_are_returned_unchanged(validate, what: str, name: str) -> None:
    """Names made only of allowed characters, 1 to 249 long, pass and come back as given."""
    assert validate(name) == name


@pytest.mark.parametrize(("validate", "what"), VALIDATORS)
@pytest.mark.parametrize(
    ("name", "fix"),
    [
        ("", "give 1 to 249 characters"),
        ("x" * (MAX_NAME_LENGTH + 1), "is 250 characters long; shorten it to at most 249"),
        ("x" * 10_000, "is 10000 characters long; shorten it to at most 249"),
        (".", "is a path component"),
        ("..", "is a path component"),
        ("../x", "contains '/' (U+002F SOLIDUS) at position 2"),
        ("a/b", "contains '/' (U+002F SOLIDUS) at position 1"),
        ("/abs", "contains '/' (U+002F SOLIDUS) at position 0"),
        ("a\\b", "contains '\\\\' (U+005C REVERSE SOLIDUS) at position 1"),
        ("..\\..\\x", "contains '\\\\' (U+005C REVERSE SOLIDUS) at position 2"),
        ("a\x00b", "contains '\\x00' (U+0000) at position 1"),
        ("abc\n", "contains '\\n' (U+000A) at position 3"),
        ("a b", "contains ' ' (U+0020 SPACE) at position 1"),
        ("c:x", "contains ':' (U+003A COLON) at position 1"),
        ("a*", "contains '*' (U+002A ASTERISK) at position 1"),
        ("\u043erders", "(U+043E CYRILLIC SMALL LETTER O) at position 0"),
        ("caf\u00e9", "(U+00E9 LATIN SMALL LETTER E WITH ACUTE) at position 3"),
        ("a\u200bb", "(U+200B ZERO WIDTH SPACE) at position 1"),
        ("\uff0e\uff0e", "(U+FF0E FULLWIDTH FULL STOP) at position 0"),
        ("a\u2215b", "(U+2215 DIVISION SLASH) at position 1"),
        ("\U0001f600", "(U+1F600 GRINNING FACE) at position 0"),
    ],
)
def test_invalid_names_say_what_to_fix(validate, what: str, name: str, fix: str) -> None:
    """Each invalid name raises InvalidArgument naming the kind of name and the exact problem."""
    with pytest.raises(InvalidArgument) as info:
        validate(name)
    message = str(info.value)
    assert fix in message
    assert what in message
    assert info.value.grpc_status == "INVALID_ARGUMENT"


@pytest.mark.parametrize(("validate", "what"), VALIDATORS)
def test_disallowed_characters_list_what_is_allowed(validate, what: str) -> None:
    """A bad character's message lists the allowed characters."""
    with pytest.raises(InvalidArgument, match=r"use only ASCII letters, digits, '\.', '_' and '-'"):
        validate("a/b")


@pytest.mark.parametrize(("validate", "what"), VALIDATORS)
def test_long_names_are_cut_in_the_message(validate, what: str) -> None:
    """An overlong name is not echoed in full, so one bad request cannot flood the logs."""
    with pytest.raises(InvalidArgument) as info:
        validate("y" * 100_000)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(("validate", "what"), VALIDATORS)
@pytest.mark.parametrize("name", ["__consumer_offsets", "__x", "__"])
def test_double_underscore_is_reserved_unless_internal(validate, what: str, name: str) -> None:
    """Names starting with '__' are refused by default and accepted with allow_internal=True."""
    with pytest.raises(InvalidArgument, match=rf"reserved for the broker's internal {what}s"):
        validate(name)
    assert validate(name, allow_internal=True) == name


@pytest.mark.parametrize(("validate", "what"), VALIDATORS)
@pytest.mark.parametrize("name", ["", ".", "..", "__/x", "x" * 250])
def test_allow_internal_relaxes_nothing_else(validate, what: str, name: str) -> None:
    """allow_internal only lifts the '__' reservation; every other rule still applies."""
    with pytest.raises(InvalidArgument):
        validate(name, allow_internal=True)


@pytest.mark.parametrize(("validate", "what"), VALIDATORS)
@pytest.mark.parametrize("name", [None, b"orders", 7])
def test_non_strings_are_rejected(validate, what: str, name: object) -> None:
    """A name that is not a str (bytes included) raises InvalidArgument, not TypeError."""
    with pytest.raises(InvalidArgument, match="must be a string"):
        validate(name)


@given(st.text(max_size=300))
def test_accepts_exactly_the_documented_language(name: str) -> None:
    """For any text, validation succeeds exactly when the name matches the documented rules."""
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
    expected = (
        1 <= len(name) <= 249
        and set(name) <= allowed
        and name not in (".", "..")
        and not name.startswith("__")
    )
    try:
        validate_topic_name(name)
        accepted = True
    except InvalidArgument:
        accepted = False
    assert accepted == expected


@given(st.text(alphabet="._-aZ09/\\\x00", min_size=1, max_size=12))
def test_accepted_names_are_single_safe_path_components(name: str) -> None:
    """Any accepted name is one path component: no separator, no NUL, never '.' or '..'."""
    try:
        validate_topic_name(name)
    except InvalidArgument:
        return
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in (".", "..")
