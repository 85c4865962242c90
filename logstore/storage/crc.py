"""CRC32C (Castagnoli) through crcmod's C extension.

crcmod silently falls back to a pure-Python implementation (about 20 MB/s
instead of about 500 MB/s) when its C extension is missing; ``EXTENSION_ACTIVE``
says which one is running and the test suite asserts it is the C one.
"""

from __future__ import annotations

import importlib
import logging

import crcmod.predefined

_LOGGER = logging.getLogger(__name__)

_crcmod_impl = importlib.import_module("crcmod.crcmod")

EXTENSION_ACTIVE: bool = bool(getattr(_crcmod_impl, "_usingExtension", False))
"""True when crcmod runs its C extension (the only acceptable way in production)."""

if not EXTENSION_ACTIVE:  # pragma: no cover - depends on the install
    _LOGGER.warning(
        "crcmod's C extension is not active: CRC32C runs in pure Python at about "
        "20 MB/s. Reinstall crcmod with a C compiler and the Python headers present."
    )

crc32c = crcmod.predefined.mkPredefinedCrcFun("crc-32c")
"""``crc32c(data, crc=0) -> int``.  Pass a previous result as ``crc`` to continue
over a second buffer: ``crc32c(b, crc32c(a)) == crc32c(a + b)``."""

assert crc32c(b"123456789") == 0xE3069283, "crcmod is not computing CRC32C"
