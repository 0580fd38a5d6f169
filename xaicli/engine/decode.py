"""Decode one image file into a float32 ``(H, W, C)`` array in ``[0, 1]``.

This docstring is the user documentation of how unusual images are handled. A batch never stops on a bad
file: every image is either converted as described below, or rejected with one
:class:`~xaicli.errors.ImageDecodeError` whose short message says why (the engine records it for that
image and goes on).

Output
------
``load_image(path, mode)`` returns a C-contiguous ``float32`` array of shape ``(H, W, 1)`` for
``mode="L"`` and ``(H, W, 3)`` for ``mode="RGB"``, every value finite and in ``[0, 1]``. Any size from
1x1 up to Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is accepted, whatever its
aspect ratio.

Large images, reduced while decoding
------------------------------------
``load_image(path, mode, reduce_to=(h, w))`` may return a smaller image, never smaller than ``h x w``
in either dimension, so that a 24-megapixel photo for a 224x224 model does not become a 290 MB float
array (the engine asks for twice the model's input size): a JPEG is decoded at 1/2, 1/4 or 1/8 scale by
its decoder (Pillow's ``draft``, the DCT scaling of libjpeg), and other 8-bit images are shrunk after
decoding by the largest integer factor that keeps them at least ``h x w`` (Pillow's ``reduce``, a box
filter; images with transparency are reduced premultiplied, so the composite is unchanged). High bit
depth images are not reduced. ``reserve(nbytes)``, a context manager, is entered around the decoding
with an estimate of the bytes it needs, so the engine can bound the memory of parallel decodes.

Which files are read
--------------------
The file's *content* decides its format, not its extension. Only these Pillow decoders are tried: PNG,
JPEG (including MPO, the multi-picture JPEG some cameras write), BMP/DIB, WebP, TIFF and GIF. Anything else
(PDF, EPS - which would start Ghostscript -, PSD, ...) is rejected as "not an image". The engine picks
files by :data:`IMAGE_EXTENSIONS`.

Conversions, in the order they are applied
------------------------------------------
0. **Large images** may be reduced (see above).
1. **Multi-frame files** (animated GIF/WebP/PNG, multi-page TIFF, MPO): only the first frame/page is
   decoded and used.
2. **Full decode**: the whole frame is decoded up front, so a truncated or corrupt file is rejected here
   rather than half-read (Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never switched on).
3. **EXIF orientation** is applied (``PIL.ImageOps.exif_transpose``): a photo taken with the camera on
   its side comes out upright, so an orientation-6 JPEG stored as W x H gives an ``(W, H, C)`` array.
   If the EXIF block itself cannot be parsed, the image is used as stored and a warning is issued.
4. **Bi-level** ('1'): black/white become 0.0/1.0.
5. **Palette** ('P', 'PA'): expanded to RGB through the palette (to RGBA when the file marks a palette
   entry, or gives palette alpha values, as transparent).
6. **Other colour spaces** (CMYK, YCbCr, LAB, HSV, RGBX): converted to RGB with Pillow's conversions.
7. **Transparency** (RGBA, LA, PA, premultiplied RGBa/La, palette with transparency, and grayscale/RGB
   PNGs with a ``tRNS`` transparent colour): composited over a solid background, ``alpha_background``
   "black" (0.0, default) or "white" (1.0), in floating point:
   ``out = colour/255 * a + background * (1 - a)`` with ``a = alpha/255``. The alpha channel is then
   dropped. (A fully transparent pixel becomes the background colour whatever colour it stored.)
8. **High bit depth grayscale** (kept at full precision, never squeezed through 8 bits):

   * 16-bit ('I;16', 'I;16B', 'I;16L', 'I;16N'): value / 65535, so 65535 -> 1.0 and 32768 -> ~0.5.
   * 32-bit integer ('I'): negative values are clipped to 0. If the largest value is <= 65535 the
     image is treated as 16-bit data (value / 65535), else it is scaled by 1 / (2**32 - 1). Pillow reads
     unsigned 32-bit TIFF samples into a signed mode, wrapping values >= 2**31 to negatives; those files
     (TIFF SampleFormat 1) are read back as unsigned first, so their full range maps onto [0, 1]. For
     genuinely signed data the brightest possible value is therefore about 0.5.
   * 32-bit float ('F'): if every finite value is already in [0, 1] the values are used as they are;
     otherwise they are min-max scaled, ``(v - min) / (max - min)``, min/max over the finite values (an
     image with a single value outside [0, 1] becomes all 0). NaN becomes 0, +inf 1 and -inf 0.
   * A 16/32-bit integer grayscale PNG/TIFF with a ``tRNS`` transparent value: that value is
     transparent (composited as in 7).

9. **Channels**: for ``mode="L"``, colour is reduced to luma with ITU-R 601-2,
   ``L = R * 299/1000 + G * 587/1000 + B * 114/1000``, exactly as Pillow's ``convert("L")`` does
   (rounded to 8 bits, before compositing, so an opaque RGBA image gives the same result as its RGB
   version). For ``mode="RGB"``, a grayscale source (8-bit or high bit depth) is replicated into the
   three channels.

Errors
------
:class:`~xaicli.errors.ImageDecodeError`, with messages such as "empty file (0 bytes)",
"not an image (cannot identify image file); readable formats: ...", "truncated or corrupt image data:
image file is truncated", "cannot open: Permission denied", "cannot open: No such file or directory",
"cannot open: is a directory", "image too large (decompression bomb limit): ..." or "unsupported image
mode 'X'". A wrong ``mode`` or ``alpha_background`` argument is a programming error and raises
:class:`ValueError` instead.
"""

