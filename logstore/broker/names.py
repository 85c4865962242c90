"""Validating the names of topics and consumer groups.

A valid name is 1 to 249 characters, each an ASCII letter, an ASCII digit,
``.``, ``_`` or ``-``, and is neither ``.`` nor ``..``.  Names starting with
``__`` are reserved for the broker's own (internal) topics and groups; the
broker passes ``allow_internal=True`` when it creates those.

The rules keep a name safe to use as a single directory name on any file
system (no separators, no NUL, no ``.``/``..``, short enough for a 255-byte
name limit with a partition suffix) and readable in logs and metrics.

What this module does not guarantee: that names differing only in letter
case are distinct on disk (``Orders`` and ``orders`` collide on a
case-insensitive file system; the broker, which knows the existing names,
must refuse the second), nor anything about names that already exist.

Every failure raises ``InvalidArgument`` whose message says exactly what to
change.
"""

from __future__ import annotations

import re
import unicodedata

from logstore.errors import InvalidArgument

__all__ = ["MAX_NAME_LENGTH", "INTERNAL_PREFIX", "validate_topic_name", "validate_group_name"]

MAX_NAME_LENGTH = 249
"""The longest allowed name, in characters (Kafka's limit)."""

INTERNAL_PREFIX = "__"
"""Names starting with this are reserved for the broker's internal topics and groups."""

_ALLOWED = "ASCII letters, digits, '.', '_' and '-'"
_VALID = re.compile(r"[A-Za-z0-9._-]+")
_INVALID_CHAR = re.compile(r"[^A-Za-z0-9._-]")
_SHOWN_CHARS = 60  # longest part of a bad name repeated in an error message


def _show(name: str) -> str:
    """The name as quoted in a message: escaped, and cut if very long."""
    if len(name) > _SHOWN_CHARS:
        return repr(name[:_SHOWN_CHARS]) + "..."
    return repr(name)


def _describe_char(ch: str) -> str:
    """A bad character, spelled so that lookalikes and invisible ones are plain."""
    char_name = unicodedata.name(ch, "")
    return f"{ch!r} (U+{ord(ch):04X}{' ' + char_name if char_name else ''})"


def _validate(name: object, what: str, allow_internal: bool) -> str:
    if not isinstance(name, str):
        raise InvalidArgument(f"a {what} name must be a string, got {type(name).__name__}")
    if not name:
        raise InvalidArgument(f"the {what} name is empty; give 1 to {MAX_NAME_LENGTH} characters: {_ALLOWED}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(
            f"{what} name {_show(name)} is {len(name)} characters long; "
            f"shorten it to at most {MAX_NAME_LENGTH}"
        )
    if not _VALID.fullmatch(name):
        bad = _INVALID_CHAR.search(name)
        assert bad is not None
        raise InvalidArgument(
            f"{what} name {_show(name)} contains {_describe_char(bad.group())} at position {bad.start()}; "
            f"use only {_ALLOWED}"
        )
    if name in (".", ".."):
        raise InvalidArgument(
            f"{what} name {name!r} is not allowed: it is a path component; "
            f"use a name with at least one letter, digit, '_' or '-'"
        )
    if not allow_internal and name.startswith(INTERNAL_PREFIX):
        raise InvalidArgument(
            f"{what} name {_show(name)} starts with {INTERNAL_PREFIX!r}, which is reserved for "
            f"the broker's internal {what}s; choose a name that does not start with {INTERNAL_PREFIX!r}"
        )
    return name


def validate_topic_name(name: str, *, allow_internal: bool = False) -> str:
    """Return ``name`` if it is a valid topic name, else raise ``InvalidArgument``.

    ``allow_internal`` admits names starting with ``__`` (for the broker's own topics).
    """
    return _validate(name, "topic", allow_internal)


def validate_group_name(name: str, *, allow_internal: bool = False) -> str:
    """Return ``name`` if it is a valid consumer group name, else raise ``InvalidArgument``.

    ``allow_internal`` admits names starting with ``__`` (for the broker's own groups).
    """
    return _validate(name, "group", allow_internal)
