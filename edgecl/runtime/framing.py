"""Length + CRC32 binary framing for noisy serial links.

A frame is ``MAGIC (2 bytes) | length (uint32 LE) | payload | crc32 (uint32 LE)``,
the CRC (zlib's CRC-32) covering the length field and the payload, so a flipped
length is caught too. The payload is one NDJSON message without its newline.
On a bad checksum or an impossible length the decoder skips one byte and hunts
for the next magic, so a valid frame right after a damaged one is still found.
Bytes outside any frame count once per run as ``bad_frame``.

>>> dec = FrameDecoder(max_payload=64)
>>> wire = encode_frame(b'{"x": [1]}') + b"noise" + encode_frame(b'{"x": [2]}')
>>> [x if isinstance(x, bytes) else x.reason for x in dec.feed(wire)]
[b'{"x": [1]}', 'bad_frame', b'{"x": [2]}']
"""

from __future__ import annotations

import struct
import zlib

from edgecl.runtime.protocol import Reject

__all__ = ["MAGIC", "FrameDecoder", "encode_frame"]

MAGIC = b"\xec\x1e"
_HEAD = len(MAGIC) + 4
_CRC = 4


def encode_frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in one frame."""
    n = struct.pack("<I", len(payload))
    return MAGIC + n + payload + struct.pack("<I", zlib.crc32(n + payload))


class FrameDecoder:
    """Incremental frame decoder: ``feed(bytes) -> list[bytes | Reject]``; never raises."""

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()
        self._junk = False  # inside a run of bytes already counted as one reject

    def feed(self, data: bytes) -> list[bytes | Reject]:
        """Append ``data``; return the payloads and rejects it completes, in order."""
        buf = self._buf
        buf += data
        out: list[bytes | Reject] = []
        while buf:
            i = buf.find(MAGIC)
            if i < 0:
                # Keep a last byte that may be the first half of a magic split by the feed.
                keep = 1 if buf[-1:] == MAGIC[:1] else 0
                self._drop(len(buf) - keep, out)
                break
            self._drop(i, out)
            if len(buf) < _HEAD:
                break
            (n,) = struct.unpack_from("<I", buf, len(MAGIC))
            if n > self.max_payload:
                out.append(Reject("too_long", f"frame length {n} > {self.max_payload}"))
                self._junk = True
                del buf[:1]
                continue
            if len(buf) < _HEAD + n + _CRC:
                break
            (crc,) = struct.unpack_from("<I", buf, _HEAD + n)
            if zlib.crc32(memoryview(buf)[len(MAGIC) : _HEAD + n]) != crc:
                out.append(Reject("crc", "frame checksum mismatch"))
                self._junk = True
                del buf[:1]
                continue
            out.append(bytes(buf[_HEAD : _HEAD + n]))
            self._junk = False
            del buf[: _HEAD + n + _CRC]
        return out

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished frame."""
        return len(self._buf)

    def _drop(self, n: int, out: list[bytes | Reject]) -> None:
        if n <= 0:
            return
        if not self._junk:
            out.append(Reject("bad_frame", "bytes outside a frame"))
            self._junk = True
        del self._buf[:n]

    def flush(self) -> list[bytes | Reject]:
        """End of stream: leftover bytes are an incomplete frame (``truncated``)."""
        return [Reject("truncated", "incomplete frame at end of stream")] if self.reset() else []

    def reset(self) -> bool:
        """Forget buffered bytes; True if any were pending."""
        pending = bool(self._buf)
        self._buf.clear()
        self._junk = False
        return pending