from __future__ import annotations

import os
import stat
import struct
import warnings
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xaicli.engine import fast_decode
from xaicli.errors import ImageDecodeError

__all__ = ["IMAGE_EXTENSIONS", "decode_pixels", "load_image", "unit_float"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff",
                                              ".gif"})
"""File suffixes searched for in folders (any case); files given explicitly are read whatever their suffix."""

Reserve = Callable[[int], AbstractContextManager]

#: Pillow decoders tried, by content (see "Which files are read").
#: (MPO has no opener of its own: Pillow's JPEG opener returns MPO files; an unknown name is a KeyError.)
_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "DIB", "WEBP", "TIFF", "GIF")

_MODES = ("L", "RGB")
_UINT8_MAX = np.float32(255.0)
_BACKGROUNDS = {"black": 0.0, "white": 1.0}

#: What Pillow raises while decoding broken data (UnidentifiedImageError is an OSError, handled first).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, zlib.error)
#: What Pillow's EXIF/TIFF-tag parser raises on a malformed EXIF block.
_EXIF_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, struct.error)

_TIFF_BITS_PER_SAMPLE = 258
_TIFF_SAMPLE_FORMAT = 339


def load_image(path: str | os.PathLike, mode: str, alpha_background: str = "black",
               reduce_to: tuple[int, int] | None = None, reserve: Reserve | None = None, *,
               fast: bool | None = None) -> np.ndarray:
    """Decode one file into float32 (H, W, C) in [0, 1], C = 1 for mode "L", 3 for mode "RGB".

    See the module docstring for every conversion and for ``reduce_to`` / ``reserve``; ``fast`` for
    :func:`decode_pixels`. Raises :class:`ImageDecodeError` when the file cannot be read as an image,
    :class:`ValueError` for a bad ``mode`` or ``alpha_background``.
    """
    return np.ascontiguousarray(unit_float(decode_pixels(path, mode, alpha_background, reduce_to, reserve,
                                                         fast=fast)))


def unit_float(pixels: np.ndarray) -> np.ndarray:
    """What :func:`decode_pixels` returns, as float32 in [0, 1]: uint8 values become ``v / 255`` (float32
    division, so 255 is exactly 1.0) in the same memory layout; float32 arrays are returned as they are."""
    if pixels.dtype != np.uint8:
        return pixels
    out = np.empty_like(pixels, dtype=np.float32)  # same strides: (H, W, C) views of (C, H, W) data stay so
    return np.divide(pixels, _UINT8_MAX, out=out)


