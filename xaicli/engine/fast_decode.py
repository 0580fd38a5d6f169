"""The fast path of :mod:`.decode`: plain 8-bit JPEG and PNG files decoded by torchvision's libjpeg-turbo /
libpng ops straight into a uint8 array, skipping Pillow's per-file Python work.

"Plain" is decided from the file's header, cheaply, and anything else goes to Pillow (the fallback,
which :mod:`.decode` documents and which stays the reference):

* **JPEG**: baseline, extended or progressive Huffman (SOF0/1/2), 8-bit samples, 1 (gray) or 3 (YCbCr)
  components; no Adobe marker (CMYK/YCCK/RGB transforms), no MPO index, no EXIF orientation other than
  1; small enough that Pillow would not decode it reduced (``draft``); ending with an EOI marker (a
  truncated file is Pillow's to reject). For ``mode="L"`` only gray JPEGs (Pillow computes colour -> luma
  its own way).
* **PNG**: 8-bit gray or RGB (colour types 0 and 2), not interlaced, no transparency (``tRNS``), not
  animated, no EXIF (an ``eXIf`` chunk or a "Raw profile type exif" text chunk), every chunk's CRC
  correct (Pillow rejects a bad one), small enough that Pillow's path would not reduce it. For
  ``mode="L"`` only gray PNGs.

Both libraries decode these files to the same pixels (``tests/test_decode.py`` checks it on baseline,
progressive, optimised, 4:2:0 / 4:2:2 / 4:4:4, gray, restart-marker and odd-sized JPEGs, and on PNGs of
both colour types). Whenever the fast decoder raises, the file goes to Pillow, so a broken file
gets exactly the error it got before. (One difference remains: on a corrupt JPEG that libjpeg can still
decode, both give the same pixels, but torchvision's decoder prints libjpeg's warning, e.g. "Corrupt
JPEG data: 418 extraneous bytes before marker 0xd9", on stderr.)

The ops are used only when torchvision is already imported (a torchvision model): importing it costs
1-2 s of CPU (it pulls in ``torch._dynamo``), more than it saves on a small folder. torchvision 0.29
deprecates its image codecs in favour of TorchCodec; when the ops are gone, everything goes to Pillow.
"""

from __future__ import annotations

import struct
import sys
import zlib

import numpy as np

HEAD_BYTES = 1 << 16  # a plain JPEG's markers before its frame header fit in the first 64 KiB

_JPEG_FRAMES_OK = {0xC0, 0xC1, 0xC2}  # baseline, extended sequential, progressive (Huffman)
_JPEG_FRAMES_OTHER = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # lossless, arithmetic
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION = 0x0112

_ops: tuple | None | bool = False  # False: not resolved yet; None: unavailable


def available(load: bool = False) -> bool:
    """Whether the fast decoder can be used: torchvision is imported (or ``load``: import it now) and has
    its image ops."""
    return _codec_ops(load) is not None


def _codec_ops(load: bool = False) -> tuple | None:
    """(decode_jpeg, decode_png) torchvision ops, or None when torchvision is not imported (and ``load``
    is false) or has none."""
    global _ops
    if _ops is False:
        if not load and "torchvision" not in sys.modules:
            return None  # not resolved: a later run (with a torchvision model) may use them
        try:
            import torch
            import torchvision.io.image  # noqa: F401  (loads the image ops' library)

            _ops = (torch.ops.image.decode_jpeg, torch.ops.image.decode_png)
        except (ImportError, AttributeError, RuntimeError, OSError):
            _ops = None
    return _ops


def jpeg_size(head: bytes, mode: str) -> tuple[int, int] | None:
    """(width, height) when ``head`` (the file's first bytes) starts a plain JPEG (module docstring)."""
    if head[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(head)
    while i + 4 <= n:
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(head[i + 2 : i + 4], "big")
        segment = head[i + 4 : i + 2 + length]
        if length < 2 or len(segment) < length - 2:
            return None  # malformed, or the segment runs past the head: Pillow decides
        if marker in _JPEG_FRAMES_OK:
            if len(segment) < 6:
                return None
            precision, height, width, components = segment[0], *struct.unpack(">HH", segment[1:5]), segment[5]
            if precision != 8 or height == 0 or width == 0 or components not in (1, 3):
                return None
            if mode == "L" and components != 1:
                return None
            return width, height
        if marker in _JPEG_FRAMES_OTHER or marker in (0xDA, 0xD9):  # other coding, or no frame header
            return None
        if marker == 0xEE and segment.startswith(b"Adobe"):
            return None
        if marker == 0xE2 and segment.startswith(b"MPF\x00"):
            return None
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            if exif_orientation(segment[6:]) not in (None, 1):
                return None
        i += 2 + length
    return None


def exif_orientation(tiff: bytes) -> int | None:
    """The Orientation tag of IFD0 of an EXIF (TIFF) block; None when absent; -1 when unreadable."""
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
        for k in range(count):
            entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag == _EXIF_ORIENTATION:
                return struct.unpack(order + "H", entry[8:10])[0] if kind == 3 else -1
    except (KeyError, struct.error):
        return -1
    return None


def png_size(data: bytes, mode: str) -> tuple[int, int] | None:
    """(width, height) when ``data`` (the whole file) is a plain PNG (module docstring); every chunk is
    walked and its CRC checked."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    i, n = len(_PNG_SIGNATURE), len(data)
    size = None
    seen_idat = seen_iend = False
    while i + 12 <= n:
        length, kind = struct.unpack(">I4s", data[i : i + 8])
        end = i + 12 + length
        if end > n:
            return None
        body = data[i + 8 : i + 8 + length]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[end - 4 : end])[0]:
            return None
        if kind == b"IHDR":
            if length != 13 or size is not None:
                return None
            width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (0, 2) or compression or filtering or interlace:
                return None
            if width == 0 or height == 0 or (mode == "L" and colour != 0):
                return None
            size = (width, height)
        elif size is None:
            return None  # IHDR must come first
        elif kind in (b"tRNS", b"acTL", b"eXIf"):
            return None
        elif kind in (b"tEXt", b"zTXt", b"iTXt") and body.split(b"\x00", 1)[0] == b"Raw profile type exif":
            return None
        elif kind == b"IDAT":
            seen_idat = True
        elif kind == b"IEND":
            seen_iend = True
            break
        i = end
    return size if seen_idat and seen_iend else None


def decode_plain(data: bytes, kind: str, channels: int) -> np.ndarray | None:
    """Decode a plain JPEG/PNG (``kind``: "JPEG" or "PNG") to uint8 (H, W, ``channels``); None when the
    ops are unavailable or the decoder raises (the caller then uses Pillow)."""
    ops = _codec_ops()
    if ops is None:
        return None
    import torch

    op = ops[0] if kind == "JPEG" else ops[1]
    source = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        out = op(source, 0) if kind == "PNG" else op(source, 0, False)  # mode UNCHANGED, no EXIF rotation
    except RuntimeError:
        return None
    if out.dtype != torch.uint8 or out.dim() != 3 or out.shape[0] not in (1, 3):
        return None
    arr = out.permute(1, 2, 0).numpy()  # (H, W, c)
    if arr.shape[2] != channels:
        arr = np.repeat(arr, channels, axis=2)  # gray source, RGB wanted: as Pillow's path replicates it
    return arr
