"""TFRecord files, the framing of TensorFlow event files, read incrementally and robustly.

Each record is ``uint64 length | uint32 masked_crc32c(length) | data |
uint32 masked_crc32c(data)``, little-endian. Both checksums are verified, with CRC32C in
C through google-crc32c (a pure-Python fallback is kept, ~300x slower on large
records). A record whose data checksum fails is skipped; a bad header starts a
byte-by-byte search for the next valid header, so garbage in the middle of a file loses
only itself. An incomplete record at the end of a file is waited for while the writer
may still be writing, and counted as truncated only at the end.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from collections.abc import Callable

HEADER_BYTES = 12
FOOTER_BYTES = 4
#: A record longer than this (a huge graph or image) is skipped without being read.
MAX_RECORD_BYTES = 256 * 1024 * 1024
READ_CHUNK = 1024 * 1024

# Reasons counted in ``skipped``.
BAD_HEADER = "corrupt record header (searched for the next record)"
BAD_DATA_CRC = "record data checksum mismatch"
TRUNCATED = "truncated record at end of file"
OVERSIZED = "record larger than the limit, skipped"
FILE_SHRANK = "event file shrank, read again from the start"

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_U32 = struct.Struct("<I")


def _crc_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE = _crc_table()


def crc32c_python(data: bytes | bytearray | memoryview) -> int:
    """CRC32C (Castagnoli), table-driven; the fallback when google-crc32c is absent."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


crc32c: Callable[[bytes], int]
try:
    from google_crc32c import value as crc32c
except ImportError:  # pragma: no cover - the dependency is declared
    crc32c = crc32c_python


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC32C rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One TFRecord (what TensorFlow's writers put on disk for ``data``)."""
    length = struct.pack("<Q", len(data))
    return length + _U32.pack(masked_crc32c(length)) + data + _U32.pack(masked_crc32c(data))


class TFRecordParser:
    """Splits a TFRecord byte stream into verified records; never raises on bad input."""

    def __init__(
        self, max_record_bytes: int = MAX_RECORD_BYTES, skipped: Counter[str] | None = None
    ) -> None:
        self.max_record_bytes = max_record_bytes
        self.skipped: Counter[str] = skipped if skipped is not None else Counter()
        self.records = 0
        self.garbage_bytes = 0
        self._buf = bytearray()
        self._drop = 0  # bytes of an oversized record still to come
        self._searching = False

    @property
    def pending(self) -> int:
        """Bytes held back: an incomplete record (or the tail of a search)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """The records completed by ``data``."""
        if self._drop:
            n = min(self._drop, len(data))
            self._drop -= n
            data = data[n:]
        self._buf += data
        return self._drain()

    def finish(self) -> list[bytes]:
        """The stream ended: records still found in what was held back (past a header
        that only looked valid); the rest is a truncated record or garbage."""
        out = self._drain(final=True)
        if self._searching:
            self.garbage_bytes += len(self._buf)
        elif self._buf or self._drop:
            self.skipped[TRUNCATED] += 1
        self.reset()
        return out

    def reset(self) -> None:
        """Forget everything held back (the file is read again from the start)."""
        self._buf.clear()
        self._drop = 0
        self._searching = False

    def _garbage(self) -> None:
        if not self._searching:
            self._searching = True
            self.skipped[BAD_HEADER] += 1
        self.garbage_bytes += 1

    def _drain(self, final: bool = False) -> list[bytes]:
        """Cut complete records off the buffer.

        While searching past garbage, a header whose checksum matches is only tentative:
        the 8 bytes and CRC of a real record's payload can look like one. If its data
        checksum fails, its length is too big, or (at the end) its data never came, the
        search goes on one byte further instead of trusting its length.
        """
        buf = self._buf
        end = len(buf)
        out: list[bytes] = []
        i = 0
        while end - i >= HEADER_BYTES:
            length, header_crc = _HEADER.unpack_from(buf, i)
            if header_crc != masked_crc32c(bytes(buf[i : i + 8])):
                self._garbage()
                i += 1
                continue
            tentative = self._searching
            total = HEADER_BYTES + length + FOOTER_BYTES
            if length > self.max_record_bytes:
                if tentative:
                    self._garbage()
                    i += 1
                    continue
                self.skipped[OVERSIZED] += 1
                if end - i >= total:
                    i += total
                    continue
                self._drop = total - (end - i)
                i = end
                break
            if end - i < total:
                if final and tentative:
                    self._garbage()
                    i += 1
                    continue
                break  # incomplete: the writer is still writing it
            start = i + HEADER_BYTES
            data = bytes(buf[start : start + length])
            (data_crc,) = _U32.unpack_from(buf, start + length)
            if data_crc == masked_crc32c(data):
                out.append(data)
                self.records += 1
                self._searching = False
            elif tentative:
                self._garbage()
                i += 1
                continue
            else:
                self.skipped[BAD_DATA_CRC] += 1
            i += total
        del buf[:i]
        return out


class EventFileReader:
    """Reads one event file incrementally: records appended since the last call."""

    def __init__(
        self,
        path: str,
        *,
        max_record_bytes: int = MAX_RECORD_BYTES,
        read_chunk: int = READ_CHUNK,
        skipped: Counter[str] | None = None,
    ) -> None:
        self.path = path
        self.parser = TFRecordParser(max_record_bytes, skipped)
        self._chunk = read_chunk
        self._fd: int | None = None
        self._pos = 0

    @property
    def skipped(self) -> Counter[str]:
        """Reasons and counts of what was skipped (shared with the follower, if given)."""
        return self.parser.skipped

    @property
    def offset(self) -> int:
        """Bytes of the file read so far."""
        return self._pos

    def read(self, budget: int | None = None) -> list[bytes]:
        """Complete, verified records written since the last call (reads ~``budget`` bytes)."""
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                return []
        out: list[bytes] = []
        try:
            if os.fstat(self._fd).st_size < self._pos:
                self.skipped[FILE_SHRANK] += 1
                self._pos = 0
                self.parser.reset()
            taken = 0
            while budget is None or taken < budget:
                data = os.pread(self._fd, self._chunk, self._pos)
                if not data:
                    break
                self._pos += len(data)
                taken += len(data)
                out.extend(self.parser.feed(data))
        except OSError:
            pass  # e.g. EIO on a network file system: try again next time
        return out

    def finish(self) -> list[bytes]:
        """Everything left; an incomplete tail now counts as truncated."""
        out = self.read(None)
        out.extend(self.parser.finish())
        self.close()
        return out

    def close(self) -> None:
        """Release the file descriptor."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