def decode_pixels(path: str | os.PathLike, mode: str, alpha_background: str = "black",
                  reduce_to: tuple[int, int] | None = None, reserve: Reserve | None = None, *,
                  fast: bool | None = None) -> np.ndarray:
    """:func:`load_image` without the last step: an opaque 8-bit image comes back as its uint8 (H, W, C)
    pixels (any memory layout), everything else as float32 (H, W, C) in [0, 1]; :func:`unit_float` turns
    either into what :func:`load_image` returns. Converting uint8 pixels where they are used saves a pass
    over a float image per decode.

    ``fast``: decode plain 8-bit JPEG/PNG files with torchvision's codec ops (:mod:`.fast_decode`; the
    same pixels); None (default) uses them when torchvision is already imported, True imports it, False
    always uses Pillow.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    if alpha_background not in _BACKGROUNDS:
        raise ValueError(f"alpha_background must be 'black' or 'white', got {alpha_background!r}")
    background = _BACKGROUNDS[alpha_background]

    path = os.fspath(path)
    _check_regular_file(path)
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise ImageDecodeError(f"cannot open: {e.strerror or e}") from e
    with fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise ImageDecodeError("empty file (0 bytes)")
        if fast is not False and fast_decode.available(load=bool(fast)):
            pixels = _fast(fh, mode, reduce_to, reserve)
            if pixels is not None:
                return pixels
            fh.seek(0)
        try:
            with Image.open(fh, formats=_FORMATS) as img:
                # Image.open leaves a multi-frame file on its first frame; load() decodes only that frame.
                unsigned32 = _is_unsigned_32bit_tiff(img)
                if reduce_to is not None and img.format in ("JPEG", "MPO"):
                    img.draft(None, (max(reduce_to), max(reduce_to)))  # either orientation fits
                with (reserve or _no_reservation)(decode_bytes(img)):
                    img.load()
                    _apply_exif_orientation(img)
                    out = _to_array(img, mode, background, unsigned32, reduce_to)
        except Image.DecompressionBombError as e:
            raise ImageDecodeError(f"image too large (decompression bomb limit): {e}") from e
        except UnidentifiedImageError as e:
            raise ImageDecodeError(
                "not an image (cannot identify image file); readable formats: PNG, JPEG, BMP, WebP, TIFF, GIF"
            ) from e
        except MemoryError as e:
            raise ImageDecodeError("image too large to decode (out of memory)") from e
        except _DECODE_ERRORS as e:
            raise ImageDecodeError(f"truncated or corrupt image data: {e}") from e
    return out


def _fast(fh, mode: str, reduce_to: tuple[int, int] | None, reserve: Reserve | None) -> np.ndarray | None:
    """uint8 (H, W, C) of a plain JPEG/PNG by the fast decoder (:mod:`.fast_decode`), None when the file is
    not plain (header, size) or the fast decoder fails: the caller then decodes it with Pillow."""
    head = fh.read(fast_decode.HEAD_BYTES)
    if head.startswith(b"\xff\xd8"):
        kind, data = "JPEG", None
        size = fast_decode.jpeg_size(head, mode)
    elif head.startswith(b"\x89PNG"):
        kind, data = "PNG", head + fh.read()
        size = fast_decode.png_size(data, mode)
    else:
        return None
    if size is None:
        return None
    w, h = size
    if w * h > (Image.MAX_IMAGE_PIXELS or w * h):  # Pillow warns or refuses: keep its behaviour
        return None
    if reduce_to is not None and min(w, h) // max(reduce_to) >= 2:  # Pillow's path decodes it reduced
        return None
    if data is None:
        data = head + fh.read()
        if not data.endswith(b"\xff\xd9"):  # no end marker: Pillow says whether it is truncated
            return None
    channels = 1 if mode == "L" else 3
    with (reserve or _no_reservation)(w * h * (2 * channels + 3 * 4)):
        pixels = fast_decode.decode_plain(data, kind, channels)
    if pixels is None or pixels.shape[:2] != (h, w):
        return None
    return pixels


def _no_reservation(_nbytes: int) -> AbstractContextManager:
    return nullcontext()


def decode_bytes(img: Image.Image) -> int:
    """About how many bytes decoding ``img`` (header read, not decoded) takes at its peak: the decoded
    pixels twice (the decoder's image and one conversion) plus the float32 result."""
    w, h = img.size
    bands = len(img.getbands())
    depth = 2 if img.mode.startswith("I;16") else 4 if img.mode in ("I", "F") else 1
    return w * h * (2 * bands * depth + 3 * 4)


def _check_regular_file(path: str) -> None:
    """Refuse missing paths, directories and special files (a FIFO would block ``open`` forever)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ImageDecodeError(f"cannot open: {e.strerror or e}") from e
    if stat.S_ISDIR(st.st_mode):
        raise ImageDecodeError("cannot open: is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise ImageDecodeError("cannot open: not a regular file")


def _tag_first(tags, tag: int, default: int) -> int:
    value = tags.get(tag, default)
    if isinstance(value, tuple):
        value = value[0] if value else default
    return value


def _is_unsigned_32bit_tiff(img: Image.Image) -> bool:
    """True for a TIFF with unsigned 32-bit samples, which Pillow stores (wrapped) in signed mode 'I'."""
    tags = getattr(img, "tag_v2", None)
    if img.mode != "I" or tags is None:
        return False
    return _tag_first(tags, _TIFF_BITS_PER_SAMPLE, 1) == 32 and _tag_first(tags, _TIFF_SAMPLE_FORMAT, 1) == 1


def _apply_exif_orientation(img: Image.Image) -> None:
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except _EXIF_ERRORS as e:
        warnings.warn(f"unreadable EXIF orientation ignored: {e}", UserWarning, stacklevel=3)


def _to_array(img: Image.Image, mode: str, background: float, unsigned32: bool,
              reduce_to: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 (H, W, C) for opaque 8-bit images (L or RGB after normalising), else float32 in [0, 1]."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        arr = _high_depth(img, background, unsigned32)
    else:
        img = _reduce(_normalize_8bit(img, mode), reduce_to)
        if img.mode in ("L", "RGB"):  # opaque: the pixels as they are, converted where they are used
            arr = np.asarray(img)
            arr = arr[:, :, None] if arr.ndim == 2 else arr
            return np.repeat(arr, 3, axis=2) if mode == "RGB" and arr.shape[2] == 1 else arr
        arr = _eight_bit(img, background)
    if mode == "RGB" and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    np.clip(arr, 0.0, 1.0, out=arr)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _normalize_8bit(img: Image.Image, mode: str) -> Image.Image:
    """Bring any 8-bit mode to L, LA, RGB or RGBA (gray only when the target mode is L or the source gray)."""
    m = img.mode
    if m == "1":
        img = img.convert("L")
    elif m in ("L", "RGB"):
        if "transparency" in img.info:  # tRNS transparent colour
            img = img.convert(m + "A")
    elif m == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif m in ("PA", "RGBa"):
        img = img.convert("RGBA")
    elif m == "La":
        img = img.convert("LA")
    elif m not in ("LA", "RGBA"):  # CMYK, YCbCr, LAB, HSV, RGBX, ...
        try:
            img = img.convert("RGB")
        except ValueError as e:
            raise ImageDecodeError(f"unsupported image mode {m!r}") from e
    if mode == "L" and img.mode in ("RGB", "RGBA"):
        img = img.convert("L" if img.mode == "RGB" else "LA")  # ITU-R 601-2 luma, as Pillow rounds it
    return img


def _reduce(img: Image.Image, reduce_to: tuple[int, int] | None) -> Image.Image:
    """Shrink an L/LA/RGB/RGBA image by the largest integer factor that keeps it at least ``reduce_to``
    (either orientation); with alpha, premultiplied (mode La/RGBa), as compositing needs it."""
    if reduce_to is None:
        return img
    side = max(reduce_to)
    factor = min(img.size) // side
    if factor < 2:
        return img
    if img.mode in ("LA", "RGBA"):
        return img.convert(img.mode[:-1] + "a").reduce(factor)
    return img.reduce(factor)


def _eight_bit(img: Image.Image, background: float) -> np.ndarray:
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = arr / np.float32(255.0)
    if img.mode in ("LA", "RGBA"):
        return _composite(arr[:, :, :-1], arr[:, :, -1:], background)
    if img.mode in ("La", "RGBa"):  # premultiplied (a reduced image): colour * alpha is already there
        alpha = arr[:, :, -1:]
        out = arr[:, :, :-1]
        if background:
            out = out + np.float32(background) * (np.float32(1.0) - alpha)
        return out
    return arr


def _composite(colour: np.ndarray, alpha: np.ndarray, background: float) -> np.ndarray:
    out = colour * alpha
    if background:
        out += np.float32(background) * (np.float32(1.0) - alpha)
    return out


def _high_depth(img: Image.Image, background: float, unsigned32: bool) -> np.ndarray:
    raw = np.asarray(img)
    if img.mode == "F":
        gray = _scale_float(raw)
    elif img.mode == "I":
        values = raw.view(np.uint32) if unsigned32 else raw
        values = np.maximum(values.astype(np.float64), 0.0)
        peak = float(values.max()) if values.size else 0.0
        gray = (values / (65535.0 if peak <= 65535.0 else 4294967295.0)).astype(np.float32)
    else:  # 'I;16*': uint16 in whichever byte order
        gray = raw.astype(np.float32) / np.float32(65535.0)
    gray = gray[:, :, None]
    transparent = img.info.get("transparency")
    if img.mode != "F" and isinstance(transparent, int) and not isinstance(transparent, bool):
        stored = raw.view(np.uint32) if unsigned32 else raw
        alpha = (stored != transparent).astype(np.float32)[:, :, None]
        gray = _composite(gray, alpha, background)
    return gray


def _scale_float(raw: np.ndarray) -> np.ndarray:
    values = raw.astype(np.float64)
    finite = np.isfinite(values)
    has_finite = bool(finite.any())
    lo = float(values[finite].min()) if has_finite else 0.0
    hi = float(values[finite].max()) if has_finite else 0.0
    if not (0.0 <= lo and hi <= 1.0):
        values = (values - lo) / (hi - lo) if hi > lo else np.where(finite, 0.0, values)
    # NaN -> 0, +inf -> 1, -inf -> 0 (after min-max, +-inf stay +-inf).
    values = np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0)
    return values.astype(np.float32)
