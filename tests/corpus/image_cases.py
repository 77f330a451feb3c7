"""Bad (and surprising but fine) digit images for `mnist-study predict RUN IMAGE`.

The fine ones are the same drawn digit, a 7, stored in awkward ways (16-bit, CMYK, a palette, an
animation, EXIF rotation); `digit()` is the plain 8-bit version the others must agree with.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from corpus.cases import Case

SIDE = 50_000  # what the header-only images declare: 2.5 gigapixels


def digit(size: tuple[int, int] = (120, 160)) -> Image.Image:
    """A dark 7 on white paper (mode L), off-centre so that cropping and centring matter."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    draw.line([(25, 30), (95, 30), (55, 140)], fill=0, width=12)
    return image


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height greyscale whose pixel data is one empty deflate stream."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b""))
            + _png_chunk(b"IEND", b""))


def bmp_header_only(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + info


def gif_header_only(width: int, height: int) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x08\x00"  # no pixel data follows
    return b"GIF89a" + screen + frame + b";"


def tiff_header_only(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (262, 3, 1, 1), (273, 4, 1, 8),
               (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, width * height)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def big_blank_png(side: int) -> bytes:
    """A real side x side white PNG (over the pixel limit), small on disk."""
    return encoded(Image.new("1", (side, side), 1), "PNG")


def exif_rotated_jpeg() -> bytes:
    """The digit stored turned a quarter, with EXIF orientation 6 saying how to turn it back."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return encoded(digit().transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())


def bad_exif_orientation_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 9  # not one of the 8 orientations: ignored
    return encoded(digit(), "JPEG", quality=95, exif=exif.tobytes())


def animated_gif() -> bytes:
    frames = [digit().convert("P"), Image.new("P", (120, 160), 255)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def sixteen_bit_png() -> bytes:
    wide = (np.asarray(digit(), dtype=np.uint16) * 257).astype(np.uint16)
    return encoded(Image.fromarray(wide), "PNG")  # uint16: mode I;16


def transparent_palette_png() -> bytes:
    """The digit as a palette image whose paper (white, index 255) is transparent."""
    return encoded(digit().convert("P"), "PNG", transparency=255)


def float_tiff(value: float) -> bytes:
    return encoded(Image.fromarray(np.full((40, 40), value, dtype=np.float32), mode="F"), "TIFF")


def broken_idat_png() -> bytes:
    data = bytearray(encoded(digit(), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 10: start + 30] = bytes(20)  # the chunk's CRC no longer matches
    return bytes(data)


def truncated(fmt: str) -> Callable[[], bytes]:
    return lambda: encoded(digit(), fmt)[: len(encoded(digit(), fmt)) // 2]


def _case(name: str, suffix: str, payload: Callable[[], bytes], expect: str | None) -> Case:
    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}{suffix}"
        path.write_bytes(payload())
        return path

    return Case(f"image-{name}", "image", make, expect)


def _missing(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "no-such-digit.png"


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"><text x="8" y="22">7</text></svg>'

IMAGE_CASES: list[Case] = [
    # not images, or damaged ones
    _case("svg", ".svg", lambda: SVG, "not an image"),
    _case("svg-named-png", ".png", lambda: SVG, "not an image"),
    _case("empty", ".png", lambda: b"", "not an image"),
    _case("text", ".jpg", lambda: b"a seven, drawn in words\n", "not an image"),
    _case("html", ".png", lambda: b"<!doctype html><html><body>404 Not Found</body></html>", "not an image"),
    _case("random-bytes", ".webp", lambda: np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
          "not an image"),
    _case("truncated-png", ".png", truncated("PNG"), "cannot be read"),
    _case("truncated-jpeg", ".jpg", truncated("JPEG"), "cannot be read"),
    _case("truncated-webp", ".webp", truncated("WEBP"), "cannot be read"),
    _case("truncated-tiff", ".tif", truncated("TIFF"), "cannot be read"),
    _case("png-signature-only", ".png", lambda: b"\x89PNG\r\n\x1a\n", "not an image"),
    _case("png-no-pixel-data", ".png", lambda: png_header_only(120, 160), "cannot be read"),
    _case("png-zero-width", ".png", lambda: png_header_only(0, 160), "not an image"),
    _case("png-broken-idat", ".png", broken_idat_png, "cannot be read"),
    # sizes declared in a header that no pixel data backs (decompression bombs)
    _case("png-50000x50000-declared", ".png", lambda: png_header_only(SIDE, SIDE), "refused"),
    _case("bmp-50000x50000-declared", ".bmp", lambda: bmp_header_only(SIDE, SIDE), "refused"),
    _case("gif-50000x50000-declared", ".gif", lambda: gif_header_only(SIDE, SIDE), "refused"),
    _case("tiff-50000x50000-declared", ".tif", lambda: tiff_header_only(SIDE, SIDE), "refused"),
    _case("png-1x2500000000-declared", ".png", lambda: png_header_only(1, 2_500_000_000), "refused"),
    _case("png-6000x6000-real", ".png", lambda: big_blank_png(6000), "refused, 6000x6000 pixels"),
    # images with no digit in them
    _case("one-pixel-white", ".png", lambda: encoded(Image.new("L", (1, 1), 255), "PNG"), "no digit found"),
    _case("one-pixel-black", ".png", lambda: encoded(Image.new("L", (1, 1), 0), "PNG"), "no digit found"),
    _case("one-pixel-rgba", ".png", lambda: encoded(Image.new("RGBA", (1, 1), (9, 9, 9, 9)), "PNG"), "no digit found"),
    _case("blank-white", ".png", lambda: encoded(Image.new("L", (64, 64), 255), "PNG"), "no digit found"),
    _case("blank-grey-jpeg", ".jpg", lambda: encoded(Image.new("RGB", (64, 64), (128, 128, 128)), "JPEG"),
          "no digit found"),
    _case("fully-transparent", ".png", lambda: encoded(Image.new("RGBA", (64, 64), (0, 0, 0, 0)), "PNG"),
          "no digit found"),
    _case("float-tiff-nan", ".tif", lambda: float_tiff(math.nan), "NaN or infinite"),
    _case("float-tiff-inf", ".tif", lambda: float_tiff(math.inf), "NaN or infinite"),
    Case("image-missing-file", "image", _missing, "no such file"),
    # surprising but fine: the digit, stored in awkward ways
    _case("sixteen-bit-png", ".png", sixteen_bit_png, None),
    _case("cmyk-jpeg", ".jpg", lambda: encoded(digit().convert("CMYK"), "JPEG", quality=95), None),
    _case("palette-png", ".png", lambda: encoded(digit().convert("P"), "PNG"), None),
    _case("palette-transparent-png", ".png", transparent_palette_png, None),
    _case("animated-gif", ".gif", animated_gif, None),
    _case("exif-rotated-jpeg", ".jpg", exif_rotated_jpeg, None),
    _case("bad-exif-orientation", ".jpg", bad_exif_orientation_jpeg, None),
    _case("one-bit-png", ".png", lambda: encoded(digit().convert("1"), "PNG"), None),
    _case("grey-alpha-png", ".png", lambda: encoded(digit().convert("LA"), "PNG"), None),
]
