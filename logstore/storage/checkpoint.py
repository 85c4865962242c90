"""Small crash-safe files: checkpoints and markers.

A checkpoint is written to ``<name>.tmp``, fsynced, renamed over ``<name>``
and the directory is fsynced, so after a crash the file holds either the old
or the new content, never a mix.  Content is one line of text followed by a
CRC32C of that line, so a damaged file is detected and treated as missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from logstore.storage.crc import crc32c

__all__ = ["write_checkpoint", "read_checkpoint", "fsync_dir"]


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """fsync a directory so that renames and new entries in it are durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (a single line)."""
    if "\n" in text:
        raise ValueError("a checkpoint holds a single line")
    payload = text.encode("utf-8")
    data = payload + b" " + f"{crc32c(payload):08x}".encode("ascii") + b"\n"
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_checkpoint(path: Path) -> str | None:
    """The checkpoint's text, or None when missing or damaged."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    line = raw.rstrip(b"\n")
    payload, sep, crc_hex = line.rpartition(b" ")
    if not sep or len(crc_hex) != 8:
        return None
    try:
        if int(crc_hex, 16) != crc32c(payload):
            return None
        return payload.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
