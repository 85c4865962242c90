"""Checkpoint files: atomic replace, self-checking content."""

from logstore.storage.checkpoint import read_checkpoint, write_checkpoint


def test_round_trip_and_replace(tmp_path):
    """A checkpoint reads back what was written last, and leaves no temp file."""
    path = tmp_path / "recovery-point"
    write_checkpoint(path, "41")
    write_checkpoint(path, "42")
    assert read_checkpoint(path) == "42"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recovery-point"]


def test_missing_is_none(tmp_path):
    """A missing checkpoint reads as None, not as an error."""
    assert read_checkpoint(tmp_path / "nope") is None


def test_any_damaged_byte_is_detected(tmp_path):
    """Flipping any byte of the file makes it read as None (never a wrong value)."""
    path = tmp_path / "log-start-offset"
    write_checkpoint(path, "1234567")
    good = path.read_bytes()
    for i in range(len(good) - 1):  # the last byte is the newline
        damaged = bytearray(good)
        damaged[i] ^= 0x01
        path.write_bytes(bytes(damaged))
        assert read_checkpoint(path) is None, i
